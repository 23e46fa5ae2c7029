-- Version 8: economy batches. A batch's speed ('now', or 'economy': OpenAI's Batch API at half
-- the price, within 24 hours), whether its owner wants an email when it is ready (and when it
-- was sent), each item's upstream job, and the upstream jobs themselves.

ALTER TABLE batches ADD COLUMN speed VARCHAR(8) NOT NULL DEFAULT 'now', ADD COLUMN notify_email SMALLINT NOT NULL DEFAULT 0,
  ADD COLUMN notified_at BIGINT NULL;

ALTER TABLE batch_items ADD COLUMN upstream_id BIGINT NULL;

CREATE TABLE IF NOT EXISTS upstream_batches (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  model VARCHAR(64) NOT NULL,
  status VARCHAR(16) NOT NULL,
  openai_batch_id VARCHAR(100) NULL,
  input_file_id VARCHAR(100) NULL,
  output_file_id VARCHAR(100) NULL,
  error_file_id VARCHAR(100) NULL,
  total INT NOT NULL DEFAULT 0,
  completed INT NOT NULL DEFAULT 0,
  failed INT NOT NULL DEFAULT 0,
  error_message VARCHAR(500) NULL,
  polled_at BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  KEY ix_upstream_batches_status (status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

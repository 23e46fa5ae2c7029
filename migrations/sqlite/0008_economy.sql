-- Version 8: economy batches (see migrations/mysql/0008_economy.sql).

ALTER TABLE batches ADD COLUMN speed TEXT NOT NULL DEFAULT 'now';

ALTER TABLE batches ADD COLUMN notify_email INTEGER NOT NULL DEFAULT 0;

ALTER TABLE batches ADD COLUMN notified_at INTEGER NULL;

ALTER TABLE batch_items ADD COLUMN upstream_id INTEGER NULL;

CREATE TABLE IF NOT EXISTS upstream_batches (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  model TEXT NOT NULL,
  status TEXT NOT NULL,
  openai_batch_id TEXT NULL,
  input_file_id TEXT NULL,
  output_file_id TEXT NULL,
  error_file_id TEXT NULL,
  total INTEGER NOT NULL DEFAULT 0,
  completed INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0,
  error_message TEXT NULL,
  polled_at INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_upstream_batches_status ON upstream_batches (status);

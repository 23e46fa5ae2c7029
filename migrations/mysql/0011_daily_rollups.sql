-- Version 11: the owner's console reads closed days from daily rollups (images by model, speed and
-- outcome; the ledger by reason and sign), so its figures stay fast with millions of items and
-- survive the purge of old batches; today is read live. The ledger gets an index on its time.

CREATE TABLE IF NOT EXISTS daily_images (
  day BIGINT NOT NULL,
  model VARCHAR(64) NOT NULL,
  speed VARCHAR(8) NOT NULL,
  outcome VARCHAR(32) NOT NULL,
  images INT NOT NULL,
  credits BIGINT NOT NULL,
  input_tokens BIGINT NOT NULL,
  output_tokens BIGINT NOT NULL,
  estimated_credits BIGINT NOT NULL,
  PRIMARY KEY (day, model, speed, outcome)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS daily_credits (
  day BIGINT NOT NULL,
  reason VARCHAR(32) NOT NULL,
  positive SMALLINT NOT NULL,
  delta BIGINT NOT NULL,
  PRIMARY KEY (day, reason, positive)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE INDEX ix_credit_ledger_created ON credit_ledger (created_at);

-- Version 11: daily rollups for the owner's console (see migrations/mysql/0011_daily_rollups.sql).

CREATE TABLE IF NOT EXISTS daily_images (
  day INTEGER NOT NULL,
  model TEXT NOT NULL,
  speed TEXT NOT NULL,
  outcome TEXT NOT NULL,
  images INTEGER NOT NULL,
  credits INTEGER NOT NULL,
  input_tokens INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  estimated_credits INTEGER NOT NULL,
  PRIMARY KEY (day, model, speed, outcome)
);

CREATE TABLE IF NOT EXISTS daily_credits (
  day INTEGER NOT NULL,
  reason TEXT NOT NULL,
  positive INTEGER NOT NULL,
  delta INTEGER NOT NULL,
  PRIMARY KEY (day, reason, positive)
);

CREATE INDEX IF NOT EXISTS ix_credit_ledger_created ON credit_ledger (created_at);

-- Version 3: billing and credits (see migrations/mysql/0003).

ALTER TABLE users ADD COLUMN stripe_customer_id TEXT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS uq_users_stripe_customer ON users (stripe_customer_id);

CREATE TABLE IF NOT EXISTS subscriptions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  stripe_subscription_id TEXT NOT NULL UNIQUE,
  stripe_customer_id TEXT NOT NULL,
  status TEXT NOT NULL,
  price_id TEXT NOT NULL DEFAULT '',
  current_period_start INTEGER NOT NULL DEFAULT 0,
  current_period_end INTEGER NOT NULL DEFAULT 0,
  cancel_at_period_end INTEGER NOT NULL DEFAULT 0,
  cancel_at INTEGER NULL,
  ended_at INTEGER NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_subscriptions_user ON subscriptions (user_id);

CREATE TABLE IF NOT EXISTS credit_balances (
  user_id INTEGER NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
  updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS credit_ledger (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  delta INTEGER NOT NULL,
  reason TEXT NOT NULL,
  reference TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (reason, reference)
);
CREATE INDEX IF NOT EXISTS ix_credit_ledger_user ON credit_ledger (user_id, id);

CREATE TABLE IF NOT EXISTS stripe_events (
  id TEXT NOT NULL PRIMARY KEY,
  type TEXT NOT NULL,
  received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_stripe_events_received ON stripe_events (received_at);

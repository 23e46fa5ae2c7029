-- Version 5: refunds and disputes. A user's billing hold (set while a payment of theirs is
-- disputed, or after a dispute was lost: no new batches) and the disputes Stripe told us about.

ALTER TABLE users ADD COLUMN billing_hold TEXT NULL;

CREATE TABLE IF NOT EXISTS stripe_disputes (
  id TEXT NOT NULL PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  charge_id TEXT NOT NULL,
  invoice_id TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_stripe_disputes_user ON stripe_disputes (user_id);

-- Version 5: refunds and disputes. A user's billing hold (set while a payment of theirs is
-- disputed, or after a dispute was lost: no new batches) and the disputes Stripe told us about.

ALTER TABLE users ADD COLUMN billing_hold VARCHAR(32) NULL;

CREATE TABLE IF NOT EXISTS stripe_disputes (
  id VARCHAR(255) NOT NULL PRIMARY KEY,
  user_id BIGINT NOT NULL,
  charge_id VARCHAR(255) NOT NULL,
  invoice_id VARCHAR(255) NOT NULL DEFAULT '',
  status VARCHAR(32) NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  KEY ix_stripe_disputes_user (user_id),
  CONSTRAINT fk_stripe_disputes_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

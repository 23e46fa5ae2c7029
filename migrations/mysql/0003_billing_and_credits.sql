-- Version 3: the Stripe customer of each user, their subscriptions, the credits ledger and
-- the webhook events already applied (their ids make a replay change nothing).

ALTER TABLE users ADD COLUMN stripe_customer_id VARCHAR(255) NULL;
CREATE UNIQUE INDEX uq_users_stripe_customer ON users (stripe_customer_id);

CREATE TABLE IF NOT EXISTS subscriptions (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT NOT NULL,
  stripe_subscription_id VARCHAR(255) NOT NULL,
  stripe_customer_id VARCHAR(255) NOT NULL,
  status VARCHAR(32) NOT NULL,
  price_id VARCHAR(255) NOT NULL DEFAULT '',
  current_period_start BIGINT NOT NULL DEFAULT 0,
  current_period_end BIGINT NOT NULL DEFAULT 0,
  cancel_at_period_end INT NOT NULL DEFAULT 0,
  cancel_at BIGINT NULL,
  ended_at BIGINT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY uq_subscriptions_stripe (stripe_subscription_id),
  KEY ix_subscriptions_user (user_id),
  CONSTRAINT fk_subscriptions_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS credit_balances (
  user_id BIGINT NOT NULL PRIMARY KEY,
  balance INT NOT NULL DEFAULT 0,
  updated_at BIGINT NOT NULL,
  CONSTRAINT ck_credit_balances_positive CHECK (balance >= 0),
  CONSTRAINT fk_credit_balances_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS credit_ledger (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT NOT NULL,
  delta INT NOT NULL,
  reason VARCHAR(32) NOT NULL,
  reference VARCHAR(191) NOT NULL,
  created_at BIGINT NOT NULL,
  UNIQUE KEY uq_credit_ledger_reference (reason, reference),
  KEY ix_credit_ledger_user (user_id, id),
  CONSTRAINT fk_credit_ledger_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS stripe_events (
  id VARCHAR(255) NOT NULL PRIMARY KEY,
  type VARCHAR(100) NOT NULL,
  received_at BIGINT NOT NULL,
  KEY ix_stripe_events_received (received_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

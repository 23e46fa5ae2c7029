-- Version 10: the owner's console. Whether the provider vouched for a sign-in's email (only a
-- verified email may name an owner in ADMIN_EMAILS), blocked subscribers, the invoices Stripe
-- reported paid (amount, currency, refunds: the console's revenue), and the owner's actions
-- (who, what, to whom, why).

ALTER TABLE identities ADD COLUMN email_verified SMALLINT NOT NULL DEFAULT 0;

ALTER TABLE users ADD COLUMN blocked_at BIGINT NULL, ADD COLUMN blocked_reason VARCHAR(500) NULL;

CREATE TABLE IF NOT EXISTS invoices (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  stripe_invoice_id VARCHAR(100) NOT NULL,
  user_id BIGINT NOT NULL,
  amount_paid BIGINT NOT NULL DEFAULT 0,
  amount_refunded BIGINT NOT NULL DEFAULT 0,
  currency VARCHAR(3) NOT NULL,
  paid_at BIGINT NOT NULL,
  refunded_at BIGINT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY uq_invoices_stripe (stripe_invoice_id),
  KEY ix_invoices_paid (paid_at),
  KEY ix_invoices_user (user_id),
  CONSTRAINT fk_invoices_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS admin_audit (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  admin_user_id BIGINT NOT NULL,
  action VARCHAR(32) NOT NULL,
  target_user_id BIGINT NULL,
  reason VARCHAR(500) NOT NULL,
  detail VARCHAR(1000) NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  KEY ix_admin_audit_target (target_user_id, id),
  KEY ix_admin_audit_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE INDEX ix_batch_items_finished ON batch_items (finished_at);

-- images-in-bulk: the MariaDB schema (the production truth). Run it with `python cli.py initdb`.
-- schema-version: 12
--
-- Its SQLite twin is schema.sqlite.sql; tests/test_schema.py keeps the two in step.
-- Times are Unix seconds. Changes after version 1 come as numbered files in migrations/.

CREATE TABLE IF NOT EXISTS schema_migrations (
  version INT NOT NULL PRIMARY KEY,
  applied_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- A person who signs in; one user may have several identities (Google, Microsoft).
CREATE TABLE IF NOT EXISTS users (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  display_name VARCHAR(200) NOT NULL DEFAULT '',
  email VARCHAR(320) NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  last_login_at BIGINT NOT NULL,
  stripe_customer_id VARCHAR(255) NULL,
  billing_hold VARCHAR(32) NULL,
  library_key VARCHAR(43) NULL,
  blocked_at BIGINT NULL,
  blocked_reason VARCHAR(500) NULL,
  UNIQUE KEY uq_users_stripe_customer (stripe_customer_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- An account at an identity provider, keyed by (provider, issuer, subject): never by email.
CREATE TABLE IF NOT EXISTS identities (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT NOT NULL,
  provider VARCHAR(32) NOT NULL,
  issuer VARCHAR(255) NOT NULL,
  subject VARCHAR(255) NOT NULL,
  email VARCHAR(320) NOT NULL DEFAULT '',
  display_name VARCHAR(200) NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  last_login_at BIGINT NOT NULL,
  email_verified SMALLINT NOT NULL DEFAULT 0,
  UNIQUE KEY uq_identities_subject (provider, issuer, subject),
  KEY ix_identities_user (user_id),
  CONSTRAINT fk_identities_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Server-side sessions. id is an HMAC-SHA256 of the cookie's random token, so a copy of
-- this table does not let anyone act as a visitor. user_id is NULL before sign-in.
CREATE TABLE IF NOT EXISTS sessions (
  id CHAR(64) NOT NULL PRIMARY KEY,
  user_id BIGINT NULL,
  csrf_token VARCHAR(64) NOT NULL,
  data TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  last_seen_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  KEY ix_sessions_user (user_id),
  KEY ix_sessions_expires (expires_at),
  CONSTRAINT fk_sessions_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Sign-in flows: state, nonce and PKCE verifier, bound to the pre-login session, 10 minutes.
CREATE TABLE IF NOT EXISTS auth_flows (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  session_id CHAR(64) NOT NULL,
  provider VARCHAR(32) NOT NULL,
  state VARCHAR(64) NOT NULL,
  nonce VARCHAR(64) NOT NULL,
  code_verifier VARCHAR(128) NOT NULL,
  next_path VARCHAR(500) NOT NULL DEFAULT '/account',
  link_user_id BIGINT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  KEY ix_auth_flows_session (session_id),
  KEY ix_auth_flows_expires (expires_at),
  CONSTRAINT fk_auth_flows_session FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS rate_limits (
  bucket VARCHAR(191) NOT NULL,
  window_start BIGINT NOT NULL,
  hits INT NOT NULL,
  PRIMARY KEY (bucket, window_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Billing: subscriptions as Stripe reports them, the credits ledger and its balance, applied webhook events.
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
  KEY ix_credit_ledger_created (created_at),
  CONSTRAINT fk_credit_ledger_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS stripe_events (
  id VARCHAR(255) NOT NULL PRIMARY KEY,
  type VARCHAR(100) NOT NULL,
  received_at BIGINT NOT NULL,
  KEY ix_stripe_events_received (received_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Disputes (chargebacks) of a subscriber's payments: while one is open, or after one was lost,
-- users.billing_hold stops new batches.
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

-- The queue: batches and their items, and the worker's shared state (scheduler lock, pace, pauses).
CREATE TABLE IF NOT EXISTS batches (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT NOT NULL,
  request_token VARCHAR(64) NOT NULL,
  status VARCHAR(16) NOT NULL,
  pause_reason VARCHAR(32) NULL,
  model VARCHAR(64) NOT NULL,
  ratio VARCHAR(8) NOT NULL,
  quality VARCHAR(16) NOT NULL,
  image_format VARCHAR(8) NOT NULL,
  resolution VARCHAR(8) NOT NULL DEFAULT '1K',
  complexity VARCHAR(16) NULL,
  speed VARCHAR(8) NOT NULL DEFAULT 'now',
  notify_email SMALLINT NOT NULL DEFAULT 0,
  notified_at BIGINT NULL,
  lang VARCHAR(8) NOT NULL DEFAULT 'en',
  width INT NOT NULL,
  height INT NOT NULL,
  style MEDIUMTEXT NOT NULL,
  prompt_separator VARCHAR(32) NOT NULL DEFAULT ', ',
  item_count INT NOT NULL,
  credits_per_item INT NOT NULL,
  last_started_ms BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  change_seq BIGINT NOT NULL DEFAULT 1,
  UNIQUE KEY uq_batches_request (user_id, request_token),
  KEY ix_batches_status (status),
  CONSTRAINT fk_batches_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS batch_items (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  batch_id BIGINT NOT NULL,
  position INT NOT NULL,
  prompt MEDIUMTEXT NOT NULL,
  file_name VARCHAR(255) NOT NULL,
  status VARCHAR(16) NOT NULL,
  attempts INT NOT NULL DEFAULT 0,
  charge INT NOT NULL DEFAULT 1,
  charged INT NOT NULL DEFAULT 0,
  not_before_ms BIGINT NOT NULL DEFAULT 0,
  lease_until BIGINT NOT NULL DEFAULT 0,
  call_until BIGINT NOT NULL DEFAULT 0,
  worker VARCHAR(64) NULL,
  error_code VARCHAR(32) NULL,
  error_message VARCHAR(500) NULL,
  request_id VARCHAR(100) NULL,
  result_path VARCHAR(255) NULL,
  result_bytes INT NULL,
  result_width INT NULL,
  result_height INT NULL,
  input_tokens INT NULL,
  output_tokens INT NULL,
  upstream_id BIGINT NULL,
  created_at BIGINT NOT NULL,
  started_at BIGINT NULL,
  finished_at BIGINT NULL,
  changed_seq BIGINT NOT NULL DEFAULT 1,
  UNIQUE KEY uq_batch_items_position (batch_id, position),
  KEY ix_batch_items_status (status, lease_until),
  KEY ix_batch_items_finished (finished_at),
  KEY ix_batch_items_changed (batch_id, changed_seq),
  CONSTRAINT fk_batch_items_batch FOREIGN KEY (batch_id) REFERENCES batches (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Economy batches: the OpenAI Batch API jobs their items went to (one per model and submission).
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

CREATE TABLE IF NOT EXISTS worker_state (
  name VARCHAR(32) NOT NULL PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS upstream_calls (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  started_ms BIGINT NOT NULL,
  KEY ix_upstream_calls_started (started_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The owner's console: paid invoices (the revenue) and the owner's actions.
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

-- The owner's console: closed days rolled up (images, and the ledger), today read live.
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

-- images-in-bulk: the SQLite twin of schema.sql (the embedded default and the local demo).
-- schema-version: 12
--
-- Keep it in step with schema.sql: same tables, columns, nullability and unique keys
-- (tests/test_schema.py compares them). Times are Unix seconds.

CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER NOT NULL PRIMARY KEY,
  applied_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  display_name TEXT NOT NULL DEFAULT '',
  email TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  last_login_at INTEGER NOT NULL,
  stripe_customer_id TEXT NULL UNIQUE,
  billing_hold TEXT NULL,
  library_key TEXT NULL,
  blocked_at INTEGER NULL,
  blocked_reason TEXT NULL
);

CREATE TABLE IF NOT EXISTS identities (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  provider TEXT NOT NULL,
  issuer TEXT NOT NULL,
  subject TEXT NOT NULL,
  email TEXT NOT NULL DEFAULT '',
  display_name TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  last_login_at INTEGER NOT NULL,
  email_verified INTEGER NOT NULL DEFAULT 0,
  UNIQUE (provider, issuer, subject)
);
CREATE INDEX IF NOT EXISTS ix_identities_user ON identities (user_id);

CREATE TABLE IF NOT EXISTS sessions (
  id TEXT NOT NULL PRIMARY KEY,
  user_id INTEGER NULL REFERENCES users (id) ON DELETE CASCADE,
  csrf_token TEXT NOT NULL,
  data TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  last_seen_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_sessions_user ON sessions (user_id);
CREATE INDEX IF NOT EXISTS ix_sessions_expires ON sessions (expires_at);

-- Sign-in flows: state, nonce and PKCE verifier, bound to the pre-login session, 10 minutes.
CREATE TABLE IF NOT EXISTS auth_flows (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  provider TEXT NOT NULL,
  state TEXT NOT NULL,
  nonce TEXT NOT NULL,
  code_verifier TEXT NOT NULL,
  next_path TEXT NOT NULL DEFAULT '/account',
  link_user_id INTEGER NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_auth_flows_session ON auth_flows (session_id);
CREATE INDEX IF NOT EXISTS ix_auth_flows_expires ON auth_flows (expires_at);

CREATE TABLE IF NOT EXISTS rate_limits (
  bucket TEXT NOT NULL,
  window_start INTEGER NOT NULL,
  hits INTEGER NOT NULL,
  PRIMARY KEY (bucket, window_start)
);

-- Billing: subscriptions as Stripe reports them, the credits ledger and its balance, applied webhook events.
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
CREATE INDEX IF NOT EXISTS ix_credit_ledger_created ON credit_ledger (created_at);

CREATE TABLE IF NOT EXISTS stripe_events (
  id TEXT NOT NULL PRIMARY KEY,
  type TEXT NOT NULL,
  received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_stripe_events_received ON stripe_events (received_at);

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

-- The queue: batches and their items, and the worker's shared state (scheduler lock, pace, pauses).
CREATE TABLE IF NOT EXISTS batches (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  request_token TEXT NOT NULL,
  status TEXT NOT NULL,
  pause_reason TEXT NULL,
  model TEXT NOT NULL,
  ratio TEXT NOT NULL,
  quality TEXT NOT NULL,
  image_format TEXT NOT NULL,
  resolution TEXT NOT NULL DEFAULT '1K',
  complexity TEXT NULL,
  speed TEXT NOT NULL DEFAULT 'now',
  notify_email INTEGER NOT NULL DEFAULT 0,
  notified_at INTEGER NULL,
  lang TEXT NOT NULL DEFAULT 'en',
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  style TEXT NOT NULL,
  prompt_separator TEXT NOT NULL DEFAULT ', ',
  item_count INTEGER NOT NULL,
  credits_per_item INTEGER NOT NULL,
  last_started_ms INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  change_seq INTEGER NOT NULL DEFAULT 1,
  UNIQUE (user_id, request_token)
);
CREATE INDEX IF NOT EXISTS ix_batches_status ON batches (status);

CREATE TABLE IF NOT EXISTS batch_items (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  batch_id INTEGER NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  prompt TEXT NOT NULL,
  file_name TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  charge INTEGER NOT NULL DEFAULT 1,
  charged INTEGER NOT NULL DEFAULT 0,
  not_before_ms INTEGER NOT NULL DEFAULT 0,
  lease_until INTEGER NOT NULL DEFAULT 0,
  call_until INTEGER NOT NULL DEFAULT 0,
  worker TEXT NULL,
  error_code TEXT NULL,
  error_message TEXT NULL,
  request_id TEXT NULL,
  result_path TEXT NULL,
  result_bytes INTEGER NULL,
  result_width INTEGER NULL,
  result_height INTEGER NULL,
  input_tokens INTEGER NULL,
  output_tokens INTEGER NULL,
  upstream_id INTEGER NULL,
  created_at INTEGER NOT NULL,
  started_at INTEGER NULL,
  finished_at INTEGER NULL,
  changed_seq INTEGER NOT NULL DEFAULT 1,
  UNIQUE (batch_id, position)
);
CREATE INDEX IF NOT EXISTS ix_batch_items_status ON batch_items (status, lease_until);
CREATE INDEX IF NOT EXISTS ix_batch_items_finished ON batch_items (finished_at);
CREATE INDEX IF NOT EXISTS ix_batch_items_changed ON batch_items (batch_id, changed_seq);

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

CREATE TABLE IF NOT EXISTS worker_state (
  name TEXT NOT NULL PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS upstream_calls (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  started_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_upstream_calls_started ON upstream_calls (started_ms);

-- The owner's console: paid invoices (the revenue) and the owner's actions.
CREATE TABLE IF NOT EXISTS invoices (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  stripe_invoice_id TEXT NOT NULL UNIQUE,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  amount_paid INTEGER NOT NULL DEFAULT 0,
  amount_refunded INTEGER NOT NULL DEFAULT 0,
  currency TEXT NOT NULL,
  paid_at INTEGER NOT NULL,
  refunded_at INTEGER NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_invoices_paid ON invoices (paid_at);

CREATE INDEX IF NOT EXISTS ix_invoices_user ON invoices (user_id);

CREATE TABLE IF NOT EXISTS admin_audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  admin_user_id INTEGER NOT NULL,
  action TEXT NOT NULL,
  target_user_id INTEGER NULL,
  reason TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_admin_audit_target ON admin_audit (target_user_id, id);

CREATE INDEX IF NOT EXISTS ix_admin_audit_created ON admin_audit (created_at);

-- The owner's console: closed days rolled up (images, and the ledger), today read live.
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

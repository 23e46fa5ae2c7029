-- Version 10: the owner's console (see migrations/mysql/0010_owner_console.sql).

ALTER TABLE identities ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;

ALTER TABLE users ADD COLUMN blocked_at INTEGER NULL;

ALTER TABLE users ADD COLUMN blocked_reason TEXT NULL;

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

CREATE INDEX IF NOT EXISTS ix_batch_items_finished ON batch_items (finished_at);

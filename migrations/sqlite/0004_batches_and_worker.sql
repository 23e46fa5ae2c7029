-- Version 4: batches, items and the worker's shared state (see migrations/mysql/0004).

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
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  style TEXT NOT NULL,
  item_count INTEGER NOT NULL,
  credits_per_item INTEGER NOT NULL,
  last_started_ms INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (user_id, request_token)
);
CREATE INDEX IF NOT EXISTS ix_batches_status ON batches (status);

CREATE TABLE IF NOT EXISTS batch_items (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  batch_id INTEGER NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  prompt TEXT NOT NULL,
  final_prompt TEXT NOT NULL,
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
  created_at INTEGER NOT NULL,
  started_at INTEGER NULL,
  finished_at INTEGER NULL,
  UNIQUE (batch_id, position)
);
CREATE INDEX IF NOT EXISTS ix_batch_items_status ON batch_items (status, lease_until);

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

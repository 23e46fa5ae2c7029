-- Version 4: batches and their items (the queue), and the worker's shared state: the
-- scheduler's lock row, its pace and pauses, and the starts of recent upstream calls.

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
  width INT NOT NULL,
  height INT NOT NULL,
  style TEXT NOT NULL,
  item_count INT NOT NULL,
  credits_per_item INT NOT NULL,
  last_started_ms BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY uq_batches_request (user_id, request_token),
  KEY ix_batches_status (status),
  CONSTRAINT fk_batches_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS batch_items (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  batch_id BIGINT NOT NULL,
  position INT NOT NULL,
  prompt TEXT NOT NULL,
  final_prompt TEXT NOT NULL,
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
  created_at BIGINT NOT NULL,
  started_at BIGINT NULL,
  finished_at BIGINT NULL,
  UNIQUE KEY uq_batch_items_position (batch_id, position),
  KEY ix_batch_items_status (status, lease_until),
  CONSTRAINT fk_batch_items_batch FOREIGN KEY (batch_id) REFERENCES batches (id) ON DELETE CASCADE
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

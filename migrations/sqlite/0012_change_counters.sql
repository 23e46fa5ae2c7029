-- Version 12: delta polls (see migrations/mysql/0012_change_counters.sql).

ALTER TABLE batches ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 1;
ALTER TABLE batch_items ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 1;
CREATE INDEX IF NOT EXISTS ix_batch_items_changed ON batch_items (batch_id, changed_seq);

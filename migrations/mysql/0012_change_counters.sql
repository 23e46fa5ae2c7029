-- Version 12: delta polls. Each batch counts its changes (change_seq, raised in the same transaction
-- as every change of the batch or of one of its items, which also takes the batch's row first);
-- each item remembers the count of its last change (changed_seq). A page that saw count N asks
-- for the items with changed_seq > N. Rows made before this version start at 1.

ALTER TABLE batches ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 1;
ALTER TABLE batch_items ADD COLUMN changed_seq BIGINT NOT NULL DEFAULT 1;
CREATE INDEX ix_batch_items_changed ON batch_items (batch_id, changed_seq);

-- Version 7: each batch's resolution and complexity, each item's upstream usage
-- (see migrations/mysql/0007_resolutions_and_usage.sql).

ALTER TABLE batches ADD COLUMN resolution TEXT NOT NULL DEFAULT '1K';

ALTER TABLE batches ADD COLUMN complexity TEXT NULL;

ALTER TABLE batch_items ADD COLUMN input_tokens INTEGER NULL;

ALTER TABLE batch_items ADD COLUMN output_tokens INTEGER NULL;

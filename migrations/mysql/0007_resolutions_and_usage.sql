-- Version 7: each batch's resolution (1K, 2K, 4K; the batches before it were all 1K) and, for the
-- models that take it, its complexity; each item's upstream usage (input and output tokens), which
-- `cli.py prices` turns into upstream costs and credit prices.

ALTER TABLE batches ADD COLUMN resolution VARCHAR(8) NOT NULL DEFAULT '1K', ADD COLUMN complexity VARCHAR(16) NULL;

ALTER TABLE batch_items ADD COLUMN input_tokens INT NULL, ADD COLUMN output_tokens INT NULL;

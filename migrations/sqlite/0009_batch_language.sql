-- Version 9: the language a batch was made in (see migrations/mysql/0009_batch_language.sql).

ALTER TABLE batches ADD COLUMN lang TEXT NOT NULL DEFAULT 'en';

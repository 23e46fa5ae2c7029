-- Version 9: the language a batch was made in, so its "ready" email is written in its owner's
-- language (batches made before this version get English).

ALTER TABLE batches ADD COLUMN lang VARCHAR(8) NOT NULL DEFAULT 'en';

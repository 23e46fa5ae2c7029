-- Version 6: what one subscriber may store, sized for what the forms accept.
-- * users.library_key: an opaque per-user key the browser stamps on the images it keeps, so that
--   two people in one browser see only their own.
-- * The style is kept once per batch with the separator it was joined with, and joined to each
--   prompt when the image is generated: batch_items.final_prompt goes. The separator of an
--   existing batch is read back from its first item before the column is dropped.
-- * prompt and style become MEDIUMTEXT: a 32,000-character prompt of 4-byte characters is
--   128,000 bytes, past TEXT's 65,535.

ALTER TABLE users ADD COLUMN library_key VARCHAR(43) NULL;

ALTER TABLE batches MODIFY style MEDIUMTEXT NOT NULL,
  ADD COLUMN prompt_separator VARCHAR(32) NOT NULL DEFAULT ', ';

UPDATE batches SET prompt_separator = COALESCE((
    SELECT SUBSTRING(i.final_prompt, CHAR_LENGTH(i.prompt) + 1,
                     CHAR_LENGTH(i.final_prompt) - CHAR_LENGTH(i.prompt) - CHAR_LENGTH(batches.style))
    FROM batch_items i WHERE i.batch_id = batches.id ORDER BY i.position LIMIT 1), prompt_separator)
  WHERE style <> '';

ALTER TABLE batch_items MODIFY prompt MEDIUMTEXT NOT NULL, DROP COLUMN final_prompt;

-- Version 6: what one subscriber may store (see migrations/mysql/0006_bounded_storage.sql).
-- users.library_key: the opaque key the browser stamps on the images it keeps. The style is kept
-- once per batch with its separator (read back from the first item) and joined at call time, so
-- batch_items.final_prompt goes. SQLite's TEXT holds any length: no column grows here.

ALTER TABLE users ADD COLUMN library_key TEXT NULL;

ALTER TABLE batches ADD COLUMN prompt_separator TEXT NOT NULL DEFAULT ', ';

UPDATE batches SET prompt_separator = COALESCE((
    SELECT substr(i.final_prompt, length(i.prompt) + 1,
                  length(i.final_prompt) - length(i.prompt) - length(batches.style))
    FROM batch_items i WHERE i.batch_id = batches.id ORDER BY i.position LIMIT 1), prompt_separator)
  WHERE style <> '';

ALTER TABLE batch_items DROP COLUMN final_prompt;

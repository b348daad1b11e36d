-- The machine each release was made from, for `graven releases` and
-- `release show`. Releases made before have none (NULL), and their ids,
-- which hash their records, stay as they were.
ALTER TABLE releases ADD COLUMN host TEXT;

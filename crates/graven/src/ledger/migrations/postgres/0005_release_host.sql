-- The machine each release was made from; NULL for releases made before.
ALTER TABLE releases ADD COLUMN host TEXT;

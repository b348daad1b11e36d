-- Whether each build's command ran in the sandbox; builds recorded before
-- the sandbox existed ran without one.
ALTER TABLE builds ADD COLUMN sandboxed BOOLEAN NOT NULL DEFAULT false;

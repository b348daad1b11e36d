-- Whether each build's command ran in the sandbox. Builds recorded before
-- the sandbox existed ran without one: 0.
ALTER TABLE builds ADD COLUMN sandboxed INTEGER NOT NULL DEFAULT 0;

-- Builds: one row per build run. Append-only: the triggers below refuse
-- UPDATE and DELETE, so a row, once written, is what happened.
CREATE TABLE builds (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    app              TEXT    NOT NULL,
    artifact         TEXT    NOT NULL,
    commit_id        TEXT    NOT NULL,
    dirty            INTEGER NOT NULL CHECK (dirty IN (0, 1)),
    recipe           TEXT    NOT NULL,
    author           TEXT    NOT NULL,
    host             TEXT    NOT NULL,
    started_at       TEXT    NOT NULL,
    finished_at      TEXT    NOT NULL,
    files            INTEGER NOT NULL,
    bytes            INTEGER NOT NULL,
    new_bytes        INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    build_command_ms INTEGER NOT NULL,
    ingest_ms        INTEGER NOT NULL,
    log              TEXT    NOT NULL
);

CREATE INDEX builds_by_commit ON builds (app, commit_id, recipe);
CREATE INDEX builds_by_artifact ON builds (artifact);

CREATE TRIGGER builds_are_append_only_update BEFORE UPDATE ON builds
BEGIN
    SELECT RAISE(ABORT, 'builds are append-only: UPDATE is refused');
END;

CREATE TRIGGER builds_are_append_only_delete BEFORE DELETE ON builds
BEGIN
    SELECT RAISE(ABORT, 'builds are append-only: DELETE is refused');
END;

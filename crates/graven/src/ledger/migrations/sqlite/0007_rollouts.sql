-- The rollout each runner is in (JSON {number, stage, attempt}, or NULL),
-- reported with the rest of its state.
ALTER TABLE run_state ADD COLUMN rollout TEXT;

-- Restarts: `graven restart --env E` asks every runner of the environment
-- to roll its release out again, fresh processes and a new chance for a
-- release whose rollout failed. Each request is a row, never updated or
-- deleted; a runner acts on a request newer than the newest it knew of
-- when it started.
CREATE TABLE restarts (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    app        TEXT    NOT NULL,
    env        TEXT    NOT NULL,
    author     TEXT    NOT NULL,
    created_at TEXT    NOT NULL   -- RFC 3339 UTC
);

CREATE INDEX restarts_by_env ON restarts (app, env, seq);

CREATE TRIGGER restarts_are_append_only_update BEFORE UPDATE ON restarts
BEGIN
    SELECT RAISE(ABORT, 'restarts are append-only: UPDATE is refused');
END;

CREATE TRIGGER restarts_are_append_only_delete BEFORE DELETE ON restarts
BEGIN
    SELECT RAISE(ABORT, 'restarts are append-only: DELETE is refused');
END;

-- Formations: how many processes of each type an environment runs
-- (`graven scale web=2 worker=1 --env production`). Not part of a release:
-- scaling makes no release, and a rollback keeps the formation. Each change
-- is a row, never updated or deleted; the newest row of an environment is
-- its formation.
CREATE TABLE formations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    app        TEXT    NOT NULL,
    env        TEXT    NOT NULL,
    counts     TEXT    NOT NULL,  -- JSON object {process type: count}
    author     TEXT    NOT NULL,
    created_at TEXT    NOT NULL   -- RFC 3339 UTC
);

CREATE INDEX formations_by_env ON formations (app, env, seq);

CREATE TRIGGER formations_are_append_only_update BEFORE UPDATE ON formations
BEGIN
    SELECT RAISE(ABORT, 'formations are append-only: UPDATE is refused');
END;

CREATE TRIGGER formations_are_append_only_delete BEFORE DELETE ON formations
BEGIN
    SELECT RAISE(ABORT, 'formations are append-only: DELETE is refused');
END;

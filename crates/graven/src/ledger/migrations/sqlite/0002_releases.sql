-- Environments, config versions and releases. All three are append-only:
-- the triggers below refuse UPDATE and DELETE.

CREATE TABLE environments (
    app        TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app, name)
);

CREATE TABLE config_versions (
    id          TEXT    PRIMARY KEY,
    app         TEXT    NOT NULL,
    env         TEXT    NOT NULL,
    number      INTEGER NOT NULL CHECK (number >= 1),
    parent      TEXT,
    vars        TEXT    NOT NULL,  -- JSON object, keys sorted
    secret      TEXT    NOT NULL,  -- JSON array of keys, sorted
    author      TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    description TEXT    NOT NULL,
    UNIQUE (app, env, number),
    FOREIGN KEY (app, env) REFERENCES environments (app, name)
);

CREATE TABLE releases (
    id                   TEXT    PRIMARY KEY,
    app                  TEXT    NOT NULL,
    env                  TEXT    NOT NULL,
    number               INTEGER NOT NULL CHECK (number >= 1),
    kind                 TEXT    NOT NULL CHECK (kind IN ('deploy', 'config', 'rollback', 'promote')),
    artifact             TEXT    NOT NULL,
    config               TEXT    NOT NULL REFERENCES config_versions (id),
    parent               TEXT,
    commit_id            TEXT    NOT NULL,
    author               TEXT    NOT NULL,
    created_at           TEXT    NOT NULL,
    description          TEXT    NOT NULL,
    rollback_of          INTEGER,
    promoted_from_env    TEXT,
    promoted_from_number INTEGER,
    UNIQUE (app, env, number),
    FOREIGN KEY (app, env) REFERENCES environments (app, name)
);

CREATE INDEX releases_by_artifact ON releases (artifact);

CREATE TRIGGER environments_are_append_only_update BEFORE UPDATE ON environments
BEGIN
    SELECT RAISE(ABORT, 'environments are append-only: UPDATE is refused');
END;

CREATE TRIGGER environments_are_append_only_delete BEFORE DELETE ON environments
BEGIN
    SELECT RAISE(ABORT, 'environments are append-only: DELETE is refused');
END;

CREATE TRIGGER config_versions_are_append_only_update BEFORE UPDATE ON config_versions
BEGIN
    SELECT RAISE(ABORT, 'config versions are append-only: UPDATE is refused');
END;

CREATE TRIGGER config_versions_are_append_only_delete BEFORE DELETE ON config_versions
BEGIN
    SELECT RAISE(ABORT, 'config versions are append-only: DELETE is refused');
END;

CREATE TRIGGER releases_are_append_only_update BEFORE UPDATE ON releases
BEGIN
    SELECT RAISE(ABORT, 'releases are append-only: UPDATE is refused');
END;

CREATE TRIGGER releases_are_append_only_delete BEFORE DELETE ON releases
BEGIN
    SELECT RAISE(ABORT, 'releases are append-only: DELETE is refused');
END;

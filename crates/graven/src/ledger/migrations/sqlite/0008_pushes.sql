-- Pushes: `graven push` records the manifest digest a registry was given
-- for a build's image, so that a release's image can be named by digest.
-- Each push is a row, never updated or deleted.
CREATE TABLE pushes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    app        TEXT    NOT NULL,
    artifact   TEXT    NOT NULL,   -- sha256:<hex>
    commit_id  TEXT    NOT NULL,
    repository TEXT    NOT NULL,   -- REGISTRY/REPOSITORY
    tags       TEXT    NOT NULL,   -- JSON array
    digest     TEXT    NOT NULL,   -- the manifest's, sha256:<hex>
    author     TEXT    NOT NULL,
    created_at TEXT    NOT NULL    -- RFC 3339 UTC
);

CREATE INDEX pushes_by_artifact ON pushes (app, artifact, seq);

CREATE TRIGGER pushes_are_append_only_update BEFORE UPDATE ON pushes
BEGIN
    SELECT RAISE(ABORT, 'pushes are append-only: UPDATE is refused');
END;

CREATE TRIGGER pushes_are_append_only_delete BEFORE DELETE ON pushes
BEGIN
    SELECT RAISE(ABORT, 'pushes are append-only: DELETE is refused');
END;

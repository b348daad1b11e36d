-- Pushes (see the SQLite migration of the same name).
CREATE TABLE pushes (
    seq        BIGSERIAL PRIMARY KEY,
    app        TEXT NOT NULL,
    artifact   TEXT NOT NULL,
    commit_id  TEXT NOT NULL,
    repository TEXT NOT NULL,
    tags       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX pushes_by_artifact ON pushes (app, artifact, seq);
CREATE TRIGGER pushes_are_append_only BEFORE UPDATE OR DELETE ON pushes
    FOR EACH ROW EXECUTE FUNCTION graven_refuse();

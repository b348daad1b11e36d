CREATE TABLE environments (
    app        TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app, name)
);

CREATE TABLE config_versions (
    id          TEXT   PRIMARY KEY,
    app         TEXT   NOT NULL,
    env         TEXT   NOT NULL,
    number      BIGINT NOT NULL CHECK (number >= 1),
    parent      TEXT,
    vars        TEXT   NOT NULL,
    secret      TEXT   NOT NULL,
    author      TEXT   NOT NULL,
    created_at  TEXT   NOT NULL,
    description TEXT   NOT NULL,
    UNIQUE (app, env, number),
    FOREIGN KEY (app, env) REFERENCES environments (app, name)
);

CREATE TABLE releases (
    id                   TEXT   PRIMARY KEY,
    app                  TEXT   NOT NULL,
    env                  TEXT   NOT NULL,
    number               BIGINT NOT NULL CHECK (number >= 1),
    kind                 TEXT   NOT NULL CHECK (kind IN ('deploy', 'config', 'rollback', 'promote')),
    artifact             TEXT   NOT NULL,
    config               TEXT   NOT NULL REFERENCES config_versions (id),
    parent               TEXT,
    commit_id            TEXT   NOT NULL,
    author               TEXT   NOT NULL,
    created_at           TEXT   NOT NULL,
    description          TEXT   NOT NULL,
    rollback_of          BIGINT,
    promoted_from_env    TEXT,
    promoted_from_number BIGINT,
    UNIQUE (app, env, number),
    FOREIGN KEY (app, env) REFERENCES environments (app, name)
);
CREATE INDEX releases_by_artifact ON releases (artifact);

CREATE TRIGGER environments_are_append_only BEFORE UPDATE OR DELETE ON environments
    FOR EACH ROW EXECUTE FUNCTION graven_refuse();
CREATE TRIGGER config_versions_are_append_only BEFORE UPDATE OR DELETE ON config_versions
    FOR EACH ROW EXECUTE FUNCTION graven_refuse();
CREATE TRIGGER releases_are_append_only BEFORE UPDATE OR DELETE ON releases
    FOR EACH ROW EXECUTE FUNCTION graven_refuse();

-- Runners LISTEN on graven: the payload is 'app/env' of what changed.
CREATE FUNCTION graven_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('graven', NEW.app || '/' || NEW.env);
    RETURN NULL;
END;
$$;
CREATE TRIGGER releases_notify AFTER INSERT ON releases FOR EACH ROW EXECUTE FUNCTION graven_notify();

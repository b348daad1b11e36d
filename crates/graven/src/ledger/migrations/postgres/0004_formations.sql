CREATE TABLE formations (
    seq        BIGSERIAL PRIMARY KEY,
    app        TEXT NOT NULL,
    env        TEXT NOT NULL,
    counts     TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX formations_by_env ON formations (app, env, seq);
CREATE TRIGGER formations_are_append_only BEFORE UPDATE OR DELETE ON formations
    FOR EACH ROW EXECUTE FUNCTION graven_refuse();
CREATE TRIGGER formations_notify AFTER INSERT ON formations FOR EACH ROW EXECUTE FUNCTION graven_notify();

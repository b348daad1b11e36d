-- The rollout each runner is in, and restart requests (see the SQLite
-- migration of the same name).
ALTER TABLE run_state ADD COLUMN rollout TEXT;
CREATE TABLE restarts (
    seq        BIGSERIAL PRIMARY KEY,
    app        TEXT NOT NULL,
    env        TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX restarts_by_env ON restarts (app, env, seq);
CREATE TRIGGER restarts_are_append_only BEFORE UPDATE OR DELETE ON restarts
    FOR EACH ROW EXECUTE FUNCTION graven_refuse();
CREATE TRIGGER restarts_notify AFTER INSERT ON restarts FOR EACH ROW EXECUTE FUNCTION graven_notify();

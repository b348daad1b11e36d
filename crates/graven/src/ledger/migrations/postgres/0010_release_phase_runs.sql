-- Release phase runs, and where their records begin (see the SQLite
-- migration of the same name).
CREATE TABLE release_phase_runs (
    seq        BIGSERIAL PRIMARY KEY,
    app        TEXT   NOT NULL,
    env        TEXT   NOT NULL,
    number     BIGINT NOT NULL,
    host       TEXT   NOT NULL,
    home       TEXT   NOT NULL,
    started_at TEXT   NOT NULL
);
CREATE INDEX release_phase_runs_by_release ON release_phase_runs (app, env, number);
CREATE TRIGGER release_phase_runs_are_append_only BEFORE UPDATE OR DELETE ON release_phase_runs
    FOR EACH ROW EXECUTE FUNCTION graven_refuse();
CREATE TABLE release_phase_runs_recorded_from (
    app    TEXT   NOT NULL,
    env    TEXT   NOT NULL,
    number BIGINT NOT NULL,
    PRIMARY KEY (app, env)
);
INSERT INTO release_phase_runs_recorded_from (app, env, number)
    SELECT app, env, MAX(number) + 1 FROM releases GROUP BY app, env;
CREATE TRIGGER release_phase_runs_recorded_from_is_fixed BEFORE INSERT OR UPDATE OR DELETE ON release_phase_runs_recorded_from
    FOR EACH ROW EXECUTE FUNCTION graven_refuse();

-- Run state may also record what `graven kube apply` rolled out to a
-- Kubernetes cluster (state 'cluster'). SQLite cannot change a CHECK
-- constraint in place: the table is made again, its rows kept.
CREATE TABLE run_state_new (
    app          TEXT    NOT NULL,
    env          TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    home         TEXT    NOT NULL,
    runner_pid   INTEGER NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('running', 'stopped', 'cluster')),
    running      TEXT,
    processes    TEXT    NOT NULL,
    last_failure TEXT,
    updated_at   TEXT    NOT NULL,
    rollout      TEXT,
    PRIMARY KEY (app, env, host, home)
);
INSERT INTO run_state_new (app, env, host, home, runner_pid, state, running, processes, last_failure, updated_at, rollout)
    SELECT app, env, host, home, runner_pid, state, running, processes, last_failure, updated_at, rollout FROM run_state;
DROP TABLE run_state;
ALTER TABLE run_state_new RENAME TO run_state;
CREATE INDEX run_state_by_update ON run_state (app, env, updated_at);

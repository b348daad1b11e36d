-- The one mutable table: each runner's report, not part of the history.
CREATE TABLE run_state (
    app          TEXT   NOT NULL,
    env          TEXT   NOT NULL,
    host         TEXT   NOT NULL,
    home         TEXT   NOT NULL,
    runner_pid   BIGINT NOT NULL,
    state        TEXT   NOT NULL CHECK (state IN ('running', 'stopped')),
    running      TEXT,
    processes    TEXT   NOT NULL,
    last_failure TEXT,
    updated_at   TEXT   NOT NULL,
    PRIMARY KEY (app, env, host, home)
);
CREATE INDEX run_state_by_update ON run_state (app, env, updated_at);

-- Run state: what each runner reports about itself, for `graven status`.
--
-- The one mutable table in the ledger. It is not part of the history: no
-- build, config version or release refers to it, it is not in the hash
-- chain, and `graven verify --ledger` does not read it. So it has no
-- append-only triggers: each runner overwrites its own row, keyed by where
-- it runs (app, env, host, home), about once a second.
CREATE TABLE run_state (
    app          TEXT    NOT NULL,
    env          TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    home         TEXT    NOT NULL,
    runner_pid   INTEGER NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('running', 'stopped')),
    running      TEXT,              -- JSON object {id, number, since}, or NULL
    processes    TEXT    NOT NULL,  -- JSON array of {name, type, pid, state, restarts, started_at}
    last_failure TEXT,              -- JSON object {number, reason, at}, or NULL
    updated_at   TEXT    NOT NULL,  -- RFC 3339 UTC
    PRIMARY KEY (app, env, host, home)
);

CREATE INDEX run_state_by_update ON run_state (app, env, updated_at);

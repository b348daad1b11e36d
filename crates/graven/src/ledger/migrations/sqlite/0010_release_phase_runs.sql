-- Release phase runs: a runner (or `graven kube apply`) records each
-- release phase it starts, before the process may run, so that `graven
-- diff` says which releases' release phases ran, not which could have: a
-- release superseded before a runner got to it never ran its phase. Each
-- run is a row, never updated or deleted.
CREATE TABLE release_phase_runs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    app        TEXT    NOT NULL,
    env        TEXT    NOT NULL,
    number     INTEGER NOT NULL,   -- the release's
    host       TEXT    NOT NULL,   -- where it ran (kubernetes/<context> for a cluster)
    home       TEXT    NOT NULL,
    started_at TEXT    NOT NULL    -- RFC 3339 UTC
);

CREATE INDEX release_phase_runs_by_release ON release_phase_runs (app, env, number);

CREATE TRIGGER release_phase_runs_are_append_only_update BEFORE UPDATE ON release_phase_runs
BEGIN
    SELECT RAISE(ABORT, 'release phase runs are append-only: UPDATE is refused');
END;

CREATE TRIGGER release_phase_runs_are_append_only_delete BEFORE DELETE ON release_phase_runs
BEGIN
    SELECT RAISE(ABORT, 'release phase runs are append-only: DELETE is refused');
END;

-- The releases made before this migration had their release phases run
-- unrecorded. Per environment that had releases then, the first release
-- number whose runs are all recorded; written once, here.
CREATE TABLE release_phase_runs_recorded_from (
    app    TEXT    NOT NULL,
    env    TEXT    NOT NULL,
    number INTEGER NOT NULL,
    PRIMARY KEY (app, env)
);

INSERT INTO release_phase_runs_recorded_from (app, env, number)
    SELECT app, env, MAX(number) + 1 FROM releases GROUP BY app, env;

CREATE TRIGGER release_phase_runs_recorded_from_is_fixed_insert BEFORE INSERT ON release_phase_runs_recorded_from
BEGIN
    SELECT RAISE(ABORT, 'where release phase runs are recorded from is fixed: INSERT is refused');
END;

CREATE TRIGGER release_phase_runs_recorded_from_is_fixed_update BEFORE UPDATE ON release_phase_runs_recorded_from
BEGIN
    SELECT RAISE(ABORT, 'where release phase runs are recorded from is fixed: UPDATE is refused');
END;

CREATE TRIGGER release_phase_runs_recorded_from_is_fixed_delete BEFORE DELETE ON release_phase_runs_recorded_from
BEGIN
    SELECT RAISE(ABORT, 'where release phase runs are recorded from is fixed: DELETE is refused');
END;

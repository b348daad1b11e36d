//! The SQLite ledger's record of what runs: the run state, one mutable row
//! per runner, overwritten by each report and not part of the history (see
//! `0003_run_state.sql`); and each environment's formation, append-only
//! (`0004_formations.sql`); restart requests, append-only
//! (`0007_rollouts.sql`); and release phase runs, append-only
//! (`0010_release_phase_runs.sql`).

use rusqlite::{Connection, OptionalExtension as _, params};

use super::LedgerError;
use super::rows::{self, RUN_STATE_COLUMNS, to_json};
use super::sqlite::{query_error, signed};
use crate::model::{FormationRecord, ReleasePhaseRun, ReleasePhaseRuns, RestartRecord, RunState};

pub(super) fn set_run_state(connection: &Connection, state: &RunState) -> Result<(), LedgerError> {
    const DOING: &str = "recording a runner's state";
    connection
        .execute(
            "INSERT INTO run_state (app, env, host, home, runner_pid, state, running, processes, last_failure, updated_at, rollout)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (app, env, host, home) DO UPDATE SET
                 runner_pid = excluded.runner_pid,
                 state = excluded.state,
                 running = excluded.running,
                 processes = excluded.processes,
                 last_failure = excluded.last_failure,
                 updated_at = excluded.updated_at,
                 rollout = excluded.rollout",
            params![
                state.app,
                state.env,
                state.host,
                state.home,
                i64::from(state.runner_pid),
                state.state.name(),
                state.running.as_ref().map(to_json),
                to_json(&state.processes),
                state.last_failure.as_ref().map(to_json),
                state.updated_at,
                state.rollout.as_ref().map(to_json),
            ],
        )
        .map_err(query_error(DOING))?;
    Ok(())
}

pub(super) fn run_states(connection: &Connection, app: &str, env: &str) -> Result<Vec<RunState>, LedgerError> {
    const DOING: &str = "reading the runners' states";
    let mut statement = connection
        .prepare(&format!(
            "SELECT {RUN_STATE_COLUMNS} FROM run_state WHERE app = ?1 AND env = ?2 ORDER BY updated_at DESC, host, home"
        ))
        .map_err(query_error(DOING))?;
    let rows =
        statement.query_map(params![app, env], |row| Ok(rows::run_state_from(row))).map_err(query_error(DOING))?;
    let mut states = Vec::new();
    for row in rows {
        states.push(row.map_err(query_error(DOING))??);
    }
    Ok(states)
}

/// Records a new formation of one environment.
pub(super) fn set_formation(
    connection: &Connection,
    app: &str,
    env: &str,
    record: &FormationRecord,
) -> Result<(), LedgerError> {
    connection
        .execute(
            "INSERT INTO formations (app, env, counts, author, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![app, env, to_json(&record.formation), record.author, record.created_at],
        )
        .map_err(query_error("recording a formation"))?;
    Ok(())
}

/// The newest formation of one environment.
pub(super) fn formation(connection: &Connection, app: &str, env: &str) -> Result<Option<FormationRecord>, LedgerError> {
    connection
        .query_row(
            "SELECT counts, author, created_at FROM formations WHERE app = ?1 AND env = ?2 ORDER BY seq DESC LIMIT 1",
            rusqlite::params![app, env],
            |row| Ok(rows::formation_from(row, env)),
        )
        .optional()
        .map_err(query_error("reading the formation"))?
        .transpose()
}

/// Records a restart request of one environment; returns its number.
pub(super) fn request_restart(
    connection: &Connection,
    app: &str,
    env: &str,
    author: &str,
    created_at: &str,
) -> Result<u64, LedgerError> {
    connection
        .execute(
            "INSERT INTO restarts (app, env, author, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![app, env, author, created_at],
        )
        .map_err(query_error("recording a restart"))?;
    Ok(u64::try_from(connection.last_insert_rowid()).unwrap_or_default())
}

/// The newest restart request of one environment.
pub(super) fn last_restart(
    connection: &Connection,
    app: &str,
    env: &str,
) -> Result<Option<RestartRecord>, LedgerError> {
    connection
        .query_row(
            "SELECT seq, author, created_at FROM restarts WHERE app = ?1 AND env = ?2 ORDER BY seq DESC LIMIT 1",
            params![app, env],
            |row| Ok(rows::restart_from(row)),
        )
        .optional()
        .map_err(query_error("reading the restarts"))?
        .transpose()
}

/// Records that a release phase started.
pub(super) fn record_release_phase(connection: &Connection, run: &ReleasePhaseRun) -> Result<(), LedgerError> {
    connection
        .execute(
            "INSERT INTO release_phase_runs (app, env, number, host, home, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![run.app, run.env, signed(run.number), run.host, run.home, run.started_at],
        )
        .map_err(query_error("recording a release phase"))?;
    Ok(())
}

/// Which releases numbered `numbers` of one environment had their release
/// phase started, and from which release on that is recorded.
pub(super) fn release_phase_runs(
    connection: &Connection,
    app: &str,
    env: &str,
    numbers: std::ops::RangeInclusive<u64>,
) -> Result<ReleasePhaseRuns, LedgerError> {
    const DOING: &str = "reading the release phase runs";
    let mut statement = connection
        .prepare(
            "SELECT DISTINCT number FROM release_phase_runs WHERE app = ?1 AND env = ?2 AND number BETWEEN ?3 AND ?4",
        )
        .map_err(query_error(DOING))?;
    let started = statement
        .query_map(params![app, env, signed(*numbers.start()), signed(*numbers.end())], |row| {
            Ok(rows::release_phase_number_from(row))
        })
        .map_err(query_error(DOING))?
        .map(|number| number.map_err(query_error(DOING))?)
        .collect::<Result<_, LedgerError>>()?;
    let recorded_from = connection
        .query_row(
            "SELECT number FROM release_phase_runs_recorded_from WHERE app = ?1 AND env = ?2",
            params![app, env],
            |row| Ok(rows::release_phase_number_from(row)),
        )
        .optional()
        .map_err(query_error(DOING))?
        .transpose()?
        .unwrap_or(1);
    Ok(ReleasePhaseRuns { started, recorded_from })
}

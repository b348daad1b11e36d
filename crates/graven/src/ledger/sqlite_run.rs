//! The SQLite ledger's record of what runs: the run state, one mutable row
//! per runner, overwritten by each report and not part of the history (see
//! `0003_run_state.sql`); and each environment's formation, append-only
//! (`0004_formations.sql`).

use rusqlite::{Connection, OptionalExtension as _, Row, params};
use serde::de::DeserializeOwned;

use super::LedgerError;
use super::sqlite::query_error;
use crate::model::{Formation, FormationRecord, MAX_PROCESSES, RunState, RunnerState};

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("run state always serialises")
}

pub(super) fn set_run_state(connection: &Connection, state: &RunState) -> Result<(), LedgerError> {
    const DOING: &str = "recording a runner's state";
    connection
        .execute(
            "INSERT INTO run_state (app, env, host, home, runner_pid, state, running, processes, last_failure, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (app, env, host, home) DO UPDATE SET
                 runner_pid = excluded.runner_pid,
                 state = excluded.state,
                 running = excluded.running,
                 processes = excluded.processes,
                 last_failure = excluded.last_failure,
                 updated_at = excluded.updated_at",
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
            ],
        )
        .map_err(query_error(DOING))?;
    Ok(())
}

pub(super) fn run_states(connection: &Connection, app: &str, env: &str) -> Result<Vec<RunState>, LedgerError> {
    const DOING: &str = "reading the runners' states";
    let mut statement = connection
        .prepare(
            "SELECT app, env, host, home, runner_pid, state, running, processes, last_failure, updated_at
             FROM run_state WHERE app = ?1 AND env = ?2 ORDER BY updated_at DESC, host, home",
        )
        .map_err(query_error(DOING))?;
    let rows = statement.query_map(params![app, env], run_state_from_row).map_err(query_error(DOING))?;
    let mut states = Vec::new();
    for row in rows {
        states.push(row.map_err(query_error(DOING))??);
    }
    Ok(states)
}

fn parse<T: DeserializeOwned>(text: &str, column: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("{column}: {e}"))
}

fn run_state_from_row(row: &Row<'_>) -> rusqlite::Result<Result<RunState, LedgerError>> {
    let env: String = row.get(1)?;
    let host: String = row.get(2)?;
    let home: String = row.get(3)?;
    let runner_pid: i64 = row.get(4)?;
    let running: Option<String> = row.get(6)?;
    let processes: String = row.get(7)?;
    let last_failure: Option<String> = row.get(8)?;
    let app: String = row.get(0)?;
    let state: String = row.get(5)?;
    let updated_at: String = row.get(9)?;
    let what = format!("run state of {env} on {host} ({home})");
    let corrupt = |why: String| LedgerError::Corrupt { what: what.clone(), why };
    Ok((|| {
        Ok(RunState {
            runner_pid: u32::try_from(runner_pid).map_err(|_| corrupt(format!("runner_pid {runner_pid}")))?,
            running: running.as_deref().map(|text| parse(text, "running")).transpose().map_err(corrupt)?,
            processes: parse(&processes, "processes").map_err(corrupt)?,
            last_failure: last_failure
                .as_deref()
                .map(|text| parse(text, "last_failure"))
                .transpose()
                .map_err(corrupt)?,
            app,
            env,
            host,
            home,
            state: RunnerState::from_name(&state).ok_or_else(|| corrupt(format!("state {state:?}")))?,
            updated_at,
        })
    })())
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
    let row: Option<(String, String, String)> = connection
        .query_row(
            "SELECT counts, author, created_at FROM formations WHERE app = ?1 AND env = ?2 ORDER BY seq DESC LIMIT 1",
            rusqlite::params![app, env],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()
        .map_err(query_error("reading the formation"))?;
    row.map(|(counts, author, created_at)| {
        let formation: Formation = parse(&counts, "counts")
            .map_err(|why| LedgerError::Corrupt { what: format!("formation of {env}"), why })?;
        if let Some((kind, count)) = formation.0.iter().find(|(_, count)| **count > MAX_PROCESSES) {
            return Err(LedgerError::Corrupt {
                what: format!("formation of {env}"),
                why: format!("{kind}={count} is over {MAX_PROCESSES}"),
            });
        }
        Ok(FormationRecord { formation, author, created_at })
    })
    .transpose()
}

//! Rows of the ledger's tables, parsed once for every backend: a backend
//! reads its row through [`Columns`] (by column index, in the order of the
//! `*_COLUMNS` lists), and these functions make the model's records of
//! them, refusing a malformed row as [`LedgerError::Corrupt`]. Every row
//! of a ledger is untrusted input.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;

use super::LedgerError;
use crate::Digest;
use crate::model::{
    BuildRecord, ConfigVersion, Formation, FormationRecord, MAX_PROCESSES, NewBuild, NewPush, PromotedFrom, PushRecord,
    Release, ReleaseKind, RestartRecord, RunState, RunnerState,
};

/// The columns of builds, in the order [`build_from`] reads them.
pub(super) const BUILD_COLUMNS: &str = "seq, app, artifact, commit_id, dirty, recipe, author, host, started_at, \
     finished_at, files, bytes, new_bytes, duration_ms, build_command_ms, ingest_ms, sandboxed";

/// The columns of releases, in the order [`release_from`] reads them.
pub(super) const RELEASE_COLUMNS: &str = "id, app, env, number, kind, artifact, config, parent, commit_id, author, \
     created_at, description, rollback_of, promoted_from_env, promoted_from_number, host";

/// The columns of config versions, in the order [`config_from`] reads them.
pub(super) const CONFIG_COLUMNS: &str = "id, app, env, number, parent, vars, secret, author, created_at, description";

/// The columns of run states, in the order [`run_state_from`] reads them.
pub(super) const RUN_STATE_COLUMNS: &str =
    "app, env, host, home, runner_pid, state, running, processes, last_failure, updated_at, rollout";

/// One row, read by column index.
pub(super) trait Columns {
    /// A text column.
    fn text(&self, index: usize) -> Result<String, LedgerError>;
    /// A text column that may be NULL.
    fn maybe_text(&self, index: usize) -> Result<Option<String>, LedgerError>;
    /// An integer column.
    fn int(&self, index: usize) -> Result<i64, LedgerError>;
    /// An integer column that may be NULL.
    fn maybe_int(&self, index: usize) -> Result<Option<i64>, LedgerError>;
    /// A boolean column.
    fn flag(&self, index: usize) -> Result<bool, LedgerError>;
}

/// A column that cannot be read as its type: the row is corrupt.
pub(super) fn bad_column(index: usize, error: &dyn std::error::Error) -> LedgerError {
    LedgerError::Corrupt { what: format!("row (column {index})"), why: error.to_string() }
}

fn corrupt(what: &str, why: impl Into<String>) -> LedgerError {
    LedgerError::Corrupt { what: what.to_owned(), why: why.into() }
}

fn digest(text: &str, what: &str) -> Result<Digest, LedgerError> {
    text.parse().map_err(|e: crate::digest::ParseDigestError| corrupt(what, e.to_string()))
}

fn json<T: DeserializeOwned>(text: &str, what: &str, column: &str) -> Result<T, LedgerError> {
    serde_json::from_str(text).map_err(|e| corrupt(what, format!("{column}: {e}")))
}

fn count(value: i64, what: &str, column: &str) -> Result<u64, LedgerError> {
    u64::try_from(value).map_err(|_| corrupt(what, format!("{column} is {value}")))
}

/// A row of `builds` ([`BUILD_COLUMNS`]); its log is left empty.
pub(super) fn build_from(row: &impl Columns) -> Result<BuildRecord, LedgerError> {
    let seq = row.int(0)?;
    let what = format!("build #{seq}");
    Ok(BuildRecord {
        seq,
        build: NewBuild {
            app: row.text(1)?,
            artifact: digest(&row.text(2)?, &what)?,
            commit: row.text(3)?,
            dirty: row.flag(4)?,
            recipe: digest(&row.text(5)?, &what)?,
            author: row.text(6)?,
            host: row.text(7)?,
            started_at: row.text(8)?,
            finished_at: row.text(9)?,
            files: count(row.int(10)?, &what, "files")?,
            bytes: count(row.int(11)?, &what, "bytes")?,
            new_bytes: count(row.int(12)?, &what, "new_bytes")?,
            duration_ms: count(row.int(13)?, &what, "duration_ms")?,
            build_command_ms: count(row.int(14)?, &what, "build_command_ms")?,
            ingest_ms: count(row.int(15)?, &what, "ingest_ms")?,
            sandboxed: row.flag(16)?,
            log: String::new(),
        },
    })
}

/// A row of `releases` ([`RELEASE_COLUMNS`]).
pub(super) fn release_from(row: &impl Columns) -> Result<Release, LedgerError> {
    let env = row.text(2)?;
    let number = row.int(3)?;
    let what = format!("release {env} v{number}");
    let kind = row.text(4)?;
    Ok(Release {
        id: digest(&row.text(0)?, &what)?,
        app: row.text(1)?,
        number: count(number, &what, "number")?,
        kind: ReleaseKind::from_name(&kind).ok_or_else(|| corrupt(&what, format!("unknown kind '{kind}'")))?,
        artifact: digest(&row.text(5)?, &what)?,
        config: digest(&row.text(6)?, &what)?,
        parent: row.maybe_text(7)?.map(|p| digest(&p, &what)).transpose()?,
        commit: row.text(8)?,
        author: row.text(9)?,
        host: row.maybe_text(15)?,
        created_at: row.text(10)?,
        description: row.text(11)?,
        rollback_of: row.maybe_int(12)?.map(|n| count(n, &what, "rollback_of")).transpose()?,
        promoted_from: match (row.maybe_text(13)?, row.maybe_int(14)?) {
            (Some(env), Some(number)) => Some(PromotedFrom { env, number: count(number, &what, "promoted_from")? }),
            _ => None,
        },
        env,
    })
}

/// A row of `config_versions` ([`CONFIG_COLUMNS`]).
pub(super) fn config_from(row: &impl Columns) -> Result<ConfigVersion, LedgerError> {
    let env = row.text(2)?;
    let number = row.int(3)?;
    let what = format!("config version {env} #{number}");
    Ok(ConfigVersion {
        id: digest(&row.text(0)?, &what)?,
        app: row.text(1)?,
        number: count(number, &what, "number")?,
        parent: row.maybe_text(4)?.map(|p| digest(&p, &what)).transpose()?,
        vars: json::<BTreeMap<String, String>>(&row.text(5)?, &what, "vars")?,
        secret: json::<BTreeSet<String>>(&row.text(6)?, &what, "secret")?,
        author: row.text(7)?,
        created_at: row.text(8)?,
        description: row.text(9)?,
        env,
    })
}

/// A row of `run_state` ([`RUN_STATE_COLUMNS`]).
pub(super) fn run_state_from(row: &impl Columns) -> Result<RunState, LedgerError> {
    let (env, host, home) = (row.text(1)?, row.text(2)?, row.text(3)?);
    let what = format!("run state of {env} on {host} ({home})");
    let runner_pid = row.int(4)?;
    let state = row.text(5)?;
    Ok(RunState {
        app: row.text(0)?,
        runner_pid: u32::try_from(runner_pid).map_err(|_| corrupt(&what, format!("runner_pid {runner_pid}")))?,
        state: RunnerState::from_name(&state).ok_or_else(|| corrupt(&what, format!("state {state:?}")))?,
        running: row.maybe_text(6)?.map(|text| json(&text, &what, "running")).transpose()?,
        processes: json(&row.text(7)?, &what, "processes")?,
        last_failure: row.maybe_text(8)?.map(|text| json(&text, &what, "last_failure")).transpose()?,
        updated_at: row.text(9)?,
        rollout: row.maybe_text(10)?.map(|text| json(&text, &what, "rollout")).transpose()?,
        env,
        host,
        home,
    })
}

/// A row of `formations` (`counts, author, created_at`) of environment `env`.
pub(super) fn formation_from(row: &impl Columns, env: &str) -> Result<FormationRecord, LedgerError> {
    let what = format!("formation of {env}");
    let formation: Formation = json(&row.text(0)?, &what, "counts")?;
    if let Some((kind, n)) = formation.0.iter().find(|(_, n)| **n > MAX_PROCESSES) {
        return Err(corrupt(&what, format!("{kind}={n} is over {MAX_PROCESSES}")));
    }
    Ok(FormationRecord { formation, author: row.text(1)?, created_at: row.text(2)? })
}

/// A row of `restarts` (`seq, author, created_at`).
pub(super) fn restart_from(row: &impl Columns) -> Result<RestartRecord, LedgerError> {
    let seq = row.int(0)?;
    let seq = u64::try_from(seq).map_err(|_| corrupt("restart", format!("seq {seq}")))?;
    Ok(RestartRecord { seq, author: row.text(1)?, created_at: row.text(2)? })
}

/// A release number, column 0 of `release_phase_runs` or
/// `release_phase_runs_recorded_from`.
pub(super) fn release_phase_number_from(row: &impl Columns) -> Result<u64, LedgerError> {
    count(row.int(0)?, "a release phase run", "number")
}

/// The columns of `pushes` read back, in this order.
pub(super) const PUSH_COLUMNS: &str = "seq, app, artifact, commit_id, repository, tags, digest, author, created_at";

/// A row of `pushes` ([`PUSH_COLUMNS`]).
pub(super) fn push_from(row: &impl Columns) -> Result<PushRecord, LedgerError> {
    let seq = row.int(0)?;
    let seq = u64::try_from(seq).map_err(|_| corrupt("push", format!("seq {seq}")))?;
    let what = format!("push {seq}");
    let push = NewPush {
        app: row.text(1)?,
        artifact: digest(&row.text(2)?, &what)?,
        commit: row.text(3)?,
        repository: row.text(4)?,
        tags: json(&row.text(5)?, &what, "tags")?,
        digest: digest(&row.text(6)?, &what)?,
        author: row.text(7)?,
        created_at: row.text(8)?,
    };
    Ok(PushRecord { seq, push })
}

/// JSON for a column: what the model serialises always does.
pub(super) fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("the model's records always serialise")
}

//! The ledger: the append-only record of builds, config versions and
//! releases. Rows are never updated or deleted; the database itself refuses
//! it. Beside that history, one mutable table: each runner's report of what
//! it runs ([`RunState`]), which is not part of the history.
//!
//! The stages reach the ledger only through [`Ledger`]; its types hold no
//! backend types, so the embedded SQLite ledger and a PostgreSQL ledger are
//! interchangeable.

mod postgres;
mod rows;
mod sqlite;
mod sqlite_release;
mod sqlite_run;

pub use postgres::PostgresLedger;
pub use sqlite::SqliteLedger;

use crate::Digest;
use crate::home::Home;
use crate::model::{
    BuildRecord, ConfigVersion, FormationRecord, NewBuild, NewPush, PushRecord, Release, ReleasePhaseRun,
    ReleasePhaseRuns, RestartRecord, RunState,
};

/// The backend's own error behind a [`LedgerError`], kept as its source:
/// no backend type appears in the trait.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A failure of the ledger, typed where a caller must decide: retry
/// ([`LedgerError::Unavailable`] with `retryable`, [`LedgerError::Conflict`]),
/// give up, or report corruption.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// `GRAVEN_LEDGER` (or `--ledger-url`) is not a ledger URL graven knows.
    #[error("'{url}' is not a ledger URL: {why}")]
    BadUrl {
        /// The URL, without its password.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The ledger cannot be used now: it cannot be opened or reached, it
    /// stayed locked longer than graven waits, or its files cannot be
    /// written (a full disk, a file-size limit).
    #[error("the ledger at {location} is unavailable ({doing})")]
    Unavailable {
        /// Where the ledger is.
        location: String,
        /// What graven was doing.
        doing: &'static str,
        /// Whether trying again later may succeed (a lock, a full disk, a
        /// dropped connection), or not without a change (no such file, no
        /// permission, not a database).
        retryable: bool,
        /// Why.
        #[source]
        source: Cause,
    },
    /// Another writer changed what a decision was made on (took a number,
    /// changed the environment): the decision must be made again.
    #[error("another writer changed the ledger while {doing}")]
    Conflict {
        /// What graven was doing.
        doing: &'static str,
        /// Why.
        #[source]
        source: Cause,
    },
    /// A statement failed.
    #[error("the ledger failed while {doing}")]
    Query {
        /// What graven was doing.
        doing: &'static str,
        /// The database's error.
        #[source]
        source: Cause,
    },
    /// The ledger's schema is newer than this graven knows.
    #[error(
        "the ledger at {location} has schema version {found}, newer than this graven knows ({known}): upgrade graven"
    )]
    TooNew {
        /// Where the ledger is.
        location: String,
        /// Its schema version.
        found: usize,
        /// The newest this graven knows.
        known: usize,
    },
    /// The decision passed to [`Ledger::append`] refused to append.
    #[error("the change was refused")]
    Refused,
    /// A stored row does not parse.
    #[error("the ledger holds a malformed {what}: {why}")]
    Corrupt {
        /// Which row.
        what: String,
        /// What is wrong with it.
        why: String,
    },
}

/// How a command means to use the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads and writes.
    ReadWrite,
    /// Only reads: the ledger must open on a full disk too.
    Read,
}

/// Opens the ledger at `url` (`GRAVEN_LEDGER`), or the embedded one in
/// `home` when there is none: the one place a ledger backend is chosen.
/// `sqlite:PATH` names an embedded ledger elsewhere.
pub fn open_ledger(url: Option<&str>, home: &Home, access: Access) -> Result<Box<dyn Ledger>, LedgerError> {
    let path = match url.filter(|url| !url.is_empty()) {
        None => home.ledger_path(),
        Some(url) => match crate::url::scheme(url) {
            Some("sqlite") => crate::url::local_path(url)
                .ok_or_else(|| LedgerError::BadUrl { url: crate::url::redacted(url), why: "it names no file" })?,
            Some("postgres" | "postgresql") => return Ok(Box::new(PostgresLedger::open(url)?)),
            _ => {
                return Err(LedgerError::BadUrl {
                    url: crate::url::redacted(url),
                    why: "use postgres://USER@HOST:PORT/DATABASE, or sqlite:PATH",
                });
            }
        },
    };
    let ledger = match access {
        Access::ReadWrite => SqliteLedger::open(&path)?,
        Access::Read => SqliteLedger::open_for_reading(&path)?,
    };
    Ok(Box::new(ledger))
}

/// One environment as it is inside a write transaction: what a decision to
/// append is made on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvState {
    /// Whether the environment exists yet (it is created on first use).
    pub exists: bool,
    /// Its current config: the current release's, or, before the first
    /// release, the newest config version.
    pub config: Option<ConfigVersion>,
    /// The number the next config version takes.
    pub next_config_number: u64,
    /// Its newest release: the current one.
    pub release: Option<Release>,
}

/// Rows to append to one environment, in one transaction. Their numbers,
/// parents and ids are the decision's to set, from the [`EnvState`] it was
/// given; the database refuses a number that is already taken.
#[derive(Debug, Clone, Default)]
pub struct Append {
    /// A new config version.
    pub config: Option<ConfigVersion>,
    /// A new release.
    pub release: Option<Release>,
}

/// A decision to append, made inside the ledger's write transaction.
/// Returning `Err(LedgerError::Refused)` appends nothing.
pub type Decide<'a> = dyn FnMut(&EnvState) -> Result<Append, LedgerError> + 'a;

/// What [`Ledger::watch`] returns.
pub trait Watch: Send {
    /// Waits at most `timeout` for a change of the watched environment;
    /// returns whether there may have been one. It may wake for a change
    /// elsewhere in the ledger (the caller reads what it needs and finds it
    /// unchanged), but never sleeps through a change of the environment.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool, LedgerError>;
}

/// The append-only record of builds, config versions and releases, and the
/// runners' mutable reports.
pub trait Ledger: Send + Sync {
    /// Records a build.
    fn record_build(&self, build: &NewBuild) -> Result<BuildRecord, LedgerError>;

    /// The builds of `app`, newest first. Their logs are left empty.
    fn builds(&self, app: &str) -> Result<Vec<BuildRecord>, LedgerError>;

    /// The newest clean build of `app` from `commit` with `recipe`.
    fn reusable_build(&self, app: &str, commit: &str, recipe: &Digest) -> Result<Option<BuildRecord>, LedgerError>;

    /// The log of build `seq`.
    fn build_log(&self, seq: i64) -> Result<Option<String>, LedgerError>;

    /// Appends to environment `env` of `app` what `decide` returns, given the
    /// environment's state, all in one transaction that no other writer can
    /// interleave with. Creates the environment if it does not exist.
    /// Returns what was appended.
    fn append(&self, app: &str, env: &str, now: &str, decide: &mut Decide<'_>) -> Result<Append, LedgerError>;

    /// Environment `env` of `app` as it is now: what a decision to append is
    /// made on outside the write transaction, and checked again inside it.
    fn env_state(&self, app: &str, env: &str) -> Result<EnvState, LedgerError>;

    /// Every app with a build or an environment in the ledger, by name.
    fn apps(&self) -> Result<Vec<String>, LedgerError>;

    /// The environments of `app`, by name.
    fn environments(&self, app: &str) -> Result<Vec<String>, LedgerError>;

    /// The releases of one environment, newest first, at most `limit`.
    fn releases(&self, app: &str, env: &str, limit: Option<u64>) -> Result<Vec<Release>, LedgerError>;

    /// The environment's current release: its newest.
    fn current_release(&self, app: &str, env: &str) -> Result<Option<Release>, LedgerError> {
        Ok(self.releases(app, env, Some(1))?.pop())
    }

    /// The config the environment runs with: its current release's, or,
    /// before its first release, its newest config version (as
    /// [`EnvState::config`]).
    fn current_config(&self, app: &str, env: &str) -> Result<Option<ConfigVersion>, LedgerError> {
        match self.current_release(app, env)? {
            Some(release) => self.config_version(&release.config),
            None => Ok(self.config_versions(app, env)?.into_iter().next()),
        }
    }

    /// Release number `number` of one environment.
    fn release(&self, app: &str, env: &str, number: u64) -> Result<Option<Release>, LedgerError>;

    /// The config versions of one environment, newest first.
    fn config_versions(&self, app: &str, env: &str) -> Result<Vec<ConfigVersion>, LedgerError>;

    /// The config version with id `id`.
    fn config_version(&self, id: &Digest) -> Result<Option<ConfigVersion>, LedgerError>;

    /// A watch on environment `env` of `app`, which wakes a runner when
    /// what it must run may have changed (a release, a config).
    fn watch(&self, app: &str, env: &str) -> Result<Box<dyn Watch + '_>, LedgerError>;

    /// Records a runner's report, replacing the one it made before: a runner
    /// is known by its app, env, host and home, and has one row. Not part of
    /// the history.
    fn set_run_state(&self, state: &RunState) -> Result<(), LedgerError>;

    /// The reports of every runner of one environment, the most recently
    /// updated first.
    fn run_states(&self, app: &str, env: &str) -> Result<Vec<RunState>, LedgerError>;

    /// Records a new formation of one environment (`graven scale`): a row
    /// of its own, never changed; it wakes the environment's watches.
    fn set_formation(&self, app: &str, env: &str, record: &FormationRecord) -> Result<(), LedgerError>;

    /// The environment's formation: its newest, if it was ever scaled.
    fn formation(&self, app: &str, env: &str) -> Result<Option<FormationRecord>, LedgerError>;

    /// Records that `author` asks every runner of the environment to roll
    /// its release out again (`graven restart`); returns the request's
    /// number, which grows with each request.
    fn request_restart(&self, app: &str, env: &str, author: &str, created_at: &str) -> Result<u64, LedgerError>;

    /// The environment's newest restart request, if any.
    fn last_restart(&self, app: &str, env: &str) -> Result<Option<RestartRecord>, LedgerError>;

    /// Records that a release phase started (before its process may run).
    /// Append-only.
    fn record_release_phase(&self, run: &ReleasePhaseRun) -> Result<(), LedgerError>;

    /// Which releases numbered `numbers` of one environment had their
    /// release phase started, and from which release on the ledger
    /// recorded it.
    fn release_phase_runs(
        &self,
        app: &str,
        env: &str,
        numbers: std::ops::RangeInclusive<u64>,
    ) -> Result<ReleasePhaseRuns, LedgerError>;

    /// Records that a build's image was pushed (`graven push`); returns
    /// the push's number. Append-only.
    fn record_push(&self, push: &NewPush) -> Result<u64, LedgerError>;

    /// The pushes of `app`'s images (of `artifact` only, if given),
    /// newest first.
    fn pushes(&self, app: &str, artifact: Option<&Digest>) -> Result<Vec<PushRecord>, LedgerError>;
}

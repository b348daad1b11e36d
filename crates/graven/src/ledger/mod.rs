//! The ledger: the append-only record of builds (and, in later stages,
//! config versions and releases). Rows are never updated or deleted; the
//! database itself refuses it.
//!
//! The stages reach the ledger only through [`Ledger`]; its types hold no
//! backend types, so the embedded SQLite ledger and a PostgreSQL ledger are
//! interchangeable.

mod sqlite;

pub use sqlite::SqliteLedger;

use crate::Digest;

/// A failure of the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database could not be opened, or its schema is newer than this
    /// graven.
    #[error("could not open the ledger at {location}: {why}")]
    Open {
        /// Where the ledger is.
        location: String,
        /// Why it could not be opened.
        why: String,
    },
    /// A query failed.
    #[error("the ledger failed while {doing}: {why}")]
    Query {
        /// What graven was doing.
        doing: &'static str,
        /// The database's message.
        why: String,
    },
    /// A stored row does not parse.
    #[error("the ledger holds a malformed {what}: {why}")]
    Corrupt {
        /// Which row.
        what: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A build about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBuild {
    /// The app built.
    pub app: String,
    /// The artifact it produced.
    pub artifact: Digest,
    /// The commit built (40 hex digits).
    pub commit: String,
    /// Whether the working tree's uncommitted changes were built.
    pub dirty: bool,
    /// The digest of the build recipe (command, env, output, exclude).
    pub recipe: Digest,
    /// Who ran the build.
    pub author: String,
    /// The machine it ran on.
    pub host: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Regular files in the artifact.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Bytes the store did not have before (blobs and listings).
    pub new_bytes: u64,
    /// Whole build, in milliseconds.
    pub duration_ms: u64,
    /// The build command alone.
    pub build_command_ms: u64,
    /// Ingest alone.
    pub ingest_ms: u64,
    /// The build command's output.
    pub log: String,
}

/// A recorded build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    /// Position in the ledger: later builds have larger numbers.
    pub seq: i64,
    /// Everything recorded, the log excepted.
    pub build: NewBuild,
}

/// The append-only record of builds.
pub trait Ledger: Send + Sync {
    /// Records a build.
    fn record_build(&self, build: &NewBuild) -> Result<BuildRecord, LedgerError>;

    /// The builds of `app`, newest first. Their logs are left empty.
    fn builds(&self, app: &str) -> Result<Vec<BuildRecord>, LedgerError>;

    /// The newest clean build of `app` from `commit` with `recipe`.
    fn reusable_build(&self, app: &str, commit: &str, recipe: &Digest) -> Result<Option<BuildRecord>, LedgerError>;

    /// The log of build `seq`.
    fn build_log(&self, seq: i64) -> Result<Option<String>, LedgerError>;
}

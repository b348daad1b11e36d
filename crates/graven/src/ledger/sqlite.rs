//! The embedded ledger: one SQLite file in WAL mode. Schema migrations are
//! compiled into the binary and applied in order on open; the schema's
//! version is SQLite's `user_version`.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};

use super::rows::{self, BUILD_COLUMNS};
use super::{Append, Cause, Decide, EnvState, Ledger, LedgerError, Watch, sqlite_release, sqlite_run};
use crate::Digest;
use crate::model::{
    BuildRecord, ConfigVersion, FormationRecord, NewBuild, NewPush, PushRecord, Release, ReleasePhaseRun,
    ReleasePhaseRuns, RestartRecord, RunState,
};

/// The migrations, in order; migration `i` takes the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_builds.sql"),
    include_str!("migrations/sqlite/0002_releases.sql"),
    include_str!("migrations/sqlite/0003_run_state.sql"),
    include_str!("migrations/sqlite/0004_formations.sql"),
    include_str!("migrations/sqlite/0005_release_host.sql"),
    include_str!("migrations/sqlite/0006_build_sandbox.sql"),
    include_str!("migrations/sqlite/0007_rollouts.sql"),
    include_str!("migrations/sqlite/0008_pushes.sql"),
    include_str!("migrations/sqlite/0009_cluster_state.sql"),
    include_str!("migrations/sqlite/0010_release_phase_runs.sql"),
];

/// How long a writer waits for another to finish before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A ledger in a SQLite file.
#[derive(Debug)]
pub struct SqliteLedger {
    connection: Mutex<Connection>,
    path: std::path::PathBuf,
    /// Appends made through this handle, which SQLite's `data_version`
    /// does not count (it counts other connections' commits): a watch on
    /// this handle wakes for both.
    appends: std::sync::atomic::AtomicU64,
}

/// Maps a database error to a ledger error saying what graven was doing,
/// typed by what a caller can do about it. The location is added by
/// [`SqliteLedger::with`].
pub(super) fn query_error(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> LedgerError {
    move |e| classify(doing, String::new(), e, None)
}

/// The ledger error for SQLite's `error` while `doing`, at `location`;
/// `db` lets a storage failure say what graven found of its cause.
fn classify(doing: &'static str, location: String, error: rusqlite::Error, db: Option<&Path>) -> LedgerError {
    use rusqlite::ErrorCode;
    let code = match &error {
        rusqlite::Error::SqliteFailure(e, _) => Some(e.code),
        _ => None,
    };
    match code {
        Some(ErrorCode::SystemIoFailure | ErrorCode::DiskFull) => {
            let source: Cause = match db.and_then(storage_cause) {
                Some(cause) => format!("{error} ({cause})").into(),
                None => Box::new(error),
            };
            LedgerError::Unavailable { location, doing, retryable: true, source }
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            LedgerError::Unavailable { location, doing, retryable: true, source: Box::new(error) }
        }
        Some(ErrorCode::CannotOpen | ErrorCode::NotADatabase | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            LedgerError::Unavailable { location, doing, retryable: false, source: Box::new(error) }
        }
        Some(ErrorCode::ConstraintViolation) if error.to_string().contains("UNIQUE") => {
            LedgerError::Conflict { doing, source: Box::new(error) }
        }
        _ => LedgerError::Query { doing, source: Box::new(error) },
    }
}

/// Whether SQLite failed to read or write its files (`SQLITE_IOERR`,
/// `SQLITE_FULL`), rather than refused a statement.
fn is_storage_failure(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(e.code, rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::DiskFull)
    )
}

/// SQLite says only "disk I/O error": what graven can find out of why, for
/// the database at `db`.
fn storage_cause(db: &Path) -> Option<String> {
    let largest = ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let mut file = db.as_os_str().to_owned();
            file.push(suffix);
            std::fs::metadata(file).ok().map(|meta| meta.len())
        })
        .max()
        .unwrap_or(0);
    if let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Fsize).current
        && largest + (1 << 16) >= limit
    {
        return Some(format!("the file-size limit (ulimit -f) of {limit} bytes is too small for {}", db.display()));
    }
    let dir = db.parent().unwrap_or(Path::new("."));
    let stat = rustix::fs::statvfs(dir).ok()?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    (free < 1 << 20 || stat.f_favail == 0).then(|| format!("no space left on the filesystem of {}", dir.display()))
}

/// Creates the database file private (0600) before SQLite does (which
/// would use the umask), and tightens an existing one and its `-wal` and
/// `-shm` files: SQLite gives those the database file's mode.
fn make_private(path: &Path) -> std::io::Result<()> {
    if !path.exists() {
        crate::fs_tree::private_file().write(true).create(true).truncate(false).open(path)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        crate::fs_tree::tighten(Path::new(&file), crate::fs_tree::PRIVATE_FILE)?;
    }
    Ok(())
}

/// A count as SQLite's signed integer (counts never come near `i64::MAX`).
pub(super) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SqliteLedger {
    /// Opens the ledger at `path`, creating it and migrating its schema as
    /// needed.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        Self::open_with(path, false).map_err(Opening::into_error)
    }

    /// Opens the ledger at `path` for a command that only reads, which must
    /// work on a full disk too. SQLite's shared memory file (`-shm`) needs
    /// room on the disk that a full one lacks; should the usual open fail
    /// for that, the ledger is opened once more in exclusive locking mode,
    /// which keeps that index in memory instead (and holds the lock until
    /// the command ends, which a short command may). Never for a runner.
    pub fn open_for_reading(path: &Path) -> Result<Self, LedgerError> {
        match Self::open_with(path, false) {
            Err(Opening::Storage(_)) => Self::open_with(path, true).map_err(Opening::into_error),
            other => other.map_err(Opening::into_error),
        }
    }

    fn open_with(path: &Path, exclusive: bool) -> Result<Self, Opening> {
        let location = path.display().to_string();
        let open_error = |e: rusqlite::Error| {
            let storage = is_storage_failure(&e);
            let error = classify("opening it", location.clone(), e, Some(path));
            if storage { Opening::Storage(error) } else { Opening::Other(error) }
        };
        make_private(path).map_err(|e| {
            Opening::Other(LedgerError::Unavailable {
                location: location.clone(),
                doing: "making it private",
                retryable: false,
                source: Box::new(e),
            })
        })?;
        let mut connection = Connection::open(path).map_err(open_error)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        if exclusive {
            connection.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(open_error)?;
        }
        enable_wal(&connection)
            .and_then(|()| connection.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|()| connection.pragma_update(None, "foreign_keys", "ON"))
            .map_err(open_error)?;
        migrate(&mut connection).map_err(|e| match e {
            Migration::TooNew(found) => {
                Opening::Other(LedgerError::TooNew { location: location.clone(), found, known: MIGRATIONS.len() })
            }
            Migration::Failed(e) => open_error(e),
        })?;
        Ok(Self {
            connection: Mutex::new(connection),
            path: path.to_owned(),
            appends: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        let mut connection = self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut connection).map_err(|error| match error {
            LedgerError::Unavailable { doing, retryable, source, .. } => {
                let source: Cause = match (retryable, storage_cause(&self.path)) {
                    (true, Some(cause)) => format!("{source} ({cause})").into(),
                    _ => source,
                };
                LedgerError::Unavailable { location: self.path.display().to_string(), doing, retryable, source }
            }
            other => other,
        })
    }
}

/// Switches the database to WAL mode (a setting kept in the file). The
/// switch needs an exclusive lock that SQLite does not wait for, whatever
/// the busy timeout: when several processes open a new ledger at once, all
/// but one are refused with "database is locked", so retry until the
/// timeout.
fn enable_wal(connection: &Connection) -> rusqlite::Result<()> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match connection.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

impl SqliteLedger {
    /// SQLite's `data_version`: changes whenever another connection commits
    /// to the database, and costs no read of any table.
    fn data_version(&self) -> Result<i64, LedgerError> {
        self.with(|connection| {
            connection
                .pragma_query_value(None, "data_version", |row| row.get(0))
                .map_err(query_error("watching the ledger"))
        })
    }

    /// What a watch compares: others' commits, and this handle's appends.
    fn version(&self) -> Result<(i64, u64), LedgerError> {
        Ok((self.data_version()?, self.appends.load(std::sync::atomic::Ordering::SeqCst)))
    }
}

/// A watch on a SQLite ledger: polls `data_version` every few milliseconds,
/// which wakes for any commit by another process (SQLite has no per-table
/// notification; PostgreSQL's LISTEN/NOTIFY will).
struct SqliteWatch<'a> {
    ledger: &'a SqliteLedger,
    seen: (i64, u64),
}

/// How often a SQLite watch looks.
const WATCH_EVERY: Duration = Duration::from_millis(20);

impl Watch for SqliteWatch<'_> {
    fn wait(&mut self, timeout: Duration) -> Result<bool, LedgerError> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.ledger.version()?;
            if now != self.seen {
                self.seen = now;
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            std::thread::sleep(left.min(WATCH_EVERY));
        }
    }
}

/// Why opening failed: a storage failure (which reading commands get
/// around), or anything else.
enum Opening {
    Storage(LedgerError),
    Other(LedgerError),
}

impl Opening {
    fn into_error(self) -> LedgerError {
        match self {
            Self::Storage(error) | Self::Other(error) => error,
        }
    }
}

/// Why the schema could not be brought up to date.
enum Migration {
    /// Its version is newer than this graven knows.
    TooNew(usize),
    /// A statement failed.
    Failed(rusqlite::Error),
}

impl From<rusqlite::Error> for Migration {
    fn from(error: rusqlite::Error) -> Self {
        Self::Failed(error)
    }
}

/// Applies the migrations the database has not seen, in one transaction
/// that holds the write lock, so concurrent first opens migrate once. A
/// database already up to date, as it is for nearly every command, is only
/// read: no write lock, no write.
fn migrate(connection: &mut Connection) -> Result<(), Migration> {
    let version = schema_version(connection)?;
    if version == MIGRATIONS.len() {
        return Ok(());
    }
    if version > MIGRATIONS.len() {
        return Err(Migration::TooNew(version));
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Again under the lock: another process may have migrated meanwhile.
    let version = schema_version(&transaction)?;
    if version > MIGRATIONS.len() {
        return Err(Migration::TooNew(version));
    }
    for sql in MIGRATIONS.iter().skip(version) {
        transaction.execute_batch(sql)?;
    }
    transaction.pragma_update(None, "user_version", i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX))?;
    Ok(transaction.commit()?)
}

/// The number of migrations applied to the database (`user_version`).
fn schema_version(connection: &Connection) -> rusqlite::Result<usize> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    Ok(usize::try_from(version).unwrap_or(usize::MAX))
}

impl rows::Columns for Row<'_> {
    fn text(&self, index: usize) -> Result<String, LedgerError> {
        self.get(index).map_err(|e| rows::bad_column(index, &e))
    }
    fn maybe_text(&self, index: usize) -> Result<Option<String>, LedgerError> {
        self.get(index).map_err(|e| rows::bad_column(index, &e))
    }
    fn int(&self, index: usize) -> Result<i64, LedgerError> {
        self.get(index).map_err(|e| rows::bad_column(index, &e))
    }
    fn maybe_int(&self, index: usize) -> Result<Option<i64>, LedgerError> {
        self.get(index).map_err(|e| rows::bad_column(index, &e))
    }
    fn flag(&self, index: usize) -> Result<bool, LedgerError> {
        self.get(index).map_err(|e| rows::bad_column(index, &e))
    }
}

impl Ledger for SqliteLedger {
    fn record_build(&self, build: &NewBuild) -> Result<BuildRecord, LedgerError> {
        self.with(|connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(query_error("recording a build"))?;
            transaction
                .execute(
                    "INSERT INTO builds (app, artifact, commit_id, dirty, recipe, author, host, started_at, finished_at, files, bytes, new_bytes, duration_ms, build_command_ms, ingest_ms, log, sandboxed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                    params![
                        build.app,
                        build.artifact.to_string(),
                        build.commit,
                        build.dirty,
                        build.recipe.to_string(),
                        build.author,
                        build.host,
                        build.started_at,
                        build.finished_at,
                        signed(build.files),
                        signed(build.bytes),
                        signed(build.new_bytes),
                        signed(build.duration_ms),
                        signed(build.build_command_ms),
                        signed(build.ingest_ms),
                        build.log,
                        build.sandboxed,
                    ],
                )
                .map_err(query_error("recording a build"))?;
            let seq = transaction.last_insert_rowid();
            transaction.commit().map_err(query_error("recording a build"))?;
            Ok(BuildRecord { seq, build: NewBuild { log: String::new(), ..build.clone() } })
        })
    }

    fn builds(&self, app: &str) -> Result<Vec<BuildRecord>, LedgerError> {
        self.with(|connection| {
            let mut statement = connection
                .prepare(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE app = ?1 ORDER BY seq DESC"))
                .map_err(query_error("listing builds"))?;
            let rows =
                statement.query_map([app], |row| Ok(rows::build_from(row))).map_err(query_error("listing builds"))?;
            let mut builds = Vec::new();
            for row in rows {
                builds.push(row.map_err(query_error("listing builds"))??);
            }
            Ok(builds)
        })
    }

    fn reusable_build(&self, app: &str, commit: &str, recipe: &Digest) -> Result<Option<BuildRecord>, LedgerError> {
        self.with(|connection| {
            connection
                .query_row(
                    &format!("SELECT {BUILD_COLUMNS} FROM builds WHERE app = ?1 AND commit_id = ?2 AND recipe = ?3 AND dirty = 0 ORDER BY seq DESC LIMIT 1"),
                    params![app, commit, recipe.to_string()],
                    |row| Ok(rows::build_from(row)),
                )
                .optional()
                .map_err(query_error("looking for an earlier build"))?
                .transpose()
        })
    }

    fn build_log(&self, seq: i64) -> Result<Option<String>, LedgerError> {
        self.with(|connection| {
            connection
                .query_row("SELECT log FROM builds WHERE seq = ?1", [seq], |row| row.get(0))
                .optional()
                .map_err(query_error("reading a build log"))
        })
    }

    fn append(&self, app: &str, env: &str, now: &str, decide: &mut Decide<'_>) -> Result<Append, LedgerError> {
        let appended = self.with(|connection| sqlite_release::append(connection, app, env, now, decide))?;
        self.appends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(appended)
    }

    // data_version has no notion of an environment: the watch wakes for
    // any commit, which the trait allows.
    fn watch(&self, _app: &str, _env: &str) -> Result<Box<dyn Watch + '_>, LedgerError> {
        Ok(Box::new(SqliteWatch { ledger: self, seen: self.version()? }))
    }

    fn env_state(&self, app: &str, env: &str) -> Result<EnvState, LedgerError> {
        self.with(|connection| sqlite_release::env_state(connection, app, env))
    }

    fn apps(&self) -> Result<Vec<String>, LedgerError> {
        self.with(|connection| sqlite_release::apps(connection))
    }

    fn environments(&self, app: &str) -> Result<Vec<String>, LedgerError> {
        self.with(|connection| sqlite_release::environments(connection, app))
    }

    fn releases(&self, app: &str, env: &str, limit: Option<u64>) -> Result<Vec<Release>, LedgerError> {
        self.with(|connection| sqlite_release::releases(connection, app, env, limit))
    }

    fn release(&self, app: &str, env: &str, number: u64) -> Result<Option<Release>, LedgerError> {
        self.with(|connection| sqlite_release::release(connection, app, env, number))
    }

    fn config_versions(&self, app: &str, env: &str) -> Result<Vec<ConfigVersion>, LedgerError> {
        self.with(|connection| sqlite_release::config_versions(connection, app, env, None))
    }

    fn current_config(&self, app: &str, env: &str) -> Result<Option<ConfigVersion>, LedgerError> {
        self.with(|connection| {
            let release = sqlite_release::releases(connection, app, env, Some(1))?.pop();
            sqlite_release::current_config(connection, app, env, release.as_ref())
        })
    }

    fn config_version(&self, id: &Digest) -> Result<Option<ConfigVersion>, LedgerError> {
        self.with(|connection| sqlite_release::config_version(connection, id))
    }

    fn set_run_state(&self, state: &RunState) -> Result<(), LedgerError> {
        self.with(|connection| sqlite_run::set_run_state(connection, state))
    }

    fn run_states(&self, app: &str, env: &str) -> Result<Vec<RunState>, LedgerError> {
        self.with(|connection| sqlite_run::run_states(connection, app, env))
    }

    fn set_formation(&self, app: &str, env: &str, record: &FormationRecord) -> Result<(), LedgerError> {
        self.with(|connection| sqlite_run::set_formation(connection, app, env, record))?;
        // A runner watching through this handle must see it, as an append.
        self.appends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn formation(&self, app: &str, env: &str) -> Result<Option<FormationRecord>, LedgerError> {
        self.with(|connection| sqlite_run::formation(connection, app, env))
    }

    fn request_restart(&self, app: &str, env: &str, author: &str, created_at: &str) -> Result<u64, LedgerError> {
        let seq = self.with(|connection| sqlite_run::request_restart(connection, app, env, author, created_at))?;
        // A runner watching through this handle must see it, as an append.
        self.appends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(seq)
    }

    fn last_restart(&self, app: &str, env: &str) -> Result<Option<RestartRecord>, LedgerError> {
        self.with(|connection| sqlite_run::last_restart(connection, app, env))
    }

    fn record_release_phase(&self, run: &ReleasePhaseRun) -> Result<(), LedgerError> {
        self.with(|connection| sqlite_run::record_release_phase(connection, run))
    }

    fn release_phase_runs(
        &self,
        app: &str,
        env: &str,
        numbers: std::ops::RangeInclusive<u64>,
    ) -> Result<ReleasePhaseRuns, LedgerError> {
        self.with(|connection| sqlite_run::release_phase_runs(connection, app, env, numbers))
    }

    fn record_push(&self, push: &NewPush) -> Result<u64, LedgerError> {
        self.with(|connection| {
            connection
                .execute(
                    "INSERT INTO pushes (app, artifact, commit_id, repository, tags, digest, author, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        push.app,
                        push.artifact.to_string(),
                        push.commit,
                        push.repository,
                        rows::to_json(&push.tags),
                        push.digest.to_string(),
                        push.author,
                        push.created_at
                    ],
                )
                .map_err(query_error("recording a push"))?;
            Ok(u64::try_from(connection.last_insert_rowid()).unwrap_or_default())
        })
    }

    fn pushes(&self, app: &str, artifact: Option<&Digest>) -> Result<Vec<PushRecord>, LedgerError> {
        let artifact = artifact.map(ToString::to_string);
        self.with(|connection| {
            let mut statement = connection
                .prepare(&format!(
                    "SELECT {} FROM pushes WHERE app = ?1 AND (?2 IS NULL OR artifact = ?2) ORDER BY seq DESC",
                    rows::PUSH_COLUMNS
                ))
                .map_err(query_error("reading the pushes"))?;
            let found = statement
                .query_map(params![app, artifact], |row| Ok(rows::push_from(row)))
                .map_err(query_error("reading the pushes"))?;
            found.map(|row| row.map_err(query_error("reading the pushes"))?).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(app: &str, commit: &str) -> NewBuild {
        NewBuild {
            app: app.to_owned(),
            artifact: Digest::of(commit.as_bytes()),
            commit: commit.to_owned(),
            dirty: false,
            sandboxed: true,
            recipe: Digest::of(b"recipe"),
            author: "dev@example.com".to_owned(),
            host: "build-1".to_owned(),
            started_at: "2026-11-27T12:00:00Z".to_owned(),
            finished_at: "2026-11-27T12:00:01Z".to_owned(),
            files: 3,
            bytes: 300,
            new_bytes: 100,
            duration_ms: 1000,
            build_command_ms: 600,
            ingest_ms: 300,
            log: "built\n".to_owned(),
        }
    }

    #[test]
    fn records_and_lists_builds_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(&dir.path().join("ledger.sqlite")).unwrap();
        let first = ledger.record_build(&sample("hello", "aaa")).unwrap();
        let second = ledger.record_build(&sample("hello", "bbb")).unwrap();
        ledger.record_build(&sample("other", "ccc")).unwrap();
        let builds = ledger.builds("hello").unwrap();
        assert_eq!(builds, vec![second.clone(), first.clone()]);
        assert_eq!(ledger.build_log(first.seq).unwrap().as_deref(), Some("built\n"));
        let found = ledger.reusable_build("hello", "aaa", &Digest::of(b"recipe")).unwrap();
        assert_eq!(found, Some(first));
        assert_eq!(ledger.reusable_build("hello", "aaa", &Digest::of(b"other recipe")).unwrap(), None);
    }

    #[test]
    fn the_database_refuses_update_and_delete_of_builds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger.record_build(&sample("hello", "aaa")).unwrap();
        drop(ledger);
        let connection = Connection::open(&path).unwrap();
        let update = connection.execute("UPDATE builds SET dirty = 1", []).unwrap_err();
        assert!(update.to_string().contains("builds are append-only: UPDATE is refused"), "{update}");
        let delete = connection.execute("DELETE FROM builds", []).unwrap_err();
        assert!(delete.to_string().contains("builds are append-only: DELETE is refused"), "{delete}");
        let count: i64 = connection.query_row("SELECT count(*) FROM builds", [], |row| row.get(0)).unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn the_database_refuses_update_and_delete_of_pushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let push = crate::model::NewPush {
            app: "hello".to_owned(),
            artifact: Digest::of(b"artifact"),
            commit: "c".repeat(40),
            repository: "registry.example.com/hello".to_owned(),
            tags: vec!["c".repeat(40)],
            digest: Digest::of(b"manifest"),
            author: "dev".to_owned(),
            created_at: "2026-01-01T00:00:00Z".to_owned(),
        };
        SqliteLedger::open(&path).unwrap().record_push(&push).unwrap();
        let connection = Connection::open(&path).unwrap();
        let update = connection.execute("UPDATE pushes SET digest = 'x'", []).unwrap_err();
        assert!(update.to_string().contains("pushes are append-only: UPDATE is refused"), "{update}");
        let delete = connection.execute("DELETE FROM pushes", []).unwrap_err();
        assert!(delete.to_string().contains("pushes are append-only: DELETE is refused"), "{delete}");
    }

    #[test]
    fn the_database_refuses_update_and_delete_of_formations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let record = crate::model::FormationRecord {
            formation: crate::model::Formation::parse(["web=2"]).unwrap(),
            author: "dev".to_owned(),
            created_at: "2026-01-01T00:00:00Z".to_owned(),
        };
        SqliteLedger::open(&path).unwrap().set_formation("hello", "production", &record).unwrap();
        let connection = Connection::open(&path).unwrap();
        let update = connection.execute("UPDATE formations SET counts = '{}'", []).unwrap_err();
        assert!(update.to_string().contains("formations are append-only: UPDATE is refused"), "{update}");
        let delete = connection.execute("DELETE FROM formations", []).unwrap_err();
        assert!(delete.to_string().contains("formations are append-only: DELETE is refused"), "{delete}");
    }

    #[test]
    fn a_watch_wakes_for_a_commit_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let runner = SqliteLedger::open(&path).unwrap();
        let mut watch = runner.watch("hello", "production").unwrap();
        assert!(!watch.wait(Duration::from_millis(30)).unwrap());
        // Another connection, as another process has.
        SqliteLedger::open(&path).unwrap().record_build(&sample("hello", "aaa")).unwrap();
        assert!(watch.wait(Duration::from_secs(5)).unwrap());
    }

    #[test]
    fn reopening_does_not_migrate_twice_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        SqliteLedger::open(&path).unwrap().record_build(&sample("hello", "aaa")).unwrap();
        assert_eq!(SqliteLedger::open(&path).unwrap().builds("hello").unwrap().len(), 1);
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let error = SqliteLedger::open(&path).unwrap_err().to_string();
        assert!(error.ends_with("has schema version 99, newer than this graven knows (10): upgrade graven"), "{error}");
    }
}

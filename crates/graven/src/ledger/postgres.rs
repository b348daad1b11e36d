//! The team ledger: one PostgreSQL database that CI, people and every
//! server share. The SQLite ledger's schema table for table, with the same
//! guarantees: migrations applied automatically under an advisory lock (two
//! processes starting at once migrate once); triggers that refuse UPDATE
//! and DELETE of the history; one short transaction per decision, under an
//! advisory lock per app and environment, so release numbers stay gapless
//! and unique with writers on many machines; and LISTEN/NOTIFY, so a runner
//! learns of a release at once. A dropped connection is opened again on the
//! next use. The URL's password never appears in any output.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator as _;
use postgres::{Client, GenericClient, NoTls};

use super::rows::{self, BUILD_COLUMNS, CONFIG_COLUMNS, RELEASE_COLUMNS, RUN_STATE_COLUMNS, to_json};
use super::{Append, Decide, EnvState, Ledger, LedgerError, Watch};
use crate::Digest;
use crate::model::{
    BuildRecord, ConfigVersion, FormationRecord, NewBuild, NewPush, PushRecord, Release, ReleasePhaseRun,
    ReleasePhaseRuns, RestartRecord, RunState,
};

/// The schema, one migration per file, applied in order.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_builds.sql"),
    include_str!("migrations/postgres/0002_releases.sql"),
    include_str!("migrations/postgres/0003_run_state.sql"),
    include_str!("migrations/postgres/0004_formations.sql"),
    include_str!("migrations/postgres/0005_release_host.sql"),
    include_str!("migrations/postgres/0006_build_sandbox.sql"),
    include_str!("migrations/postgres/0007_rollouts.sql"),
    include_str!("migrations/postgres/0008_pushes.sql"),
    include_str!("migrations/postgres/0009_cluster_state.sql"),
    include_str!("migrations/postgres/0010_release_phase_runs.sql"),
];

/// The advisory lock key under which migrations run ("graven" in ASCII).
const MIGRATION_LOCK: i64 = 0x0000_6772_6176_656e;

/// How long connecting may take before the ledger is unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel runners LISTEN on; the payload is `app/env`.
const CHANNEL: &str = "graven";

/// A ledger in a PostgreSQL database.
pub struct PostgresLedger {
    config: postgres::Config,
    location: String,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLedger").field("location", &self.location).finish_non_exhaustive()
    }
}

impl PostgresLedger {
    /// Connects to the database at `url` (`postgres://USER@HOST:PORT/DB`),
    /// with the password from the URL, `PGPASSWORD` or `~/.pgpass`, and
    /// brings its schema up to date.
    pub fn open(url: &str) -> Result<Self, LedgerError> {
        let location = crate::url::redacted(url);
        let mut config: postgres::Config = url.parse().map_err(|_| LedgerError::BadUrl {
            url: location.clone(),
            why: "it is not a PostgreSQL URL: use postgres://USER@HOST:PORT/DATABASE",
        })?;
        if config.get_password().is_none()
            && let Some(password) = password_for(&config)
        {
            config.password(password);
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("graven");
        }
        let ledger = Self { config, location, client: Mutex::new(None) };
        let found = ledger.with("opening it", migrate)?;
        if found > MIGRATIONS.len() {
            return Err(LedgerError::TooNew { location: ledger.location.clone(), found, known: MIGRATIONS.len() });
        }
        Ok(ledger)
    }

    fn connect(&self, doing: &'static str) -> Result<Client, LedgerError> {
        self.config.connect(NoTls).map_err(|e| classify(&self.location, doing, e))
    }

    /// Runs `f` on the connection, opening it (again) first if there is
    /// none or it was dropped.
    fn with<T>(
        &self,
        doing: &'static str,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, LedgerError> {
        let mut slot = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(self.connect(doing)?);
        }
        let client = slot.as_mut().expect("connected just above");
        f(client).map_err(|e| classify(&self.location, doing, e))
    }
}

/// Applies the migrations the database has not seen, in one transaction
/// under an advisory lock (checked again under it); returns the schema version it found (one newer
/// than this graven knows is left alone, for the caller to refuse).
fn migrate(client: &mut Client) -> Result<usize, postgres::Error> {
    // Nearly every open finds the schema up to date: one read, no lock, as
    // the SQLite ledger does. A missing table is a new database.
    match client.query_opt("SELECT version FROM graven_schema", &[]) {
        Ok(Some(row)) => {
            let version = usize::try_from(row.get::<_, i32>(0)).unwrap_or(usize::MAX);
            if version >= MIGRATIONS.len() {
                return Ok(version);
            }
        }
        Ok(None) => {}
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {}
        Err(e) => return Err(e),
    }
    let mut transaction = client.transaction()?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    transaction.batch_execute("CREATE TABLE IF NOT EXISTS graven_schema (version INTEGER NOT NULL)")?;
    let version: Option<i32> = transaction.query_opt("SELECT version FROM graven_schema", &[])?.map(|row| row.get(0));
    let version = usize::try_from(version.unwrap_or(0)).unwrap_or(usize::MAX);
    if version >= MIGRATIONS.len() {
        transaction.commit()?;
        return Ok(version);
    }
    for sql in &MIGRATIONS[version..] {
        transaction.batch_execute(sql)?;
    }
    let newest = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if version == 0 {
        transaction.execute("INSERT INTO graven_schema (version) VALUES ($1)", &[&newest])?;
    } else {
        transaction.execute("UPDATE graven_schema SET version = $1", &[&newest])?;
    }
    transaction.commit()?;
    Ok(version)
}

/// The ledger error for PostgreSQL's `error` while `doing`.
fn classify(location: &str, doing: &'static str, error: postgres::Error) -> LedgerError {
    let unavailable = |retryable, error: postgres::Error| LedgerError::Unavailable {
        location: location.to_owned(),
        doing,
        retryable,
        source: Box::new(error),
    };
    let Some(code) = error.code().cloned() else {
        // No SQLSTATE: the connection itself (refused, reset, timed out).
        return unavailable(true, error);
    };
    if code == SqlState::UNIQUE_VIOLATION || code == SqlState::T_R_SERIALIZATION_FAILURE {
        return LedgerError::Conflict { doing, source: Box::new(error) };
    }
    let not_without_a_change = [
        SqlState::INVALID_PASSWORD,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        SqlState::INVALID_CATALOG_NAME,
        SqlState::INSUFFICIENT_PRIVILEGE,
    ];
    if not_without_a_change.contains(&code) {
        return unavailable(false, error);
    }
    let passing = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CONNECTION_EXCEPTION,
        SqlState::CONNECTION_FAILURE,
        SqlState::DISK_FULL,
        SqlState::T_R_DEADLOCK_DETECTED,
    ];
    if passing.contains(&code) {
        return unavailable(true, error);
    }
    LedgerError::Query { doing, source: Box::new(error) }
}

/// The password for `config` from `PGPASSWORD`, else from the password
/// file (`PGPASSFILE`, else `~/.pgpass`), as libpq finds it.
fn password_for(config: &postgres::Config) -> Option<String> {
    use crate::env_vars::{HOME, PGPASSFILE, PGPASSWORD};
    if let Some(password) = std::env::var(PGPASSWORD).ok().filter(|p| !p.is_empty()) {
        return Some(password);
    }
    let file = std::env::var_os(PGPASSFILE)
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os(HOME).map(|home| std::path::Path::new(&home).join(".pgpass")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let database = config.get_dbname().unwrap_or_else(|| config.get_user().unwrap_or_default()).to_owned();
    let user = config.get_user().unwrap_or_default().to_owned();
    pgpass_lookup(&text, [&host, &port, &database, &user])
}

/// The password of the first line of a `.pgpass` file that matches
/// `host:port:database:user` (`*` matches anything; `\` escapes `:`).
fn pgpass_lookup(text: &str, wanted: [&str; 4]) -> Option<String> {
    for line in text.lines().filter(|line| !line.trim_start().starts_with('#')) {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() == 5 && fields[..4].iter().zip(wanted).all(|(have, want)| have == "*" || have == want) {
            return fields.pop();
        }
    }
    None
}

impl rows::Columns for postgres::Row {
    fn text(&self, index: usize) -> Result<String, LedgerError> {
        self.try_get(index).map_err(|e| rows::bad_column(index, &e))
    }
    fn maybe_text(&self, index: usize) -> Result<Option<String>, LedgerError> {
        self.try_get(index).map_err(|e| rows::bad_column(index, &e))
    }
    fn int(&self, index: usize) -> Result<i64, LedgerError> {
        self.try_get(index).map_err(|e| rows::bad_column(index, &e))
    }
    fn maybe_int(&self, index: usize) -> Result<Option<i64>, LedgerError> {
        self.try_get(index).map_err(|e| rows::bad_column(index, &e))
    }
    fn flag(&self, index: usize) -> Result<bool, LedgerError> {
        self.try_get(index).map_err(|e| rows::bad_column(index, &e))
    }
}

/// Rows of `query`, each parsed by `parse`: a failed query and a malformed
/// row are told apart by the outer and the inner result.
fn parsed<T>(
    client: &mut impl GenericClient,
    query: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    parse: impl Fn(&postgres::Row) -> Result<T, LedgerError>,
) -> Result<Result<Vec<T>, LedgerError>, postgres::Error> {
    Ok(client.query(query, params)?.iter().map(parse).collect())
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The environment as a decision is made on it.
fn env_state(
    client: &mut impl GenericClient,
    app: &str,
    env: &str,
) -> Result<Result<EnvState, LedgerError>, postgres::Error> {
    let exists = client.query_opt("SELECT 1 FROM environments WHERE app = $1 AND name = $2", &[&app, &env])?.is_some();
    let release = match parsed(
        client,
        &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE app = $1 AND env = $2 ORDER BY number DESC LIMIT 1"),
        &[&app, &env],
        rows::release_from,
    )? {
        Ok(mut releases) => releases.pop(),
        Err(e) => return Ok(Err(e)),
    };
    let config_query = match &release {
        Some(_) => format!(
            "SELECT {CONFIG_COLUMNS} FROM config_versions WHERE id = (SELECT config FROM releases WHERE app = $1 AND env = $2 ORDER BY number DESC LIMIT 1)"
        ),
        None => format!(
            "SELECT {CONFIG_COLUMNS} FROM config_versions WHERE app = $1 AND env = $2 ORDER BY number DESC LIMIT 1"
        ),
    };
    let config = match parsed(client, &config_query, &[&app, &env], rows::config_from)? {
        Ok(mut configs) => configs.pop(),
        Err(e) => return Ok(Err(e)),
    };
    let newest: Option<i64> =
        client.query_one("SELECT max(number) FROM config_versions WHERE app = $1 AND env = $2", &[&app, &env])?.get(0);
    let next_config_number = newest.map_or(1, |n| n.cast_unsigned() + 1);
    Ok(Ok(EnvState { exists, config, next_config_number, release }))
}

fn insert_config(client: &mut impl GenericClient, config: &ConfigVersion) -> Result<(), postgres::Error> {
    client.execute(
        &format!("INSERT INTO config_versions ({CONFIG_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
        &[
            &config.id.to_string(),
            &config.app,
            &config.env,
            &signed(config.number),
            &config.parent.map(|p| p.to_string()),
            &to_json(&config.vars),
            &to_json(&config.secret),
            &config.author,
            &config.created_at,
            &config.description,
        ],
    )?;
    Ok(())
}

fn insert_release(client: &mut impl GenericClient, release: &Release) -> Result<(), postgres::Error> {
    client.execute(
        &format!(
            "INSERT INTO releases ({RELEASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ),
        &[
            &release.id.to_string(),
            &release.app,
            &release.env,
            &signed(release.number),
            &release.kind.name(),
            &release.artifact.to_string(),
            &release.config.to_string(),
            &release.parent.map(|p| p.to_string()),
            &release.commit,
            &release.author,
            &release.created_at,
            &release.description,
            &release.rollback_of.map(signed),
            &release.promoted_from.as_ref().map(|p| p.env.clone()),
            &release.promoted_from.as_ref().map(|p| signed(p.number)),
            &release.host,
        ],
    )?;
    Ok(())
}

impl Ledger for PostgresLedger {
    fn record_build(&self, build: &NewBuild) -> Result<BuildRecord, LedgerError> {
        let seq: i64 = self.with("recording a build", |client| {
            let row = client.query_one(
                "INSERT INTO builds (app, artifact, commit_id, dirty, recipe, author, host, started_at, finished_at,
                                     files, bytes, new_bytes, duration_ms, build_command_ms, ingest_ms, log, sandboxed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING seq",
                &[
                    &build.app,
                    &build.artifact.to_string(),
                    &build.commit,
                    &build.dirty,
                    &build.recipe.to_string(),
                    &build.author,
                    &build.host,
                    &build.started_at,
                    &build.finished_at,
                    &signed(build.files),
                    &signed(build.bytes),
                    &signed(build.new_bytes),
                    &signed(build.duration_ms),
                    &signed(build.build_command_ms),
                    &signed(build.ingest_ms),
                    &build.log,
                    &build.sandboxed,
                ],
            )?;
            Ok(row.get(0))
        })?;
        Ok(BuildRecord { seq, build: NewBuild { log: String::new(), ..build.clone() } })
    }

    fn builds(&self, app: &str) -> Result<Vec<BuildRecord>, LedgerError> {
        self.with("listing builds", |client| {
            parsed(
                client,
                &format!("SELECT {BUILD_COLUMNS} FROM builds WHERE app = $1 ORDER BY seq DESC"),
                &[&app],
                rows::build_from,
            )
        })?
    }

    fn reusable_build(&self, app: &str, commit: &str, recipe: &Digest) -> Result<Option<BuildRecord>, LedgerError> {
        let recipe = recipe.to_string();
        let found = self.with("looking for an earlier build", |client| {
            parsed(
                client,
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM builds WHERE app = $1 AND commit_id = $2 AND recipe = $3 AND NOT dirty ORDER BY seq DESC LIMIT 1"
                ),
                &[&app, &commit, &recipe],
                rows::build_from,
            )
        })??;
        Ok(found.into_iter().next())
    }

    fn build_log(&self, seq: i64) -> Result<Option<String>, LedgerError> {
        self.with("reading a build log", |client| {
            Ok(client.query_opt("SELECT log FROM builds WHERE seq = $1", &[&seq])?.map(|row| row.get(0)))
        })
    }

    fn append(&self, app: &str, env: &str, now: &str, decide: &mut Decide<'_>) -> Result<Append, LedgerError> {
        const DOING: &str = "appending to the ledger";
        // The decision's error, if it refused: kept apart from the
        // database's, which the closure must return.
        let mut refused: Option<LedgerError> = None;
        let appended = self.with(DOING, |client| {
            let mut transaction = client.transaction()?;
            // One writer per environment at a time, on any machine; others
            // wait here rather than retry.
            transaction.execute("SELECT pg_advisory_xact_lock(hashtext($1 || '/' || $2))", &[&app, &env])?;
            let state = match env_state(&mut transaction, app, env)? {
                Ok(state) => state,
                Err(e) => {
                    refused = Some(e);
                    return Ok(None);
                }
            };
            let append = match decide(&state) {
                Ok(append) => append,
                Err(e) => {
                    refused = Some(e);
                    return Ok(None);
                }
            };
            if !state.exists {
                transaction.execute(
                    "INSERT INTO environments (app, name, created_at) VALUES ($1, $2, $3)",
                    &[&app, &env, &now],
                )?;
            }
            if let Some(config) = &append.config {
                insert_config(&mut transaction, config)?;
            }
            crate::fail_point::check("ledger-append-before-release");
            if let Some(release) = &append.release {
                insert_release(&mut transaction, release)?;
            }
            transaction.commit()?;
            Ok(Some(append))
        })?;
        match (appended, refused) {
            (Some(append), _) => Ok(append),
            (None, Some(error)) => Err(error),
            (None, None) => Err(LedgerError::Refused),
        }
    }

    fn env_state(&self, app: &str, env: &str) -> Result<EnvState, LedgerError> {
        self.with("reading an environment", |client| env_state(client, app, env))?
    }

    fn apps(&self) -> Result<Vec<String>, LedgerError> {
        self.with("listing apps", |client| {
            Ok(client
                .query("SELECT app FROM builds UNION SELECT app FROM environments ORDER BY 1", &[])?
                .iter()
                .map(|row| row.get(0))
                .collect())
        })
    }

    fn environments(&self, app: &str) -> Result<Vec<String>, LedgerError> {
        self.with("listing environments", |client| {
            Ok(client
                .query("SELECT name FROM environments WHERE app = $1 ORDER BY name", &[&app])?
                .iter()
                .map(|row| row.get(0))
                .collect())
        })
    }

    fn releases(&self, app: &str, env: &str, limit: Option<u64>) -> Result<Vec<Release>, LedgerError> {
        let limit = limit.map(signed);
        self.with("listing releases", |client| {
            parsed(
                client,
                &format!(
                    "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = $1 AND env = $2 ORDER BY number DESC LIMIT $3"
                ),
                &[&app, &env, &limit],
                rows::release_from,
            )
        })?
    }

    fn release(&self, app: &str, env: &str, number: u64) -> Result<Option<Release>, LedgerError> {
        let number = signed(number);
        let found = self.with("reading a release", |client| {
            parsed(
                client,
                &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE app = $1 AND env = $2 AND number = $3"),
                &[&app, &env, &number],
                rows::release_from,
            )
        })??;
        Ok(found.into_iter().next())
    }

    fn config_versions(&self, app: &str, env: &str) -> Result<Vec<ConfigVersion>, LedgerError> {
        self.with("listing config versions", |client| {
            parsed(
                client,
                &format!(
                    "SELECT {CONFIG_COLUMNS} FROM config_versions WHERE app = $1 AND env = $2 ORDER BY number DESC"
                ),
                &[&app, &env],
                rows::config_from,
            )
        })?
    }

    fn config_version(&self, id: &Digest) -> Result<Option<ConfigVersion>, LedgerError> {
        let id = id.to_string();
        let found = self.with("reading a config version", |client| {
            parsed(
                client,
                &format!("SELECT {CONFIG_COLUMNS} FROM config_versions WHERE id = $1"),
                &[&id],
                rows::config_from,
            )
        })??;
        Ok(found.into_iter().next())
    }

    fn watch(&self, app: &str, env: &str) -> Result<Box<dyn Watch + '_>, LedgerError> {
        let mut watch = PostgresWatch { ledger: self, client: None, payload: format!("{app}/{env}") };
        watch.listen()?;
        Ok(Box::new(watch))
    }

    fn set_run_state(&self, state: &RunState) -> Result<(), LedgerError> {
        self.with("recording a runner's state", |client| {
            client.execute(
                &format!(
                    "INSERT INTO run_state ({RUN_STATE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (app, env, host, home) DO UPDATE SET
                         runner_pid = excluded.runner_pid, state = excluded.state, running = excluded.running,
                         processes = excluded.processes, last_failure = excluded.last_failure,
                         updated_at = excluded.updated_at, rollout = excluded.rollout"
                ),
                &[
                    &state.app,
                    &state.env,
                    &state.host,
                    &state.home,
                    &i64::from(state.runner_pid),
                    &state.state.name(),
                    &state.running.as_ref().map(to_json),
                    &to_json(&state.processes),
                    &state.last_failure.as_ref().map(to_json),
                    &state.updated_at,
                    &state.rollout.as_ref().map(to_json),
                ],
            )?;
            Ok(())
        })
    }

    fn run_states(&self, app: &str, env: &str) -> Result<Vec<RunState>, LedgerError> {
        self.with("reading the runners' states", |client| {
            parsed(
                client,
                &format!(
                    "SELECT {RUN_STATE_COLUMNS} FROM run_state WHERE app = $1 AND env = $2 ORDER BY updated_at DESC, host, home"
                ),
                &[&app, &env],
                rows::run_state_from,
            )
        })?
    }

    fn set_formation(&self, app: &str, env: &str, record: &FormationRecord) -> Result<(), LedgerError> {
        self.with("recording a formation", |client| {
            client.execute(
                "INSERT INTO formations (app, env, counts, author, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&app, &env, &to_json(&record.formation), &record.author, &record.created_at],
            )?;
            Ok(())
        })
    }

    fn formation(&self, app: &str, env: &str) -> Result<Option<FormationRecord>, LedgerError> {
        let found = self.with("reading the formation", |client| {
            parsed(
                client,
                "SELECT counts, author, created_at FROM formations WHERE app = $1 AND env = $2 ORDER BY seq DESC LIMIT 1",
                &[&app, &env],
                |row| rows::formation_from(row, env),
            )
        })??;
        Ok(found.into_iter().next())
    }

    fn request_restart(&self, app: &str, env: &str, author: &str, created_at: &str) -> Result<u64, LedgerError> {
        self.with("recording a restart", |client| {
            let row = client.query_one(
                "INSERT INTO restarts (app, env, author, created_at) VALUES ($1, $2, $3, $4) RETURNING seq",
                &[&app, &env, &author, &created_at],
            )?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or_default())
        })
    }

    fn last_restart(&self, app: &str, env: &str) -> Result<Option<RestartRecord>, LedgerError> {
        let found = self.with("reading the restarts", |client| {
            parsed(
                client,
                "SELECT seq, author, created_at FROM restarts WHERE app = $1 AND env = $2 ORDER BY seq DESC LIMIT 1",
                &[&app, &env],
                rows::restart_from,
            )
        })??;
        Ok(found.into_iter().next())
    }

    fn record_release_phase(&self, run: &ReleasePhaseRun) -> Result<(), LedgerError> {
        self.with("recording a release phase", |client| {
            client.execute(
                "INSERT INTO release_phase_runs (app, env, number, host, home, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&run.app, &run.env, &signed(run.number), &run.host, &run.home, &run.started_at],
            )?;
            Ok(())
        })
    }

    fn release_phase_runs(
        &self,
        app: &str,
        env: &str,
        numbers: std::ops::RangeInclusive<u64>,
    ) -> Result<ReleasePhaseRuns, LedgerError> {
        let (first, last) = (signed(*numbers.start()), signed(*numbers.end()));
        let (started, recorded_from) = self.with("reading the release phase runs", |client| {
            let started = parsed(
                client,
                "SELECT DISTINCT number FROM release_phase_runs
                 WHERE app = $1 AND env = $2 AND number BETWEEN $3 AND $4",
                &[&app, &env, &first, &last],
                rows::release_phase_number_from,
            )?;
            let recorded_from = parsed(
                client,
                "SELECT number FROM release_phase_runs_recorded_from WHERE app = $1 AND env = $2",
                &[&app, &env],
                rows::release_phase_number_from,
            )?;
            Ok((started, recorded_from))
        })?;
        Ok(ReleasePhaseRuns {
            started: started?.into_iter().collect(),
            recorded_from: recorded_from?.into_iter().next().unwrap_or(1),
        })
    }

    fn record_push(&self, push: &NewPush) -> Result<u64, LedgerError> {
        self.with("recording a push", |client| {
            let row = client.query_one(
                "INSERT INTO pushes (app, artifact, commit_id, repository, tags, digest, author, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
                &[
                    &push.app,
                    &push.artifact.to_string(),
                    &push.commit,
                    &push.repository,
                    &rows::to_json(&push.tags),
                    &push.digest.to_string(),
                    &push.author,
                    &push.created_at,
                ],
            )?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or_default())
        })
    }

    fn pushes(&self, app: &str, artifact: Option<&Digest>) -> Result<Vec<PushRecord>, LedgerError> {
        let artifact = artifact.map(ToString::to_string);
        self.with("reading the pushes", |client| {
            parsed(
                client,
                &format!(
                    "SELECT {} FROM pushes WHERE app = $1 AND ($2::TEXT IS NULL OR artifact = $2) ORDER BY seq DESC",
                    rows::PUSH_COLUMNS
                ),
                &[&app, &artifact],
                rows::push_from,
            )
        })?
    }
}

/// A watch through LISTEN/NOTIFY, on a connection of its own, opened again
/// (and counted as a change, since one may have been missed) if it drops.
struct PostgresWatch<'a> {
    ledger: &'a PostgresLedger,
    client: Option<Client>,
    payload: String,
}

impl PostgresWatch<'_> {
    fn listen(&mut self) -> Result<(), LedgerError> {
        let mut client = self.ledger.connect("watching the ledger")?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(|e| classify(&self.ledger.location, "watching the ledger", e))?;
        self.client = Some(client);
        Ok(())
    }
}

impl Watch for PostgresWatch<'_> {
    fn wait(&mut self, timeout: Duration) -> Result<bool, LedgerError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.listen()?;
            return Ok(true);
        }
        let deadline = Instant::now() + timeout;
        let client = self.client.as_mut().expect("listening just above");
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut notifications = client.notifications();
            match notifications.timeout_iter(left).next() {
                Ok(Some(notification)) if notification.payload() == self.payload => break Ok(true),
                Ok(Some(_)) if Instant::now() < deadline => {}
                Ok(_) => break Ok(false),
                // The connection dropped: a change may have been missed.
                Err(_) => break Err(()),
            }
        };
        outcome.or_else(|()| {
            self.client = None;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let text = "# comment\nother:5432:db:user:wrong\n*:5432:graven:ci:s3cr\\:et\n";
        assert_eq!(pgpass_lookup(text, ["db.example", "5432", "graven", "ci"]).as_deref(), Some("s3cr:et"));
        assert_eq!(pgpass_lookup(text, ["db.example", "5433", "graven", "ci"]), None);
        assert_eq!(pgpass_lookup(text, ["other", "5432", "db", "user"]).as_deref(), Some("wrong"));
    }
}

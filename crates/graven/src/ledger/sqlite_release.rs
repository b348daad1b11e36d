//! The SQLite ledger's environments, config versions and releases.

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use super::rows::{self, CONFIG_COLUMNS, RELEASE_COLUMNS};
use super::sqlite::{query_error, signed};
use super::{Append, Decide, EnvState, LedgerError};
use crate::Digest;
use crate::model::{ConfigVersion, Release};

fn collect<T>(
    rows: impl Iterator<Item = rusqlite::Result<Result<T, LedgerError>>>,
    doing: &'static str,
) -> Result<Vec<T>, LedgerError> {
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(query_error(doing))??);
    }
    Ok(out)
}

pub(super) fn append(
    connection: &mut Connection,
    app: &str,
    env: &str,
    now: &str,
    decide: &mut Decide<'_>,
) -> Result<Append, LedgerError> {
    const DOING: &str = "appending to the ledger";
    // IMMEDIATE takes the write lock now, so the state read below cannot
    // change before the rows are inserted; waiting writers queue on the
    // busy timeout.
    let transaction =
        connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(query_error(DOING))?;
    let state = env_state(&transaction, app, env)?;
    let exists = state.exists;
    let append = decide(&state)?;
    if !exists {
        transaction
            .execute("INSERT INTO environments (app, name, created_at) VALUES (?1, ?2, ?3)", params![app, env, now])
            .map_err(query_error(DOING))?;
    }
    if let Some(config) = &append.config {
        insert_config(&transaction, config)?;
    }
    crate::fail_point::check("ledger-append-before-release");
    if let Some(release) = &append.release {
        insert_release(&transaction, release)?;
    }
    transaction.commit().map_err(query_error(DOING))?;
    Ok(append)
}

/// The environment as a decision to append is made on it.
pub(super) fn env_state(connection: &Connection, app: &str, env: &str) -> Result<EnvState, LedgerError> {
    const DOING: &str = "reading an environment";
    let exists = connection
        .query_row("SELECT 1 FROM environments WHERE app = ?1 AND name = ?2", params![app, env], |_| Ok(()))
        .optional()
        .map_err(query_error(DOING))?
        .is_some();
    let release = releases(connection, app, env, Some(1))?.pop();
    let config = current_config(connection, app, env, release.as_ref())?;
    let newest_config: Option<i64> = connection
        .query_row("SELECT max(number) FROM config_versions WHERE app = ?1 AND env = ?2", params![app, env], |row| {
            row.get(0)
        })
        .map_err(query_error(DOING))?;
    let next_config_number = newest_config.map_or(1, |n| n.cast_unsigned() + 1);
    Ok(EnvState { exists, config, next_config_number, release })
}

fn insert_config(connection: &Connection, config: &ConfigVersion) -> Result<(), LedgerError> {
    let vars = serde_json::to_string(&config.vars).expect("vars always serialise");
    let secret = serde_json::to_string(&config.secret).expect("secret keys always serialise");
    connection
        .execute(
            &format!("INSERT INTO config_versions ({CONFIG_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
            params![
                config.id.to_string(),
                config.app,
                config.env,
                signed(config.number),
                config.parent.map(|p| p.to_string()),
                vars,
                secret,
                config.author,
                config.created_at,
                config.description,
            ],
        )
        .map_err(query_error("recording a config version"))?;
    Ok(())
}

fn insert_release(connection: &Connection, release: &Release) -> Result<(), LedgerError> {
    connection
        .execute(
            &format!(
                "INSERT INTO releases ({RELEASE_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
            ),
            params![
                release.id.to_string(),
                release.app,
                release.env,
                signed(release.number),
                release.kind.name(),
                release.artifact.to_string(),
                release.config.to_string(),
                release.parent.map(|p| p.to_string()),
                release.commit,
                release.author,
                release.created_at,
                release.description,
                release.rollback_of.map(signed),
                release.promoted_from.as_ref().map(|p| p.env.clone()),
                release.promoted_from.as_ref().map(|p| signed(p.number)),
                release.host,
            ],
        )
        .map_err(query_error("recording a release"))?;
    Ok(())
}

pub(super) fn apps(connection: &Connection) -> Result<Vec<String>, LedgerError> {
    let mut statement = connection
        .prepare("SELECT app FROM builds UNION SELECT app FROM environments ORDER BY 1")
        .map_err(query_error("listing apps"))?;
    let rows = statement.query_map([], |row| row.get(0)).map_err(query_error("listing apps"))?;
    rows.collect::<Result<_, _>>().map_err(query_error("listing apps"))
}

pub(super) fn environments(connection: &Connection, app: &str) -> Result<Vec<String>, LedgerError> {
    let mut statement = connection
        .prepare("SELECT name FROM environments WHERE app = ?1 ORDER BY name")
        .map_err(query_error("listing environments"))?;
    let rows = statement.query_map([app], |row| row.get(0)).map_err(query_error("listing environments"))?;
    rows.collect::<Result<_, _>>().map_err(query_error("listing environments"))
}

pub(super) fn releases(
    connection: &Connection,
    app: &str,
    env: &str,
    limit: Option<u64>,
) -> Result<Vec<Release>, LedgerError> {
    const DOING: &str = "listing releases";
    let mut statement = connection
        .prepare(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 AND env = ?2 ORDER BY number DESC LIMIT ?3"
        ))
        .map_err(query_error(DOING))?;
    let limit = limit.map_or(-1, signed);
    let rows =
        statement.query_map(params![app, env, limit], |row| Ok(rows::release_from(row))).map_err(query_error(DOING))?;
    collect(rows, DOING)
}

pub(super) fn release(
    connection: &Connection,
    app: &str,
    env: &str,
    number: u64,
) -> Result<Option<Release>, LedgerError> {
    connection
        .query_row(
            &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 AND env = ?2 AND number = ?3"),
            params![app, env, signed(number)],
            |row| Ok(rows::release_from(row)),
        )
        .optional()
        .map_err(query_error("reading a release"))?
        .transpose()
}

/// `env`'s config versions, newest first, the newest `limit` if given.
pub(super) fn config_versions(
    connection: &Connection,
    app: &str,
    env: &str,
    limit: Option<u64>,
) -> Result<Vec<ConfigVersion>, LedgerError> {
    const DOING: &str = "listing config versions";
    let mut statement = connection
        .prepare(&format!(
            "SELECT {CONFIG_COLUMNS} FROM config_versions WHERE app = ?1 AND env = ?2 ORDER BY number DESC LIMIT ?3"
        ))
        .map_err(query_error(DOING))?;
    let limit = limit.map_or(-1, signed);
    let rows =
        statement.query_map(params![app, env, limit], |row| Ok(rows::config_from(row))).map_err(query_error(DOING))?;
    collect(rows, DOING)
}

/// The config of `env` now: that of `release`, its current release, else
/// its newest config version (set before the first release), else none.
pub(super) fn current_config(
    connection: &Connection,
    app: &str,
    env: &str,
    release: Option<&Release>,
) -> Result<Option<ConfigVersion>, LedgerError> {
    match release {
        Some(release) => config_version(connection, &release.config),
        None => Ok(config_versions(connection, app, env, Some(1))?.pop()),
    }
}

pub(super) fn config_version(connection: &Connection, id: &Digest) -> Result<Option<ConfigVersion>, LedgerError> {
    connection
        .query_row(&format!("SELECT {CONFIG_COLUMNS} FROM config_versions WHERE id = ?1"), [id.to_string()], |row| {
            Ok(rows::config_from(row))
        })
        .optional()
        .map_err(query_error("reading a config version"))?
        .transpose()
}

//! The PostgreSQL ledger beyond the conformance suite: the database itself
//! refuses to rewrite history, tampering is found, and every way of not
//! reaching the database is a clear, typed error within seconds that never
//! shows the password.

use std::time::{Duration, Instant};

use graven::ledger::{Ledger as _, LedgerError, PostgresLedger};

use graven_testutils::postgres::{fresh_database, server};

use crate::ledger_conformance::deploy;

/// A ledger in a fresh database, with a raw connection to the same one.
fn ledger() -> Option<(PostgresLedger, postgres::Client, String)> {
    let server = server()?;
    let url = fresh_database(&server);
    let ledger = PostgresLedger::open(&url).unwrap();
    let raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    Some((ledger, raw, url))
}

#[test]
fn the_database_refuses_to_rewrite_history_and_tampering_is_found() {
    let Some((ledger, mut raw, _)) = ledger() else { return };
    deploy(&ledger, "production", b"a");
    deploy(&ledger, "production", b"b");
    // A row in every table: row triggers fire only for rows.
    raw.batch_execute(
        "INSERT INTO formations (app, env, counts, author, created_at) VALUES ('app', 'production', '{}', 'x', 'y');
         INSERT INTO builds (app, artifact, commit_id, dirty, recipe, author, host, started_at, finished_at, files,
                             bytes, new_bytes, duration_ms, build_command_ms, ingest_ms, log)
         VALUES ('other', 'a', 'c', false, 'r', 'x', 'h', 's', 'f', 0, 0, 0, 0, 0, 0, '');
         INSERT INTO pushes (app, artifact, commit_id, repository, tags, digest, author, created_at)
         VALUES ('app', 'a', 'c', 'r/app', '[]', 'd', 'x', 'y')",
    )
    .unwrap();
    for (table, noun) in [
        ("releases", "releases"),
        ("config_versions", "config versions"),
        ("environments", "environments"),
        ("builds", "builds"),
        ("formations", "formations"),
        ("pushes", "pushes"),
    ] {
        let check = |error: postgres::Error, op: &str| {
            let text = error.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
            assert_eq!(text, format!("{noun} are append-only: {op} is refused"), "{table}");
        };
        check(raw.execute(&format!("UPDATE {table} SET app = app"), &[]).unwrap_err(), "UPDATE");
        check(raw.execute(&format!("DELETE FROM {table}"), &[]).unwrap_err(), "DELETE");
    }
    // Whoever can drop the trigger can edit a row: the hash chain says so.
    raw.batch_execute(
        "DROP TRIGGER releases_are_append_only ON releases; UPDATE releases SET description = 'edited' WHERE number = 1",
    )
    .unwrap();
    let store = graven::store::LocalStore::open(&tempfile::tempdir().unwrap().path().join("store")).unwrap();
    let report = graven::release::chain::verify_ledger(&ledger, &store, "app").unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, graven::release::chain::ChainProblem::ReleaseEdited { number: 1, .. })),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_watch_wakes_for_a_release_made_by_another_machine() {
    let Some((runner, _, url)) = ledger() else { return };
    let mut watch = runner.watch("app", "production").unwrap();
    assert!(!watch.wait(Duration::from_millis(50)).unwrap());
    let other = PostgresLedger::open(&url).unwrap();
    deploy(&other, "staging", b"elsewhere");
    assert!(!watch.wait(Duration::from_millis(200)).unwrap(), "another environment's release is not this one's");
    deploy(&other, "production", b"a");
    assert!(watch.wait(Duration::from_secs(5)).unwrap(), "NOTIFY did not wake the watch");
}

/// Opens `url`, which must fail within five seconds as unavailable.
fn unavailable(url: &str) -> (bool, String) {
    let start = Instant::now();
    let error = PostgresLedger::open(url).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(6), "took {:?}", start.elapsed());
    let text = graven::error_chain(&error);
    match error {
        LedgerError::Unavailable { retryable, .. } => (retryable, text),
        other => panic!("not unavailable: {other:?}"),
    }
}

#[test]
fn unreachable_wrong_credentials_and_a_missing_database_are_clear_and_quick() {
    let Some(server) = server() else { return };
    let (_, host_and_database) = server.split_once('@').unwrap();
    let (host, _) = host_and_database.split_once('/').unwrap();

    let (retryable, text) = unavailable(&format!("postgres://postgres:wrong-horse@{host}/postgres"));
    assert!(!retryable, "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("wrong-horse"), "the password was shown: {text}");

    let url = fresh_database(&server);
    let (base, _) = url.rsplit_once('/').unwrap();
    let (retryable, text) = unavailable(&format!("{base}/no_such_database"));
    assert!(!retryable, "{text}");
    assert!(text.contains("\"no_such_database\" does not exist"), "{text}");

    // Nothing listens: a free port on loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (retryable, text) = unavailable(&format!("postgres://graven:secret@127.0.0.1:{port}/graven"));
    assert!(retryable, "{text}");
    assert!(text.contains(&format!("postgres://graven@127.0.0.1:{port}/graven")), "{text}");
    assert!(!text.contains("secret"), "the password was shown: {text}");
}

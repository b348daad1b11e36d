//! Both ledgers under concurrent writers, each with its own connection, as
//! separate `graven` processes on one machine or many would have.

use std::collections::BTreeSet;
use std::sync::Barrier;

use graven::Digest;
use graven::ledger::{Ledger, SqliteLedger};
use graven::model::NewBuild;

fn build(thread: usize, n: usize) -> NewBuild {
    let commit = format!("{thread:02}{n:038}");
    NewBuild {
        app: "test-app".to_owned(),
        artifact: Digest::of(commit.as_bytes()),
        commit,
        dirty: false,
        sandboxed: true,
        recipe: Digest::of(b"recipe"),
        author: format!("writer-{thread}@example.com"),
        host: "test-host".to_owned(),
        started_at: "2026-01-01T00:00:00Z".to_owned(),
        finished_at: "2026-01-01T00:00:01Z".to_owned(),
        files: 1,
        bytes: 2,
        new_bytes: 3,
        duration_ms: 4,
        build_command_ms: 5,
        ingest_ms: 6,
        log: format!("build {n} of writer {thread}\n"),
    }
}

/// Writers, each with a connection of its own as separate processes (or
/// machines) have, all opening the ledger at once and then recording
/// builds and appending releases to one environment: none is refused,
/// every build gets its own sequence number, and releases are numbered
/// without a gap or a duplicate, and chained.
fn concurrent_writers_are_never_refused(open: &(dyn Fn() -> Box<dyn Ledger> + Sync)) {
    const WRITERS: usize = 8;
    const BUILDS: usize = 10;
    const RELEASES: usize = 5;
    let barrier = Barrier::new(WRITERS);
    let seqs: Vec<i64> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|thread| {
                let barrier = &barrier;
                scope.spawn(move || {
                    // All open a ledger that does not exist yet at once: they
                    // race to create and migrate it, then to append.
                    barrier.wait();
                    let ledger = open();
                    let seqs = (0..BUILDS)
                        .map(|n| {
                            ledger
                                .record_build(&build(thread, n))
                                .unwrap_or_else(|e| panic!("writer {thread}: {e}"))
                                .seq
                        })
                        .collect::<Vec<_>>();
                    for n in 0..RELEASES {
                        crate::ledger_conformance::deploy(&*ledger, "production", format!("{thread}-{n}").as_bytes());
                    }
                    seqs
                })
            })
            .collect();
        writers.into_iter().flat_map(|w| w.join().expect("a writer panicked")).collect()
    });
    let unique: BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), WRITERS * BUILDS, "two builds got the same seq");

    let ledger = open();
    let builds = ledger.builds("test-app").unwrap();
    assert_eq!(builds.len(), WRITERS * BUILDS);
    assert!(builds.windows(2).all(|pair| pair[0].seq > pair[1].seq), "builds are not newest first");
    let first = builds.last().unwrap();
    assert_eq!(ledger.build_log(first.seq).unwrap().as_deref(), Some(build_log_of(&first.build).as_str()));

    let releases = ledger.releases("app", "production", None).unwrap();
    let numbers: Vec<u64> = releases.iter().rev().map(|r| r.number).collect();
    assert_eq!(numbers, (1..=(WRITERS * RELEASES) as u64).collect::<Vec<_>>(), "gaps or duplicates");
    let report = graven::release::chain::verify_ledger(
        &*ledger,
        &graven::store::LocalStore::open(&tempfile::tempdir().unwrap().path().join("s")).unwrap(),
        "app",
    )
    .unwrap();
    assert!(
        report.problems.iter().all(|p| matches!(
            p,
            graven::release::chain::ChainProblem::BuildMissing { .. }
                | graven::release::chain::ChainProblem::ArtifactMissing { .. }
        )),
        "the chain is broken: {:?}",
        report.problems
    );
}

#[test]
fn concurrent_writers_of_a_sqlite_ledger_are_never_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    concurrent_writers_are_never_refused(&|| Box::new(SqliteLedger::open(&path).unwrap()));
}

#[test]
fn concurrent_writers_of_a_postgres_ledger_on_many_machines_are_never_refused() {
    let Some(server) = graven_testutils::postgres::server() else { return };
    let url = graven_testutils::postgres::fresh_database(&server);
    concurrent_writers_are_never_refused(&|| Box::new(graven::ledger::PostgresLedger::open(&url).unwrap()));
}

fn build_log_of(build: &NewBuild) -> String {
    let thread: usize = build.commit[..2].parse().unwrap();
    let n: usize = build.commit[2..].parse().unwrap();
    format!("build {n} of writer {thread}\n")
}

/// Makes releases in a ledger, takes it back to the schema before release
/// phase runs were recorded (as an older graven left it), and opens it
/// again: the releases made before are the ones whose runs are unknown.
fn release_phase_runs_of_older_releases_are_unknown(open: &dyn Fn() -> Box<dyn Ledger>, back_to_schema_9: &dyn Fn()) {
    let ledger = open();
    for n in 1..=2 {
        crate::ledger_conformance::deploy(&*ledger, "production", format!("artifact {n}").as_bytes());
    }
    crate::ledger_conformance::deploy(&*ledger, "staging", b"artifact 1");
    drop(ledger);
    back_to_schema_9();
    let ledger = open();
    let production = ledger.release_phase_runs("app", "production", 1..=2).unwrap();
    assert_eq!(production.recorded_from, 3, "v1 and v2 were made before");
    assert!(!production.knows(2) && production.knows(3));
    assert_eq!(ledger.release_phase_runs("app", "staging", 1..=1).unwrap().recorded_from, 2);
    assert_eq!(ledger.release_phase_runs("app", "review", 1..=1).unwrap().recorded_from, 1, "a new environment");
    // An older release rolled out by an upgraded runner is known to have run.
    ledger.record_release_phase(&crate::ledger_conformance::phase_run("production", 1, "web-1")).unwrap();
    let production = ledger.release_phase_runs("app", "production", 1..=2).unwrap();
    assert!(production.knows(1) && !production.knows(2));
}

#[test]
fn a_sqlite_ledger_from_before_release_phase_runs_says_which_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    release_phase_runs_of_older_releases_are_unknown(&|| Box::new(SqliteLedger::open(&path).unwrap()), &|| {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "DROP TABLE release_phase_runs; DROP TABLE release_phase_runs_recorded_from; PRAGMA user_version = 9",
            )
            .unwrap();
    });
    let connection = rusqlite::Connection::open(&path).unwrap();
    let error = connection
        .execute("INSERT INTO release_phase_runs_recorded_from (app, env, number) VALUES ('app', 'review', 9)", [])
        .unwrap_err();
    assert!(error.to_string().contains("INSERT is refused"), "{error}");
    let error = connection.execute("DELETE FROM release_phase_runs", []).unwrap_err();
    assert!(error.to_string().contains("release phase runs are append-only"), "{error}");
}

#[test]
fn a_postgres_ledger_from_before_release_phase_runs_says_which_are_unknown() {
    let Some(server) = graven_testutils::postgres::server() else { return };
    let url = graven_testutils::postgres::fresh_database(&server);
    release_phase_runs_of_older_releases_are_unknown(
        &|| Box::new(graven::ledger::PostgresLedger::open(&url).unwrap()),
        &|| {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client
                .batch_execute(
                    "DROP TABLE release_phase_runs; DROP TABLE release_phase_runs_recorded_from;
                     UPDATE graven_schema SET version = 9",
                )
                .unwrap();
        },
    );
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let error = client
        .execute("INSERT INTO release_phase_runs_recorded_from (app, env, number) VALUES ('app', 'review', 9)", &[])
        .unwrap_err();
    assert!(format!("{error:?}").contains("INSERT is refused"), "{error:?}");
}

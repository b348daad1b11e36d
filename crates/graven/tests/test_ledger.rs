//! The SQLite ledger under concurrent writers, each with its own connection,
//! as separate `graven build` processes would have.

use std::collections::BTreeSet;
use std::sync::Barrier;

use graven::Digest;
use graven::ledger::{Ledger as _, SqliteLedger};
use graven::model::NewBuild;

fn build(thread: usize, n: usize) -> NewBuild {
    let commit = format!("{thread:02}{n:038}");
    NewBuild {
        app: "test-app".to_owned(),
        artifact: Digest::of(commit.as_bytes()),
        commit,
        dirty: false,
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

#[test]
fn concurrent_writers_each_with_a_connection_are_never_refused() {
    const WRITERS: usize = 8;
    const BUILDS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let barrier = Barrier::new(WRITERS);
    let seqs: Vec<i64> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|thread| {
                let (barrier, path) = (&barrier, &path);
                scope.spawn(move || {
                    // All open a ledger that does not exist yet at once: they
                    // race to create and migrate it, then to append.
                    barrier.wait();
                    let ledger = SqliteLedger::open(path).unwrap_or_else(|e| panic!("writer {thread}: {e}"));
                    (0..BUILDS)
                        .map(|n| {
                            ledger
                                .record_build(&build(thread, n))
                                .unwrap_or_else(|e| panic!("writer {thread}: {e}"))
                                .seq
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers.into_iter().flat_map(|w| w.join().expect("a writer panicked")).collect()
    });
    let unique: BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), WRITERS * BUILDS, "two builds got the same seq");

    let ledger = SqliteLedger::open(&path).unwrap();
    let builds = ledger.builds("test-app").unwrap();
    assert_eq!(builds.len(), WRITERS * BUILDS);
    assert!(builds.windows(2).all(|pair| pair[0].seq > pair[1].seq), "builds are not newest first");
    let first = builds.last().unwrap();
    assert_eq!(ledger.build_log(first.seq).unwrap().as_deref(), Some(build_log_of(&first.build).as_str()));
}

fn build_log_of(build: &NewBuild) -> String {
    let thread: usize = build.commit[..2].parse().unwrap();
    let n: usize = build.commit[2..].parse().unwrap();
    format!("build {n} of writer {thread}\n")
}

//! How soon a runner's watch wakes after another connection changes its
//! environment: on PostgreSQL, through LISTEN/NOTIFY. Used by
//! `bench/team.sh`; not a test, since it measures time.
//!
//! Usage: notify_latency LEDGER_URL [ROUNDS]

use std::time::{Duration, Instant};

use graven::home::Home;
use graven::ledger::{Access, open_ledger};
use graven::model::{Formation, FormationRecord};

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: notify_latency LEDGER_URL [ROUNDS]");
    let rounds: usize = args.next().map_or(50, |n| n.parse().expect("ROUNDS is a number"));
    let home = Home::new(std::env::temp_dir().join("graven-notify-latency"));
    let writer = open_ledger(Some(&url), &home, Access::ReadWrite).expect("open the ledger");
    let reader = open_ledger(Some(&url), &home, Access::ReadWrite).expect("open the ledger again");
    let mut watch = reader.watch("bench", "notify").expect("watch the environment");
    // Drain whatever an earlier run left.
    while watch.wait(Duration::from_millis(200)).expect("wait") {}
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let formation = Formation::parse([format!("web={}", round % 5 + 1).as_str()]).expect("a formation");
        let record =
            FormationRecord { formation, author: "bench".to_owned(), created_at: "2026-01-01T00:00:00Z".to_owned() };
        let started = Instant::now();
        writer.set_formation("bench", "notify", &record).expect("change the formation");
        let woke = watch.wait(Duration::from_secs(5)).expect("wait");
        assert!(woke, "the watch slept through a change");
        samples.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "watch woken after a change by another connection, {rounds} rounds: median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        ms(samples[rounds / 2]),
        ms(samples[rounds * 95 / 100]),
        ms(samples[rounds - 1])
    );
}

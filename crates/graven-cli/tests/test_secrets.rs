//! Secrets never on a command line: `config set --secret KEY` reads the
//! value from standard input, so that no `ps` sees it, even while graven
//! waits for the ledger's lock.

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Graven, shell_app};

fn app() -> (graven_testutils::TestRepo, Graven) {
    let repo = shell_app("");
    let graven = Graven::in_repo(&repo);
    (repo, graven)
}

/// Runs `graven args` with `input` on standard input.
fn run_with_input(graven: &Graven, args: &[&str], input: &str) -> crate::common::Run {
    let mut child =
        graven.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    graven.finish(&child.wait_with_output().unwrap())
}

fn revealed(graven: &Graven) -> serde_json::Value {
    graven.run(["config", "--env", "production", "--reveal", "--json"]).json()
}

#[test]
fn a_bare_secret_key_reads_its_value_from_standard_input() {
    let (_repo, graven) = app();
    let run = run_with_input(&graven, &["config", "set", "--secret", "TOKEN", "--env", "production"], "s3cr3t-value\n");
    assert_eq!(run.code, 0, "{run}");
    assert!(!run.to_string().contains("s3cr3t-value"), "{run}");
    let config = revealed(&graven);
    assert_eq!(config["vars"]["TOKEN"], "s3cr3t-value");
    assert_eq!(config["secret"], serde_json::json!(["TOKEN"]));
    let masked = graven.run(["config", "--env", "production", "--json"]).json();
    assert_eq!(masked["vars"]["TOKEN"], "••••••");

    // Several keys: one line each, in order; pairs with '=' read nothing.
    let run = run_with_input(
        &graven,
        &["config", "set", "--secret", "A", "PLAIN=given", "B", "--env", "production"],
        "first\r\nsecond\n",
    );
    assert_eq!(run.code, 0, "{run}");
    let config = revealed(&graven);
    assert_eq!((&config["vars"]["A"], &config["vars"]["B"]), (&"first".into(), &"second".into()));
    assert_eq!(config["vars"]["PLAIN"], "given");
}

#[test]
fn standard_input_that_ends_early_changes_nothing() {
    let (_repo, graven) = app();
    let run = run_with_input(&graven, &["config", "set", "--secret", "A", "B", "--env", "production"], "only-one\n");
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("standard input ended before the value of B"), "{run}");
    assert!(!run.to_string().contains("only-one"), "{run}");
    assert_eq!(graven.run(["config", "--env", "production", "--json"]).json()["vars"], serde_json::json!({}));
}

/// Every process's command line on this machine, as `ps` shows it.
fn all_command_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            lines.push(String::from_utf8_lossy(&bytes).replace('\0', " "));
        }
    }
    lines
}

#[test]
fn no_process_shows_the_secret_while_graven_waits_for_the_ledgers_lock() {
    let (_repo, graven) = app();
    // The ledger exists, then another writer holds its write lock.
    assert_eq!(graven.run(["config", "set", "FIRST=1", "--env", "production"]).code, 0);
    let ledger = rusqlite::Connection::open(graven.cwd().join(".graven/ledger.sqlite")).unwrap();
    ledger.execute_batch("BEGIN IMMEDIATE").unwrap();

    let secret = "never-on-a-command-line-4242";
    let mut child = graven
        .command(["config", "set", "--secret", "TOKEN", "--env", "production"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{secret}\n").as_bytes()).unwrap();
    // While it waits (for up to its busy timeout), scan every command line.
    let start = Instant::now();
    let mut scans = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        assert!(child.try_wait().unwrap().is_none(), "graven did not wait for the lock");
        let leaked: Vec<String> = all_command_lines().into_iter().filter(|line| line.contains(secret)).collect();
        assert!(leaked.is_empty(), "a command line shows the secret: {leaked:?}");
        scans += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(scans > 10);
    ledger.execute_batch("ROLLBACK").unwrap();
    let run = graven.finish(&child.wait_with_output().unwrap());
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(revealed(&graven)["vars"]["TOKEN"], secret);
}

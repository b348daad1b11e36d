//! `graven logs`: the last lines of an environment's log across rotated
//! files, one process type's or one process's, and following new lines.
//! The logs are written here as `graven run` writes them.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use graven::run::logs::LogSink;

use crate::common::{Graven, shell_app};

/// How long a test waits for `graven logs -f` to print a line.
const WAIT: Duration = Duration::from_secs(30);

/// The rotated file, then the current one, as a runner would have left them.
const ROTATED: &str = "\
09:59:58 web.1 | starting on port 5000
09:59:58 worker.1 | waiting for jobs
09:59:59 web.2 | starting on port 5001
";
const CURRENT: &str = "\
10:00:00 web.1 | GET / 200
10:00:01 web.2 | GET /healthz 200
10:00:02 worker.1 | job 17 done
10:00:03 web.1 | GET /about 404
";

/// Writes the production log of the repository at `repo`; returns its run
/// directory.
fn write_logs(repo: &Path) -> PathBuf {
    let dir = repo.join(".graven/run/shell/production");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("graven.log.1"), ROTATED).unwrap();
    std::fs::write(dir.join("graven.log"), CURRENT).unwrap();
    dir
}

#[test]
fn logs_prints_the_last_lines_across_rotated_files() {
    let repo = shell_app("");
    write_logs(repo.path());
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["logs", "--env", "production"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        09:59:58 web.1 | starting on port 5000
        09:59:58 worker.1 | waiting for jobs
        09:59:59 web.2 | starting on port 5001
        10:00:00 web.1 | GET / 200
        10:00:01 web.2 | GET /healthz 200
        10:00:02 worker.1 | job 17 done
        10:00:03 web.1 | GET /about 404
        ----- stderr -----
        ");
    let run = graven.run(["logs", "--env", "production", "-n", "5"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        09:59:59 web.2 | starting on port 5001
        10:00:00 web.1 | GET / 200
        10:00:01 web.2 | GET /healthz 200
        10:00:02 worker.1 | job 17 done
        10:00:03 web.1 | GET /about 404
        ----- stderr -----
        ");
    let run = graven.run(["logs", "--env", "production", "--lines", "0"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        ----- stderr -----
        ");
}

#[test]
fn logs_shows_one_process_type_or_one_process() {
    let repo = shell_app("");
    write_logs(repo.path());
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["logs", "--env", "production", "web"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        09:59:58 web.1 | starting on port 5000
        09:59:59 web.2 | starting on port 5001
        10:00:00 web.1 | GET / 200
        10:00:01 web.2 | GET /healthz 200
        10:00:03 web.1 | GET /about 404
        ----- stderr -----
        ");
    let run = graven.run(["logs", "--env", "production", "-n", "1", "web.2"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        10:00:01 web.2 | GET /healthz 200
        ----- stderr -----
        ");
    let run = graven.run(["logs", "--env", "production", "clock"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        ----- stderr -----
        no lines of clock in the logs of production
        ");
}

#[test]
fn logs_needs_only_the_home() {
    let repo = shell_app("");
    write_logs(repo.path());
    let elsewhere = tempfile::tempdir().unwrap();
    let graven = Graven::in_dir(elsewhere.path()).env("GRAVEN_HOME", repo.path().join(".graven"));
    let run = graven.run(["logs", "--app", "shell", "--env", "production", "-n", "1"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        10:00:03 web.1 | GET /about 404
        ----- stderr -----
        ");
}

#[test]
fn no_logs_yet_is_a_note() {
    let repo = shell_app("");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["logs", "--env", "staging"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        ----- stderr -----
        no logs for staging yet: graven run --env staging writes them
        ");
}

#[test]
fn a_bad_env_or_process_is_bad_input() {
    let repo = shell_app("");
    write_logs(repo.path());
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["logs"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: no environment given
        hint: pass --env NAME (for example --env production), or set GRAVEN_ENV
        ");
    let run = graven.run(["logs", "--env", "Production"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: 'Production' is not a valid environment name: use a lowercase letter, then up to 62 of a-z, 0-9 and '-'
        ");
    let run = graven.run(["logs", "--env", "production", "web 1"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: 'web 1' is not a process type or a process
        hint: give a process type of the Procfile, like web, or one process, like web.1
        ");
    let run = graven.run(["logs", "--env", "production", "-n", "all"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: invalid value 'all' for '--lines <N>': invalid digit found in string

        For more information, try '--help'.
        ");
}

#[test]
fn follow_prints_new_lines_across_a_rotation() {
    let repo = shell_app("");
    let dir = write_logs(repo.path());
    let graven = Graven::in_repo(&repo);
    let mut child = graven
        .command(["logs", "--env", "production", "--follow", "-n", "2", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start graven logs");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut next = || {
        receiver.recv_timeout(WAIT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("graven logs -f printed nothing within {WAIT:?}")
        })
    };
    assert_eq!(next(), "10:00:01 web.2 | GET /healthz 200");
    assert_eq!(next(), "10:00:03 web.1 | GET /about 404");

    // The current file is past this limit already: the first line rotates it.
    let sink = LogSink::open(&dir).unwrap().with_limits(200, 5);
    let mut expected = Vec::new();
    for i in 0..6 {
        sink.line("worker.1", &format!("job {i}"));
        expected.push(sink.line("web.1", &format!("GET /{i} 200")));
    }
    assert!(dir.join("graven.log.2").exists(), "the log rotated");
    for line in expected {
        assert_eq!(next(), line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

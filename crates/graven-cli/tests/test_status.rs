//! `graven status`: the desired release against what the runner reports in
//! the ledger. The runner's reports are written here straight into the
//! ledger, the way `graven run` writes them, so each state can be set up
//! exactly.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use graven::ledger::{Ledger as _, SqliteLedger};
use graven::model::{Failure, ProcessState, RunState, RunningRelease};
use graven_testutils::TestRepo;

use crate::common::{Graven, shell_app};

/// A shell app, built and released to production as v1.
fn released() -> (TestRepo, Graven) {
    let repo = shell_app("[build]\ncommand = \"echo built > out.txt\"\n");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let run = graven.run(["release", "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");
    let host = this_host();
    let graven = graven.label(&host, "[HOST]");
    (repo, graven)
}

fn this_host() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// `seconds` ago, RFC 3339.
fn ago(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(seconds)).to_string()
}

fn home(repo: &TestRepo) -> PathBuf {
    repo.path().join(".graven")
}

/// A report of a runner on this machine, in this home, alive (its pid is
/// this test's), running release `number` of production for 2 hours with
/// one web process up.
fn report(repo: &TestRepo, graven: &Graven, number: u64) -> RunState {
    let release = graven.run(["release", "show", &format!("v{number}"), "--env", "production", "--json"]).json();
    let id = release["id"].as_str().unwrap().parse().unwrap();
    RunState {
        app: "shell".to_owned(),
        env: "production".to_owned(),
        host: this_host(),
        home: home(repo).display().to_string(),
        runner_pid: std::process::id(),
        state: graven::model::RunnerState::Running,
        running: Some(RunningRelease {
            id,
            number,
            since: ago(7200),
            read_only_app: true,
            user: None,
            formation: graven::model::Formation::default(),
            restart: 0,
        }),
        processes: vec![ProcessState {
            name: "web.1".to_owned(),
            kind: "web".to_owned(),
            pid: Some(4242),
            state: graven::model::ProcessStatus::Up,
            restarts: 0,
            started_at: Some(ago(7200)),
        }],
        last_failure: None,
        rollout: None,
        updated_at: ago(0),
    }
}

fn write(repo: &TestRepo, state: &RunState) {
    SqliteLedger::open(&home(repo).join("ledger.sqlite")).unwrap().set_run_state(state).unwrap();
}

/// Hides this test's pid (the fake runner's) and uptimes.
fn hide_pid_and_uptimes() -> insta::internals::SettingsBindDropGuard {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&format!(r"\b{}\b", std::process::id()), "[PID]");
    settings.add_filter(r#""uptime_s": \d+"#, r#""uptime_s": [SECONDS]"#);
    settings.bind_to_scope()
}

#[test]
fn an_env_without_a_release_is_not_running_anything() {
    let repo = shell_app("");
    let graven = Graven::in_repo(&repo);
    insta::assert_snapshot!(graven.run(["status", "--env", "production"]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: environment 'production' does not exist
        hint: shell has no environments yet: make one with graven release --env production
        ");
    graven.run(["config", "set", "GREETING=hi", "--env", "production"]);
    insta::assert_snapshot!(graven.run(["status", "--env", "production"]), @r"
        exit code: 1
        ----- stdout -----
        desired       nothing: production has no release yet
        running       not running (no runner has reported)
        ----- stderr -----
        error: production has no release yet
        hint: release a build first: graven release --env production
        ");
    let run = graven.run(["status", "--env", "production", "--json"]);
    assert_eq!(run.code, 1, "{run}");
    insta::assert_snapshot!(run.stdout, @r#"
        {
          "app": "shell",
          "env": "production",
          "desired": null,
          "running": null,
          "in_sync": false,
          "drift": null,
          "drift_files": null,
          "last_failure": null,
          "rollout": null,
          "processes": [],
          "runner": null,
          "runners": [],
          "problems": [
            "production has no release yet"
          ]
        }
        "#);
    insta::assert_snapshot!(graven.run(["status", "--env", "staging"]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: environment 'staging' does not exist
        hint: the environments of shell are: production
        ");
    insta::assert_snapshot!(graven.run(["status", "--env", "Prod!"]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: 'Prod!' is not a valid environment name: use a lowercase letter, then up to 62 of a-z, 0-9 and '-'
        ");
}

#[test]
fn a_release_without_a_runner_is_not_running() {
    let (_repo, graven) = released();
    insta::assert_snapshot!(graven.run(["status", "--env", "production"]), @r"
        exit code: 1
        ----- stdout -----
        desired       v1  deploy  [C1]  artifact [DIGEST]  config [DIGEST]  released just now
        running       not running (no runner has reported)
        in sync       no: v1 is released, nothing runs
        ----- stderr -----
        error: production is not running: no runner has reported for it
        hint: start one: graven run --env production
        ");
    let json = graven.run(["status", "--env", "production", "--json"]).json();
    assert_eq!(json["desired"]["version"], "v1");
    assert_eq!(json["desired"]["current"], true);
    assert_eq!(json["running"], serde_json::Value::Null);
    assert_eq!(json["in_sync"], false);
    assert_eq!(json["runner"], serde_json::Value::Null);
}

#[test]
#[expect(clippy::too_many_lines, reason = "one inline snapshot of the whole status JSON")]
fn the_newest_release_running_and_up_is_in_sync() {
    let (repo, graven) = released();
    let _filters = hide_pid_and_uptimes();
    write(&repo, &report(&repo, &graven, 1));
    insta::assert_snapshot!(graven.run(["status", "--env", "production"]), @r"
        exit code: 0
        ----- stdout -----
        desired       v1  deploy  [C1]  artifact [DIGEST]  config [DIGEST]  released just now
        running       v1  deploy  [C1]  artifact [DIGEST]  config [DIGEST]  started 2 hours ago
        in sync       yes
        runner        pid [PID] on [HOST], home [TEMP]/.graven: running, reported just now
        code          read-only at /app for every process
        drift         unknown: the tree of v1 is not laid out on this machine ([TEMP]/.graven/releases/shell/production/v1)

        PROCESS  TYPE  PID   STATE  RESTARTS  UPTIME
        web.1    web   4242  up     0         2h 0m
        ----- stderr -----
        ");
    insta::assert_snapshot!(graven.run(["status", "--env", "production", "--json"]), @r#"
        exit code: 0
        ----- stdout -----
        {
          "app": "shell",
          "env": "production",
          "desired": {
            "id": "[DIGEST]",
            "app": "shell",
            "env": "production",
            "number": 1,
            "version": "v1",
            "kind": "deploy",
            "artifact": "[DIGEST]",
            "config": "[DIGEST]",
            "parent": null,
            "commit": "[C1]",
            "author": "dev@example.com",
            "host": "[HOST]",
            "created_at": "[TIME]",
            "description": "Deploy [C1]",
            "rollback_of": null,
            "promoted_from": null,
            "current": true
          },
          "running": {
            "id": "[DIGEST]",
            "app": "shell",
            "env": "production",
            "number": 1,
            "version": "v1",
            "kind": "deploy",
            "artifact": "[DIGEST]",
            "config": "[DIGEST]",
            "parent": null,
            "commit": "[C1]",
            "author": "dev@example.com",
            "host": "[HOST]",
            "created_at": "[TIME]",
            "description": "Deploy [C1]",
            "rollback_of": null,
            "promoted_from": null,
            "current": true,
            "since": "[TIME]"
          },
          "in_sync": true,
          "drift": null,
          "drift_files": null,
          "last_failure": null,
          "rollout": null,
          "processes": [
            {
              "name": "web.1",
              "type": "web",
              "pid": 4242,
              "state": "up",
              "restarts": 0,
              "uptime_s": [SECONDS],
              "started_at": "[TIME]"
            }
          ],
          "runner": {
            "pid": [PID],
            "host": "[HOST]",
            "home": "[TEMP]/.graven",
            "state": "running",
            "alive": true,
            "updated_at": "[TIME]",
            "release": "v1",
            "in_sync": true,
            "read_only_app": true
          },
          "runners": [
            {
              "pid": [PID],
              "host": "[HOST]",
              "home": "[TEMP]/.graven",
              "state": "running",
              "alive": true,
              "updated_at": "[TIME]",
              "release": "v1",
              "in_sync": true,
              "read_only_app": true
            }
          ],
          "problems": []
        }
        ----- stderr -----
        "#);
}

#[test]
fn a_runner_behind_the_newest_release_is_out_of_sync() {
    let (repo, graven) = released();
    let _filters = hide_pid_and_uptimes();
    let run = graven.run(["config", "set", "GREETING=hello", "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");
    let mut state = report(&repo, &graven, 1);
    state.last_failure = Some(Failure {
        number: 2,
        reason: "web.1 exited with code 1 before it was healthy".to_owned(),
        at: ago(30),
        cause: graven::model::FailureCause::Release,
        retry_at: None,
    });
    state.processes.push(ProcessState {
        name: "worker.1".to_owned(),
        kind: "worker".to_owned(),
        pid: None,
        state: graven::model::ProcessStatus::Restarting,
        restarts: 3,
        started_at: Some(ago(40)),
    });
    write(&repo, &state);
    insta::assert_snapshot!(graven.run(["status", "--env", "production"]), @r"
        exit code: 1
        ----- stdout -----
        desired       v2  config  [C1]  artifact [DIGEST]  config [DIGEST]  released just now
        running       v1  deploy  [C1]  artifact [DIGEST]  config [DIGEST]  started 2 hours ago
        in sync       no: v2 is released, v1 runs
        runner        pid [PID] on [HOST], home [TEMP]/.graven: running, reported just now
        code          read-only at /app for every process
        drift         unknown: the tree of v1 is not laid out on this machine ([TEMP]/.graven/releases/shell/production/v1)
        last failure  v2, just now: web.1 exited with code 1 before it was healthy

        PROCESS   TYPE    PID   STATE       RESTARTS  UPTIME
        web.1     web     4242  up          0         2h 0m
        worker.1  worker  -     restarting  3         -
        ----- stderr -----
        error: production is not in sync: v2 is released, v1 runs; production is not healthy: worker.1 is restarting
        hint: the rollout of v2 failed (web.1 exited with code 1 before it was healthy): graven logs --env production shows what its processes printed; release a fix, or try v2 again with graven restart --env production
        hint: graven logs --env production shows what they printed
        ");
    let json = graven.run(["status", "--env", "production", "--json"]).json();
    assert_eq!((json["desired"]["version"].as_str(), json["desired"]["current"].as_bool()), (Some("v2"), Some(true)));
    assert_eq!((json["running"]["version"].as_str(), json["running"]["current"].as_bool()), (Some("v1"), Some(false)));
    assert_eq!(json["in_sync"], false);
    assert_eq!(json["last_failure"]["number"], 2);
    assert_eq!(json["processes"][1]["uptime_s"], serde_json::Value::Null, "not up: no uptime");
}

#[test]
fn a_runner_that_stopped_reporting_is_not_running() {
    let (repo, graven) = released();
    let _filters = hide_pid_and_uptimes();
    let stale = RunState { updated_at: ago(65), ..report(&repo, &graven, 1) };
    write(&repo, &stale);
    insta::assert_snapshot!(graven.run(["status", "--env", "production"]), @r"
        exit code: 1
        ----- stdout -----
        desired       v1  deploy  [C1]  artifact [DIGEST]  config [DIGEST]  released just now
        running       not running (last seen 1 minute ago)
        in sync       no: v1 is released, nothing runs
        runner        pid [PID] on [HOST], home [TEMP]/.graven: not running, reported 1 minute ago
        code          read-only at /app for every process
        ----- stderr -----
        error: production is not running: its runner was last seen 1 minute ago
        hint: start one: graven run --env production
        ");
    let json = graven.run(["status", "--env", "production", "--json"]).json();
    assert_eq!(json["running"], serde_json::Value::Null);
    assert_eq!(json["processes"], serde_json::json!([]), "a dead runner's processes are not known");
    assert_eq!(json["runner"]["alive"], false);
    assert_eq!(json["runner"]["release"], "v1");

    // A runner that wrote that it stopped.
    let stopped = RunState {
        state: graven::model::RunnerState::Stopped,
        running: None,
        processes: Vec::new(),
        ..report(&repo, &graven, 1)
    };
    write(&repo, &stopped);
    insta::assert_snapshot!(graven.run(["status", "--env", "production"]), @r"
        exit code: 1
        ----- stdout -----
        desired       v1  deploy  [C1]  artifact [DIGEST]  config [DIGEST]  released just now
        running       not running (stopped just now)
        in sync       no: v1 is released, nothing runs
        runner        pid [PID] on [HOST], home [TEMP]/.graven: not running, reported just now
        ----- stderr -----
        error: production is not running: its runner stopped just now
        hint: start one: graven run --env production
        ");

    // A runner on this machine whose process is gone (killed before it
    // could write that it stopped), although its report is fresh.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let gone = RunState { runner_pid: child.id(), updated_at: ago(1), ..report(&repo, &graven, 1) };
    write(&repo, &gone);
    let run = graven.run(["status", "--env", "production", "--json"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.json()["runner"]["alive"], false, "{run}");

    // The same report from another machine: its pid cannot be checked here,
    // so it is alive, and the status is told of it; the gone one here is
    // another runner of the environment that is not serving.
    let elsewhere = RunState { host: "web-2.example".to_owned(), updated_at: ago(0), ..gone };
    write(&repo, &elsewhere);
    let run = graven.run(["status", "--env", "production", "--json"]);
    assert_eq!(run.code, 1, "{run}");
    let json = run.json();
    assert_eq!(json["drift"], serde_json::Value::Null, "its tree is not here: {run}");
    assert_eq!(
        (json["running"]["version"].as_str(), json["runner"]["host"].as_str()),
        (Some("v1"), Some("web-2.example"))
    );
    assert_eq!(json["runners"].as_array().unwrap().len(), 2);
    assert_eq!(
        (json["runners"][0]["in_sync"].as_bool(), json["runners"][1]["in_sync"].as_bool()),
        (Some(true), Some(false))
    );
    let problem = json["problems"][0].as_str().unwrap();
    assert!(problem.starts_with("the runner on ") && problem.contains("is gone"), "{problem}");
}

#[test]
fn an_edited_release_tree_is_drift() {
    let (repo, graven) = released();
    let _filters = hide_pid_and_uptimes();
    let run = graven.run(["exec", "--env", "production", "--", "true"]);
    assert_eq!(run.code, 0, "{run}");
    write(&repo, &report(&repo, &graven, 1));
    let run = graven.run(["status", "--env", "production", "--json"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!((run.json()["drift"].as_bool(), run.json()["drift_files"].as_u64()), (Some(false), Some(0)));

    // Behind graven's back.
    let file = home(&repo).join("releases/shell/production/v1/out.txt");
    chmod(&file, 0o644);
    std::fs::write(&file, "edited\n").unwrap();
    insta::assert_snapshot!(graven.run(["status", "--env", "production"]), @r"
        exit code: 1
        ----- stdout -----
        desired       v1  deploy  [C1]  artifact [DIGEST]  config [DIGEST]  released just now
        running       v1  deploy  [C1]  artifact [DIGEST]  config [DIGEST]  started 2 hours ago
        in sync       yes
        runner        pid [PID] on [HOST], home [TEMP]/.graven: running, reported just now
        code          read-only at /app for every process
        drift         2 differences from the artifact: graven verify --env production lists them

        PROCESS  TYPE  PID   STATE  RESTARTS  UPTIME
        web.1    web   4242  up     0         2h 0m
        ----- stderr -----
        error: the tree of v1 of production has drifted from its artifact: 2 differences
        hint: graven verify --env production lists them
        ");
    let json = graven.run(["status", "--env", "production", "--json"]).json();
    assert_eq!((json["drift"].as_bool(), json["drift_files"].as_u64()), (Some(true), Some(2)));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

#[test]
fn outside_a_repository_the_ledgers_only_app_is_the_app() {
    let (repo, _graven) = released();
    let elsewhere = tempfile::tempdir().unwrap();
    let server = Graven::in_dir(elsewhere.path())
        .env("GRAVEN_HOME", home(&repo))
        .label(&repo.path().display().to_string(), "[REPO]");
    let run = server.run(["releases", "--env", "production", "--json"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.json()[0]["app"], "shell");

    // A second app in the same home: which one must be said.
    let other = shell_app("");
    std::fs::write(other.path().join("graven.toml"), "[app]\nname = \"other\"\n").unwrap();
    other.commit("Another app");
    Graven::in_repo(&other).env("GRAVEN_HOME", home(&repo)).build_json::<&str>([]);
    let run = server.run(["releases", "--env", "production"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: no app given, and the current directory is not inside a repository
        hint: the ledger in [REPO]/.graven has several apps (other, shell): pass --app NAME (or set GRAVEN_APP)
        ");
}

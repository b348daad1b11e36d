//! `graven::run::status`: the desired release against the one a runner
//! reports, whether that runner is alive, and drift of its tree.

use std::time::{Duration, SystemTime};

use graven::ledger::Ledger as _;
use graven::model::Release;
use graven::model::{RunState, RunningRelease};
use graven::release::Stage;
use graven::run::status::{DriftCheck, Liveness, StatusError, Vantage, env_status};

use crate::support::{APP, TestHome, app_with_command};

const HOST: &str = "this-host";

fn ago(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(seconds)).to_string()
}

/// A home whose production environment has two releases (deploy, then a
/// config change).
fn two_releases() -> (TestHome, Vec<Release>) {
    let repo = app_with_command("mkdir -p out && echo hi > out/hi.txt", "");
    let home = TestHome::new();
    home.built(&repo);
    let build = home.builds().remove(0);
    let stage =
        Stage { ledger: &home.ledger, store: &home.store, app: APP, author: "tester@example.com", host: "test-host" };
    let first = stage.deploy("production", &build, None).unwrap().release.unwrap();
    let change =
        graven::release::ConfigChange { set: vec![("A".to_owned(), "1".to_owned())], unset: Vec::new(), secret: false };
    let second = stage.change_config("production", &change).unwrap().release.unwrap();
    (home, vec![first, second])
}

/// A report of a runner running `release`, written `seconds` ago by this
/// process, on `host`, in `home`.
fn report(home: &TestHome, release: &Release, host: &str, seconds: u64) -> RunState {
    RunState {
        app: APP.to_owned(),
        env: "production".to_owned(),
        host: host.to_owned(),
        home: home.home.root().display().to_string(),
        runner_pid: std::process::id(),
        state: graven::model::RunnerState::Running,
        running: Some(RunningRelease {
            id: release.id,
            number: release.number,
            since: ago(seconds + 60),
            read_only_app: true,
            user: None,
            formation: graven::model::Formation::default(),
            restart: 0,
        }),
        processes: Vec::new(),
        last_failure: None,
        rollout: None,
        updated_at: ago(seconds),
    }
}

#[test]
fn a_fresh_report_of_the_newest_release_is_in_sync_and_its_tree_is_checked() {
    let (home, releases) = two_releases();
    let vantage = Vantage { host: HOST, home: &home.home };
    let status = env_status(&home.ledger, APP, "production", vantage).unwrap();
    assert!(status.runner.is_none() && status.running.is_none() && !status.in_sync());

    home.ledger.set_run_state(&report(&home, &releases[0], HOST, 0)).unwrap();
    let status = env_status(&home.ledger, APP, "production", vantage).unwrap();
    assert_eq!(status.runner.as_ref().map(|r| r.liveness), Some(Liveness::Alive));
    assert_eq!(status.running.as_ref().map(|(r, _)| r.number), Some(1));
    assert!(!status.in_sync(), "v2 is the newest");
    assert!(matches!(&status.drift, Some(DriftCheck::Unknown(why)) if why.contains("not laid out")), "{status:?}");

    let artifact = graven::run::artifact_of(&home.store, &releases[1]).unwrap();
    graven::run::materialise(&home.store, &home.home, &releases[1], &artifact).unwrap();
    home.ledger.set_run_state(&report(&home, &releases[1], HOST, 0)).unwrap();
    let status = env_status(&home.ledger, APP, "production", vantage).unwrap();
    assert!(status.in_sync());
    assert_eq!(status.drifted(), Some(&[][..]));
}

#[test]
fn a_runner_is_dead_when_stale_stopped_or_its_pid_is_gone_here() {
    let (home, releases) = two_releases();
    let vantage = Vantage { host: HOST, home: &home.home };
    let liveness = |state: &RunState| graven::run::status::liveness(state, vantage);

    assert_eq!(liveness(&report(&home, &releases[1], HOST, 2)), Liveness::Alive);
    assert_eq!(liveness(&report(&home, &releases[1], HOST, 60)), Liveness::Stale);
    let stopped = RunState { state: graven::model::RunnerState::Stopped, ..report(&home, &releases[1], HOST, 0) };
    assert_eq!(liveness(&stopped), Liveness::Stopped);
    // A pid that cannot exist: gone, if the runner is on this machine and
    // home; elsewhere only its report's age tells.
    let gone = RunState { runner_pid: u32::MAX, ..report(&home, &releases[1], HOST, 0) };
    assert_eq!(liveness(&gone), Liveness::Gone);
    let elsewhere = RunState { runner_pid: u32::MAX, ..report(&home, &releases[1], "other-host", 0) };
    assert_eq!(liveness(&elsewhere), Liveness::Alive);

    // A dead runner runs nothing, whatever it last said.
    home.ledger.set_run_state(&report(&home, &releases[1], HOST, 60)).unwrap();
    let status = env_status(&home.ledger, APP, "production", vantage).unwrap();
    assert!(status.running.is_none() && status.processes().is_empty() && status.drift.is_none());
}

#[test]
fn a_runner_reporting_a_release_the_ledger_lacks_is_an_error() {
    let (home, releases) = two_releases();
    let mut state = report(&home, &releases[1], HOST, 0);
    state.running.as_mut().unwrap().id = releases[0].id;
    home.ledger.set_run_state(&state).unwrap();
    let vantage = Vantage { host: HOST, home: &home.home };
    let error = env_status(&home.ledger, APP, "production", vantage).unwrap_err();
    assert!(matches!(error, StatusError::UnknownRelease { number: 2, .. }), "{error}");
}

#[test]
fn problems_say_what_keeps_an_environment_from_being_in_sync_and_healthy() {
    use graven::model::{ProcessState, ProcessStatus};
    use graven::run::status::Problem;
    let (home, releases) = two_releases();
    let vantage = Vantage { host: HOST, home: &home.home };
    let status = env_status(&home.ledger, APP, "production", vantage).unwrap();
    assert_eq!(status.problems(), [Problem::NoRunner]);

    // Alive, on the older release, a worker crash-looping.
    let crashing = ProcessState {
        name: "worker.1".to_owned(),
        kind: "worker".to_owned(),
        pid: None,
        state: ProcessStatus::Restarting,
        restarts: 3,
        started_at: None,
    };
    let older = RunState { processes: vec![crashing], ..report(&home, &releases[0], HOST, 0) };
    home.ledger.set_run_state(&older).unwrap();
    let status = env_status(&home.ledger, APP, "production", vantage).unwrap();
    let problems = status.problems();
    assert!(matches!(&problems[0], Problem::OutOfSync { desired: 2, running: Some(1), failure: None }), "{problems:?}");
    assert!(
        matches!(&problems[1], Problem::Unhealthy { processes } if processes == &[("worker.1".to_owned(), ProcessStatus::Restarting)]),
        "a crash-looping worker is a problem, not 'up, 3 restarts': {problems:?}"
    );

    // The newest release, laid out, every process up: nothing to say.
    let artifact = graven::run::artifact_of(&home.store, &releases[1]).unwrap();
    graven::run::materialise(&home.store, &home.home, &releases[1], &artifact).unwrap();
    home.ledger.set_run_state(&report(&home, &releases[1], HOST, 0)).unwrap();
    let status = env_status(&home.ledger, APP, "production", vantage).unwrap();
    assert_eq!(status.problems(), []);

    // Stale: the runner is down.
    home.ledger.set_run_state(&report(&home, &releases[1], HOST, 600)).unwrap();
    let status = env_status(&home.ledger, APP, "production", vantage).unwrap();
    assert!(matches!(&status.problems()[..], [Problem::RunnerDown { runner }] if runner.liveness == Liveness::Stale));
}

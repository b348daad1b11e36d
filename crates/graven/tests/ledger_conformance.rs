//! The ledger conformance suite: what every `Ledger` must do, written
//! against the trait so that a PostgreSQL ledger runs the same tests. Each
//! case gets a fresh, empty ledger from the factory.

use std::collections::{BTreeMap, BTreeSet};

use graven::Digest;
use graven::ledger::{Append, EnvState, Ledger, LedgerError, SqliteLedger};
use graven::model::{ConfigVersion, NewPush, Release, ReleaseKind, ReleasePhaseRun};
use graven::model::{Failure, ProcessState, RunState, RunningRelease};

type Factory<'a> = &'a dyn Fn() -> Box<dyn Ledger>;

const NOW: &str = "2026-01-01T00:00:00Z";

fn config(state: &EnvState, env: &str, vars: &[(&str, &str)]) -> ConfigVersion {
    let mut config = ConfigVersion {
        id: Digest::of(b""),
        app: "app".to_owned(),
        env: env.to_owned(),
        number: state.next_config_number,
        parent: state.config.as_ref().map(|c| c.id),
        vars: vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        secret: BTreeSet::new(),
        author: "dev@example.com".to_owned(),
        created_at: NOW.to_owned(),
        description: "test".to_owned(),
    };
    config.id = config.computed_id();
    config
}

fn release(state: &EnvState, env: &str, config: &ConfigVersion, artifact: &[u8]) -> Release {
    let mut release = Release {
        id: Digest::of(b""),
        app: "app".to_owned(),
        env: env.to_owned(),
        number: state.release.as_ref().map_or(1, |r| r.number + 1),
        kind: ReleaseKind::Deploy,
        artifact: Digest::of(artifact),
        config: config.id,
        parent: state.release.as_ref().map(|r| r.id),
        commit: "0".repeat(40),
        author: "dev@example.com".to_owned(),
        host: Some("ci-runner-3".to_owned()),
        created_at: NOW.to_owned(),
        description: "test".to_owned(),
        rollback_of: None,
        promoted_from: None,
    };
    release.id = release.computed_id();
    release
}

/// Appends a config version and a release of `artifact` to `env`.
pub(crate) fn deploy(ledger: &dyn Ledger, env: &str, artifact: &[u8]) -> Release {
    let append = ledger
        .append("app", env, NOW, &mut |state| {
            let config = config(state, env, &[("N", &state.next_config_number.to_string())]);
            let release = release(state, env, &config, artifact);
            Ok(Append { config: Some(config), release: Some(release) })
        })
        .unwrap();
    append.release.unwrap()
}

fn appends_are_numbered_and_chained(factory: Factory<'_>) {
    let ledger = factory();
    let mut seen_states = Vec::new();
    for n in 1..=3u8 {
        ledger
            .append("app", "production", NOW, &mut |state| {
                seen_states.push((state.exists, state.release.as_ref().map(|r| r.number), state.next_config_number));
                let config = config(state, "production", &[]);
                Ok(Append { config: Some(config.clone()), release: Some(release(state, "production", &config, &[n])) })
            })
            .unwrap();
    }
    assert_eq!(seen_states, [(false, None, 1), (true, Some(1), 2), (true, Some(2), 3)]);
    let releases = ledger.releases("app", "production", None).unwrap();
    assert_eq!(releases.iter().map(|r| r.number).collect::<Vec<_>>(), [3, 2, 1], "newest first");
    assert_eq!(releases[0].parent, Some(releases[1].id));
    assert_eq!(releases[2].parent, None);
    for release in &releases {
        assert_eq!(release.computed_id(), release.id, "stored as written");
    }
    assert_eq!(ledger.releases("app", "production", Some(2)).unwrap().len(), 2);
    assert_eq!(ledger.release("app", "production", 2).unwrap().as_ref(), Some(&releases[1]));
    assert_eq!(ledger.release("app", "production", 9).unwrap(), None);
}

fn a_refused_decision_appends_nothing(factory: Factory<'_>) {
    let ledger = factory();
    let result = ledger.append("app", "staging", NOW, &mut |_| Err(LedgerError::Refused));
    assert!(matches!(result, Err(LedgerError::Refused)));
    assert_eq!(ledger.environments("app").unwrap(), Vec::<String>::new(), "not even the environment");
    assert!(ledger.config_versions("app", "staging").unwrap().is_empty());
}

fn a_taken_number_is_refused_and_nothing_is_appended(factory: Factory<'_>) {
    let ledger = factory();
    let first = deploy(&*ledger, "production", b"a");
    let result = ledger.append("app", "production", NOW, &mut |state| {
        // A stale decision: numbers its release as if v1 did not exist.
        let config = config(state, "production", &[("X", "1")]);
        let stale = EnvState { release: None, ..state.clone() };
        Ok(Append { config: Some(config.clone()), release: Some(release(&stale, "production", &config, b"b")) })
    });
    assert!(
        matches!(result, Err(graven::ledger::LedgerError::Conflict { .. })),
        "two releases numbered v1, or not a conflict: {result:?}"
    );
    let releases = ledger.releases("app", "production", None).unwrap();
    assert_eq!(releases, [first]);
    assert_eq!(ledger.config_versions("app", "production").unwrap().len(), 1, "the config version went too");
}

fn the_state_read_outside_is_the_state_decided_on_inside(factory: Factory<'_>) {
    let ledger = factory();
    assert_eq!(
        ledger.env_state("app", "production").unwrap(),
        EnvState { next_config_number: 1, ..EnvState::default() }
    );
    deploy(&*ledger, "production", b"a");
    let outside = ledger.env_state("app", "production").unwrap();
    assert!(outside.exists && outside.release.is_some() && outside.config.is_some());
    let mut inside = None;
    let _ = ledger.append("app", "production", NOW, &mut |state| {
        inside = Some(state.clone());
        Err(LedgerError::Refused)
    });
    assert_eq!(inside, Some(outside));
}

fn a_watch_wakes_for_an_append(factory: Factory<'_>) {
    let ledger = factory();
    let mut watch = ledger.watch("app", "production").unwrap();
    assert!(!watch.wait(std::time::Duration::from_millis(30)).unwrap(), "nothing changed");
    deploy(&*ledger, "production", b"a");
    assert!(watch.wait(std::time::Duration::from_secs(5)).unwrap(), "the append was not seen");
    assert!(!watch.wait(std::time::Duration::from_millis(30)).unwrap(), "seen once");
}

fn formations_are_per_environment_and_the_newest_counts(factory: Factory<'_>) {
    use graven::model::{Formation, FormationRecord};
    let ledger = factory();
    assert_eq!(ledger.formation("app", "production").unwrap(), None);
    let record = |text: &str| FormationRecord {
        formation: Formation::parse(text.split(' ')).unwrap(),
        author: "dev@example.com".to_owned(),
        created_at: NOW.to_owned(),
    };
    let mut watch = ledger.watch("app", "production").unwrap();
    ledger.set_formation("app", "production", &record("web=2 worker=1")).unwrap();
    assert!(watch.wait(std::time::Duration::from_secs(5)).unwrap(), "a watch wakes for a formation change");
    ledger.set_formation("app", "production", &record("web=3")).unwrap();
    ledger.set_formation("app", "staging", &record("web=1")).unwrap();
    assert_eq!(ledger.formation("app", "production").unwrap(), Some(record("web=3")));
    assert_eq!(ledger.formation("app", "staging").unwrap(), Some(record("web=1")));
    assert_eq!(ledger.formation("other", "production").unwrap(), None);
    assert!(ledger.releases("app", "production", None).unwrap().is_empty(), "scaling makes no release");
}

fn restart_requests_grow_per_environment_and_wake_a_watch(factory: Factory<'_>) {
    let ledger = factory();
    assert_eq!(ledger.last_restart("app", "production").unwrap(), None);
    let mut watch = ledger.watch("app", "production").unwrap();
    let first = ledger.request_restart("app", "production", "dev@example.com", NOW).unwrap();
    assert!(watch.wait(std::time::Duration::from_secs(5)).unwrap(), "a watch wakes for a restart");
    let other = ledger.request_restart("app", "staging", "ops@example.com", NOW).unwrap();
    let second = ledger.request_restart("app", "production", "ops@example.com", "2026-01-01T00:00:09Z").unwrap();
    assert!(first < second && first != other, "{first} {other} {second}");
    let newest = ledger.last_restart("app", "production").unwrap().unwrap();
    assert_eq!(
        (newest.seq, newest.author.as_str(), newest.created_at.as_str()),
        (second, "ops@example.com", "2026-01-01T00:00:09Z")
    );
    assert_eq!(ledger.last_restart("app", "staging").unwrap().unwrap().seq, other);
    assert_eq!(ledger.last_restart("other", "production").unwrap(), None);
    assert!(ledger.releases("app", "production", None).unwrap().is_empty(), "a restart makes no release");
}

fn pushes_are_kept_per_artifact_newest_first(factory: Factory<'_>) {
    let ledger = factory();
    let push = |artifact: &[u8], registry: &str, tags: &[&str]| NewPush {
        app: "app".to_owned(),
        artifact: Digest::of(artifact),
        commit: "c".repeat(40),
        repository: format!("{registry}/app"),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        digest: Digest::of(registry.as_bytes()),
        author: "dev@example.com".to_owned(),
        created_at: NOW.to_owned(),
    };
    assert!(ledger.pushes("app", None).unwrap().is_empty());
    let first = ledger.record_push(&push(b"a", "one.example.com", &["c", "v1"])).unwrap();
    let second = ledger.record_push(&push(b"b", "two.example.com", &[])).unwrap();
    let third = ledger.record_push(&push(b"a", "two.example.com", &["c"])).unwrap();
    assert!(first < second && second < third);
    let of_a = ledger.pushes("app", Some(&Digest::of(b"a"))).unwrap();
    assert_eq!(of_a.iter().map(|p| p.seq).collect::<Vec<_>>(), [third, first], "newest first");
    assert_eq!(of_a[1].push, push(b"a", "one.example.com", &["c", "v1"]), "read back as recorded");
    assert_eq!(of_a[1].push.image(), format!("one.example.com/app@{}", Digest::of(b"one.example.com")));
    assert_eq!(ledger.pushes("app", None).unwrap().len(), 3);
    assert!(ledger.pushes("other", None).unwrap().is_empty());
    assert!(ledger.releases("app", "production", None).unwrap().is_empty(), "a push makes no release");
}

pub(crate) fn phase_run(env: &str, number: u64, host: &str) -> ReleasePhaseRun {
    ReleasePhaseRun {
        app: "app".to_owned(),
        env: env.to_owned(),
        number,
        host: host.to_owned(),
        home: "/srv/graven".to_owned(),
        started_at: NOW.to_owned(),
    }
}

fn release_phase_runs_are_kept_per_release(factory: Factory<'_>) {
    let ledger = factory();
    let none = ledger.release_phase_runs("app", "production", 1..=9).unwrap();
    assert_eq!((none.started.len(), none.recorded_from), (0, 1), "a new ledger records every run");
    for release in 1..=3 {
        deploy(&*ledger, "production", format!("artifact {release}").as_bytes());
    }
    ledger.record_release_phase(&phase_run("production", 1, "web-1")).unwrap();
    ledger.record_release_phase(&phase_run("production", 3, "web-1")).unwrap();
    ledger.record_release_phase(&phase_run("production", 3, "web-2")).unwrap();
    ledger.record_release_phase(&phase_run("staging", 2, "web-1")).unwrap();
    let runs = ledger.release_phase_runs("app", "production", 1..=3).unwrap();
    assert_eq!(runs.started.into_iter().collect::<Vec<_>>(), [1, 3], "once each, however many hosts ran it");
    let runs = ledger.release_phase_runs("app", "production", 2..=3).unwrap();
    assert_eq!(runs.started.into_iter().collect::<Vec<_>>(), [3], "only those asked for");
    let staging = ledger.release_phase_runs("app", "staging", 1..=3).unwrap();
    assert_eq!(staging.started.into_iter().collect::<Vec<_>>(), [2]);
    assert!(ledger.release_phase_runs("other", "production", 1..=3).unwrap().started.is_empty());
    assert_eq!(ledger.releases("app", "production", None).unwrap().len(), 3, "a run makes no release");
}

fn the_current_config_is_the_current_releases(factory: Factory<'_>) {
    let ledger = factory();
    deploy(&*ledger, "production", b"a");
    let second = deploy(&*ledger, "production", b"b");
    let first_config = ledger.config_versions("app", "production").unwrap().pop().unwrap();
    // A rollback-like release that runs the first config again.
    ledger
        .append("app", "production", NOW, &mut |state| {
            assert_eq!(state.config.as_ref().map(|c| c.id), Some(second.config));
            Ok(Append { config: None, release: Some(release(state, "production", &first_config, b"a")) })
        })
        .unwrap();
    ledger
        .append("app", "production", NOW, &mut |state| {
            assert_eq!(state.config.as_ref().map(|c| c.id), Some(first_config.id), "the running config");
            assert_eq!(state.next_config_number, 3, "numbers still count every version");
            Err(LedgerError::Refused)
        })
        .unwrap_err();
    assert_eq!(ledger.config_version(&first_config.id).unwrap(), Some(first_config));
    assert_eq!(ledger.config_version(&Digest::of(b"none")).unwrap(), None);
}

fn apps_and_environments_are_listed(factory: Factory<'_>) {
    let ledger = factory();
    deploy(&*ledger, "staging", b"a");
    deploy(&*ledger, "production", b"a");
    assert_eq!(ledger.environments("app").unwrap(), ["production", "staging"]);
    assert_eq!(ledger.environments("other").unwrap(), Vec::<String>::new());
    assert_eq!(ledger.apps().unwrap(), ["app"]);
}

/// A runner's report from `host`, made at `updated_at`.
fn run_state(app: &str, env: &str, host: &str, updated_at: &str) -> RunState {
    RunState {
        app: app.to_owned(),
        env: env.to_owned(),
        host: host.to_owned(),
        home: "/srv/app/.graven".to_owned(),
        runner_pid: 100,
        state: graven::model::RunnerState::Running,
        running: None,
        processes: Vec::new(),
        last_failure: None,
        rollout: None,
        updated_at: updated_at.to_owned(),
    }
}

fn a_runner_overwrites_its_own_run_state(factory: Factory<'_>) {
    let ledger = factory();
    assert_eq!(ledger.run_states("app", "production").unwrap(), []);
    let first = run_state("app", "production", "web-1", "2026-01-01T00:00:00Z");
    ledger.set_run_state(&first).unwrap();
    assert_eq!(ledger.run_states("app", "production").unwrap(), [first]);
    let second = RunState {
        runner_pid: 200,
        running: Some(RunningRelease {
            id: Digest::of(b"v2"),
            number: 2,
            since: "2026-01-01T00:00:01Z".to_owned(),
            read_only_app: true,
            user: Some("www-data".to_owned()),
            formation: graven::model::Formation::parse(["web=2", "worker=0"]).unwrap(),
            restart: 4,
        }),
        processes: vec![
            ProcessState {
                name: "web.1".to_owned(),
                kind: "web".to_owned(),
                pid: Some(201),
                state: graven::model::ProcessStatus::Up,
                restarts: 0,
                started_at: Some("2026-01-01T00:00:01Z".to_owned()),
            },
            ProcessState {
                name: "worker.1".to_owned(),
                kind: "worker".to_owned(),
                pid: None,
                state: graven::model::ProcessStatus::Restarting,
                restarts: 3,
                started_at: None,
            },
        ],
        last_failure: Some(Failure {
            number: 3,
            reason: "web.1 exited with code 1 before it was healthy".to_owned(),
            at: "2026-01-01T00:00:02Z".to_owned(),
            cause: graven::model::FailureCause::Passing,
            retry_at: Some("2026-01-01T00:00:04Z".to_owned()),
        }),
        rollout: Some(graven::model::RolloutReport {
            number: 3,
            stage: graven::model::RolloutStage::Failed,
            attempt: 2,
        }),
        ..run_state("app", "production", "web-1", "2026-01-01T00:00:03Z")
    };
    ledger.set_run_state(&second).unwrap();
    assert_eq!(ledger.run_states("app", "production").unwrap(), std::slice::from_ref(&second), "one row, overwritten");
    let stopped =
        RunState { state: graven::model::RunnerState::Stopped, running: None, processes: Vec::new(), ..second };
    ledger.set_run_state(&stopped).unwrap();
    assert_eq!(
        ledger.run_states("app", "production").unwrap(),
        std::slice::from_ref(&stopped),
        "back to nothing running"
    );
    // What `graven kube apply` records: a rollout to a cluster.
    let cluster = RunState {
        host: "kubernetes/prod".to_owned(),
        home: String::new(),
        runner_pid: 0,
        state: graven::model::RunnerState::Cluster,
        ..stopped.clone()
    };
    ledger.set_run_state(&cluster).unwrap();
    let states = ledger.run_states("app", "production").unwrap();
    assert!(states.contains(&cluster) && states.contains(&stopped), "{states:?}");
}

fn each_runner_has_its_own_run_state(factory: Factory<'_>) {
    let ledger = factory();
    let old = run_state("app", "production", "web-1", "2026-01-01T00:00:05Z");
    let new = run_state("app", "production", "web-2", "2026-01-01T00:00:07Z");
    let other_home = RunState {
        home: "/srv/other/.graven".to_owned(),
        ..run_state("app", "production", "web-1", "2026-01-01T00:00:06Z")
    };
    ledger.set_run_state(&old).unwrap();
    ledger.set_run_state(&new).unwrap();
    ledger.set_run_state(&other_home).unwrap();
    assert_eq!(
        ledger.run_states("app", "production").unwrap(),
        [new.clone(), other_home.clone(), old.clone()],
        "newest first"
    );
    // The older runner reports again: it comes first.
    let old_again = RunState { updated_at: "2026-01-01T00:00:08Z".to_owned(), ..old };
    ledger.set_run_state(&old_again).unwrap();
    assert_eq!(ledger.run_states("app", "production").unwrap(), [old_again, new, other_home]);
}

fn run_states_are_kept_per_app_and_env(factory: Factory<'_>) {
    let ledger = factory();
    let production = run_state("app", "production", "web-1", "2026-01-01T00:00:00Z");
    let staging = run_state("app", "staging", "web-1", "2026-01-01T00:00:01Z");
    let other = run_state("other", "production", "web-1", "2026-01-01T00:00:02Z");
    for state in [&production, &staging, &other] {
        ledger.set_run_state(state).unwrap();
    }
    assert_eq!(ledger.run_states("app", "production").unwrap(), [production]);
    assert_eq!(ledger.run_states("app", "staging").unwrap(), [staging]);
    assert_eq!(ledger.run_states("other", "production").unwrap(), [other]);
    assert_eq!(ledger.run_states("other", "staging").unwrap(), []);
    assert_eq!(ledger.releases("app", "production", None).unwrap(), [], "no release appears");
    assert_eq!(ledger.environments("app").unwrap(), Vec::<String>::new(), "and no environment");
}

/// Runs every case against ledgers from `factory`.
pub(crate) fn conformance(factory: Factory<'_>) {
    appends_are_numbered_and_chained(factory);
    a_refused_decision_appends_nothing(factory);
    a_taken_number_is_refused_and_nothing_is_appended(factory);
    the_state_read_outside_is_the_state_decided_on_inside(factory);
    a_watch_wakes_for_an_append(factory);
    formations_are_per_environment_and_the_newest_counts(factory);
    restart_requests_grow_per_environment_and_wake_a_watch(factory);
    pushes_are_kept_per_artifact_newest_first(factory);
    release_phase_runs_are_kept_per_release(factory);
    the_current_config_is_the_current_releases(factory);
    apps_and_environments_are_listed(factory);
    a_runner_overwrites_its_own_run_state(factory);
    each_runner_has_its_own_run_state(factory);
    run_states_are_kept_per_app_and_env(factory);
}

#[test]
fn the_postgres_ledger_conforms() {
    let Some(server) = graven_testutils::postgres::server() else { return };
    conformance(&|| {
        Box::new(graven::ledger::PostgresLedger::open(&graven_testutils::postgres::fresh_database(&server)).unwrap())
    });
}

#[test]
fn the_sqlite_ledger_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::cell::Cell::new(0);
    conformance(&|| {
        counter.set(counter.get() + 1);
        Box::new(SqliteLedger::open(&dir.path().join(format!("ledger-{}.sqlite", counter.get()))).unwrap())
    });
}

//! The runner through a ledger that stops answering for a while: what runs
//! keeps running, and the release made meanwhile is picked up once the
//! ledger answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graven::Digest;
use graven::ledger::{Append, Decide, Ledger, LedgerError, SqliteLedger};
use graven::model::RunState;
use graven::model::{BuildRecord, NewBuild};
use graven::model::{ConfigVersion, Release};
use graven::release::{ConfigChange, Stage};
use graven::run::runner::{Print, Runner, RunnerOptions};

use crate::support::{APP, TestHome, app_with_command};

const PATIENCE: Duration = Duration::from_secs(30);

/// The real ledger, whose release reads fail while `down` is set, and
/// whose run-state writes fail while `writes_down` is.
struct FlakyLedger<'a> {
    inner: &'a SqliteLedger,
    down: AtomicBool,
    writes_down: AtomicBool,
    /// Run-state writes refused so far.
    refused: AtomicU64,
}

impl FlakyLedger<'_> {
    fn check(&self) -> Result<(), LedgerError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(LedgerError::Unavailable {
                location: "test".to_owned(),
                doing: "reading releases",
                retryable: true,
                source: "the disk went away".into(),
            });
        }
        Ok(())
    }
}

impl Ledger for FlakyLedger<'_> {
    fn record_build(&self, build: &NewBuild) -> Result<BuildRecord, LedgerError> {
        self.inner.record_build(build)
    }
    fn builds(&self, app: &str) -> Result<Vec<BuildRecord>, LedgerError> {
        self.inner.builds(app)
    }
    fn reusable_build(&self, app: &str, commit: &str, recipe: &Digest) -> Result<Option<BuildRecord>, LedgerError> {
        self.inner.reusable_build(app, commit, recipe)
    }
    fn build_log(&self, seq: i64) -> Result<Option<String>, LedgerError> {
        self.inner.build_log(seq)
    }
    fn append(&self, app: &str, env: &str, now: &str, decide: &mut Decide<'_>) -> Result<Append, LedgerError> {
        self.inner.append(app, env, now, decide)
    }
    fn env_state(&self, app: &str, env: &str) -> Result<graven::ledger::EnvState, LedgerError> {
        self.inner.env_state(app, env)
    }
    fn watch(&self, app: &str, env: &str) -> Result<Box<dyn graven::ledger::Watch + '_>, LedgerError> {
        self.inner.watch(app, env)
    }
    fn set_formation(&self, app: &str, env: &str, record: &graven::model::FormationRecord) -> Result<(), LedgerError> {
        self.inner.set_formation(app, env, record)
    }
    fn formation(&self, app: &str, env: &str) -> Result<Option<graven::model::FormationRecord>, LedgerError> {
        self.check()?;
        self.inner.formation(app, env)
    }
    fn request_restart(&self, app: &str, env: &str, author: &str, at: &str) -> Result<u64, LedgerError> {
        self.inner.request_restart(app, env, author, at)
    }
    fn last_restart(&self, app: &str, env: &str) -> Result<Option<graven::model::RestartRecord>, LedgerError> {
        self.check()?;
        self.inner.last_restart(app, env)
    }
    fn record_release_phase(&self, run: &graven::model::ReleasePhaseRun) -> Result<(), LedgerError> {
        self.check()?;
        self.inner.record_release_phase(run)
    }
    fn release_phase_runs(
        &self,
        app: &str,
        env: &str,
        numbers: std::ops::RangeInclusive<u64>,
    ) -> Result<graven::model::ReleasePhaseRuns, LedgerError> {
        self.check()?;
        self.inner.release_phase_runs(app, env, numbers)
    }
    fn record_push(&self, push: &graven::model::NewPush) -> Result<u64, LedgerError> {
        self.check()?;
        self.inner.record_push(push)
    }
    fn pushes(&self, app: &str, artifact: Option<&Digest>) -> Result<Vec<graven::model::PushRecord>, LedgerError> {
        self.check()?;
        self.inner.pushes(app, artifact)
    }
    fn apps(&self) -> Result<Vec<String>, LedgerError> {
        self.inner.apps()
    }
    fn environments(&self, app: &str) -> Result<Vec<String>, LedgerError> {
        self.inner.environments(app)
    }
    fn releases(&self, app: &str, env: &str, limit: Option<u64>) -> Result<Vec<Release>, LedgerError> {
        self.check()?;
        self.inner.releases(app, env, limit)
    }
    fn release(&self, app: &str, env: &str, number: u64) -> Result<Option<Release>, LedgerError> {
        self.check()?;
        self.inner.release(app, env, number)
    }
    fn config_versions(&self, app: &str, env: &str) -> Result<Vec<ConfigVersion>, LedgerError> {
        self.inner.config_versions(app, env)
    }
    fn config_version(&self, id: &Digest) -> Result<Option<ConfigVersion>, LedgerError> {
        self.inner.config_version(id)
    }
    fn set_run_state(&self, state: &RunState) -> Result<(), LedgerError> {
        if self.writes_down.load(Ordering::Relaxed) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(LedgerError::Unavailable {
                location: "test".to_owned(),
                doing: "recording the run state",
                retryable: true,
                source: "the disk is full".into(),
            });
        }
        self.inner.set_run_state(state)
    }
    fn run_states(&self, app: &str, env: &str) -> Result<Vec<RunState>, LedgerError> {
        self.inner.run_states(app, env)
    }
}

/// The release number the runner last reported running, and when it
/// reported.
fn reported(ledger: &SqliteLedger) -> Option<(u64, String)> {
    let state = ledger.run_states(APP, "production").unwrap().into_iter().next()?;
    Some((state.running?.number, state.updated_at))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A home where v1 of production runs one worker.
fn deployed_worker() -> TestHome {
    let repo = app_with_command("mkdir -p out && echo hi > out/hi.txt", "");
    repo.write("Procfile", "worker: exec sleep 600\n");
    repo.commit("Only a worker");
    let home = TestHome::new();
    home.built(&repo);
    let build = home.builds().remove(0);
    stage(&home).deploy("production", &build, None).unwrap();
    home
}

fn stage(home: &TestHome) -> Stage<'_> {
    Stage { ledger: &home.ledger, store: &home.store, app: APP, author: "tester@example.com", host: "test-host" }
}

/// Options for a runner of production on a free port.
fn options() -> RunnerOptions {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    RunnerOptions {
        app: APP.to_owned(),
        env: "production".to_owned(),
        formation: graven::model::Formation::default(),
        port: Some(port),
        host: "test-host".to_owned(),
        mount: None,
        user: None,
    }
}

/// A print callback keeping every line, and the lines.
fn keep_lines() -> (Print, Arc<Mutex<Vec<String>>>) {
    let said = Arc::new(Mutex::new(Vec::<String>::new()));
    let keep = Arc::clone(&said);
    (Arc::new(move |line: &str| keep.lock().unwrap().push(line.to_owned())), said)
}

#[test]
fn a_ledger_that_stops_answering_leaves_the_running_release_running() {
    let home = deployed_worker();
    let stage = stage(&home);

    let flaky = FlakyLedger {
        inner: &home.ledger,
        down: AtomicBool::new(false),
        writes_down: AtomicBool::new(false),
        refused: AtomicU64::new(0),
    };
    let (print, said) = keep_lines();
    let options = options();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let runner = scope.spawn(|| {
            let mut runner = Runner::new(&flaky, &home.store, &home.home, options, print).unwrap();
            runner.run(&stop)
        });
        wait_for("v1 running", || reported(&home.ledger).is_some_and(|(number, _)| number == 1));

        // The ledger stops answering, and meanwhile v2 is made.
        flaky.down.store(true, Ordering::Relaxed);
        let change = ConfigChange { set: vec![("A".to_owned(), "1".to_owned())], unset: Vec::new(), secret: false };
        stage.change_config("production", &change).unwrap();
        let before = reported(&home.ledger).unwrap().1;
        wait_for("a report while the ledger is down", || reported(&home.ledger).unwrap().1 != before);
        assert!(!runner.is_finished(), "the runner keeps running");
        assert_eq!(reported(&home.ledger).unwrap().0, 1, "v1 keeps running");

        // It answers again: v2 is rolled out.
        flaky.down.store(false, Ordering::Relaxed);
        wait_for("v2 running", || reported(&home.ledger).is_some_and(|(number, _)| number == 2));

        // Run-state writes fail for a few reports, then work again.
        flaky.writes_down.store(true, Ordering::Relaxed);
        wait_for("two refused reports", || flaky.refused.load(Ordering::Relaxed) >= 2);
        let before = reported(&home.ledger).unwrap().1;
        flaky.writes_down.store(false, Ordering::Relaxed);
        wait_for("a report again", || reported(&home.ledger).unwrap().1 != before);
        stop.store(true, Ordering::Relaxed);
        runner.join().unwrap().unwrap();
    });
    let said = said.lock().unwrap();
    let trouble: Vec<&String> = said.iter().filter(|line| line.contains("ledger")).collect();
    assert_eq!(trouble.len(), 4, "said once each, not at every poll: {said:#?}");
    assert!(trouble[0].contains("cannot read the ledger (") && trouble[0].contains("v1 keeps running"), "{said:#?}");
    assert!(trouble[1].contains("the ledger answers again"), "{said:#?}");
    assert!(trouble[2].contains("could not record the run state in the ledger: "), "{said:#?}");
    assert!(trouble[3].contains("the run state is recorded in the ledger again"), "{said:#?}");
}

#[test]
fn a_log_file_that_cannot_be_written_is_said_once_on_stdout() {
    let home = deployed_worker();
    // Every write to the log fails, as on a full disk.
    let dir = home.home.run_dir(APP, "production");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.join("graven.log")).unwrap();
    let (print, said) = keep_lines();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let runner = scope.spawn(|| {
            let mut runner = Runner::new(&home.ledger, &home.store, &home.home, options(), print).unwrap();
            runner.run(&stop)
        });
        wait_for("v1 running", || reported(&home.ledger).is_some_and(|(number, _)| number == 1));
        // A few more polls, each with failed writes.
        let before = reported(&home.ledger).unwrap().1;
        wait_for("a report after that", || reported(&home.ledger).unwrap().1 != before);
        stop.store(true, Ordering::Relaxed);
        runner.join().unwrap().unwrap();
    });
    let said = said.lock().unwrap();
    let trouble: Vec<&String> = said.iter().filter(|line| line.contains("could not write the log file")).collect();
    assert_eq!(trouble.len(), 1, "{said:#?}");
    assert!(trouble[0].contains("lines still go to stdout"), "{said:#?}");
    assert!(said.iter().any(|line| line.contains("v1 is serving")), "stdout has every line: {said:#?}");
}

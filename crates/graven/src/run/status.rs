//! What version is running? The judgement behind `graven status`: an
//! environment's desired release (its newest) against the one each of its
//! runners (one per machine and home) reports in the ledger, whether they
//! are alive, and whether the release tree on this machine still matches
//! the artifact. Reads only: it
//! never changes the ledger, a tree or a process. How it is shown is the
//! CLI's business.

use std::path::Path;
use std::time::Duration;

use super::{Drift, check_tree, tree_path};
use crate::home::Home;
use crate::ledger::{Ledger, LedgerError};
use crate::model::Release;
use crate::model::{Failure, ProcessState, RunState, RunnerState};
use crate::store::open_store;

/// A runner rewrites its row every second: one that has not for this long
/// is taken for dead (killed, or its machine is down).
pub const ALIVE_WITHIN: Duration = Duration::from_secs(10);

/// Whether a runner's report is current, judged from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It reports, and runs.
    Alive,
    /// It wrote that it stopped.
    Stopped,
    /// It has not reported for [`ALIVE_WITHIN`].
    Stale,
    /// It runs on this machine with this home, and its pid is gone.
    Gone,
    /// Not a runner: a rollout to a Kubernetes cluster, as last applied.
    Cluster,
}

/// A runner's report, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerReport {
    /// What it wrote.
    pub state: RunState,
    /// Whether it is alive.
    pub liveness: Liveness,
}

impl RunnerReport {
    /// Whether the runner is alive.
    pub fn alive(&self) -> bool {
        matches!(self.liveness, Liveness::Alive | Liveness::Cluster)
    }
}

/// How the tree of the running release compares with its artifact.
#[derive(Debug, Clone)]
pub enum DriftCheck {
    /// Checked: every difference found.
    Checked(Vec<Drift>),
    /// Not checked, and why.
    Unknown(String),
}

/// Where `status` looks from: the machine and home whose runner's pid and
/// release tree can be checked directly.
#[derive(Debug, Clone, Copy)]
pub struct Vantage<'a> {
    /// This machine's host name, as runners report it.
    pub host: &'a str,
    /// The graven home in use here.
    pub home: &'a Home,
}

/// An environment's status.
#[derive(Debug, Clone)]
pub struct EnvStatus {
    /// The app.
    pub app: String,
    /// The environment.
    pub env: String,
    /// The environment's newest release.
    pub desired: Option<Release>,
    /// The runner the status is told of: this machine's (with this home)
    /// if it is alive, else the newest alive one, else this machine's, else
    /// the one that reported last.
    pub runner: Option<RunnerReport>,
    /// Every other runner of the environment (other machines, other homes),
    /// the most recently reported first.
    pub others: Vec<RunnerReport>,
    /// The release an alive runner runs, and since when (RFC 3339).
    pub running: Option<(Release, String)>,
    /// The running release's tree, if a runner runs one.
    pub drift: Option<DriftCheck>,
}

impl EnvStatus {
    /// Whether the newest release is the one running.
    pub fn in_sync(&self) -> bool {
        matches!((&self.desired, &self.running), (Some(desired), Some((running, _))) if desired.id == running.id)
    }

    /// The processes of an alive runner: a dead one's are not known.
    pub fn processes(&self) -> &[ProcessState] {
        match &self.runner {
            Some(runner) if runner.alive() => &runner.state.processes,
            _ => &[],
        }
    }

    /// The other runners that do not serve the desired release: alive ones
    /// that run another (or nothing), and those that stopped reporting
    /// without saying they stopped. A runner that stopped cleanly is not
    /// one: a server taken out of service says so.
    pub fn others_out_of_sync(&self) -> Vec<&RunnerReport> {
        let desired = self.desired.as_ref().map(|release| release.id);
        self.others
            .iter()
            .filter(|runner| match runner.liveness {
                Liveness::Alive | Liveness::Cluster => runner.state.running.as_ref().map(|r| r.id) != desired,
                Liveness::Stale | Liveness::Gone => true,
                Liveness::Stopped => false,
            })
            .collect()
    }

    /// The runner's last failed rollout, if any.
    pub fn last_failure(&self) -> Option<&Failure> {
        self.runner.as_ref().and_then(|r| r.state.last_failure.as_ref())
    }

    /// The rollout the runner is in, if any.
    pub fn rollout(&self) -> Option<&crate::model::RolloutReport> {
        self.runner.as_ref().and_then(|r| r.state.rollout.as_ref())
    }

    /// The differences found in the running release's tree, if it was
    /// checked.
    pub fn drifted(&self) -> Option<&[Drift]> {
        match &self.drift {
            Some(DriftCheck::Checked(drift)) => Some(drift),
            _ => None,
        }
    }
}

/// Something wrong with an environment, as `status` judges it. An
/// environment is in sync and healthy when it has none; `graven status`
/// then exits 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Nothing was ever released.
    NoRelease,
    /// No runner reported for it.
    NoRunner,
    /// The runner told of is not alive.
    RunnerDown {
        /// Its report.
        runner: RunnerReport,
    },
    /// The release running is not the newest, or nothing runs yet.
    OutOfSync {
        /// The newest release.
        desired: u64,
        /// The release running, if any.
        running: Option<u64>,
        /// The failed rollout of the newest release, if it failed.
        failure: Option<Failure>,
    },
    /// Another runner does not serve the newest release.
    OtherOutOfSync {
        /// Its report.
        runner: RunnerReport,
        /// The newest release.
        desired: u64,
    },
    /// Processes that are not up (exited, restarting, starting…).
    Unhealthy {
        /// Each, with its state.
        processes: Vec<(String, crate::model::ProcessStatus)>,
    },
    /// The running release's tree differs from its artifact.
    Drifted {
        /// The release.
        release: u64,
        /// How many differences.
        differences: usize,
    },
}

impl EnvStatus {
    /// What is wrong, most fundamental first: no release, no runner, out
    /// of sync, other runners out of sync, processes not up, drift.
    pub fn problems(&self) -> Vec<Problem> {
        let Some(desired) = &self.desired else { return vec![Problem::NoRelease] };
        let mut problems = Vec::new();
        match &self.runner {
            None => problems.push(Problem::NoRunner),
            Some(runner) if !runner.alive() => problems.push(Problem::RunnerDown { runner: runner.clone() }),
            Some(_) => {}
        }
        let failure = self.last_failure().filter(|f| f.number == desired.number).cloned();
        match &self.running {
            Some((running, _)) if running.id != desired.id => {
                problems.push(Problem::OutOfSync { desired: desired.number, running: Some(running.number), failure });
            }
            None if self.runner.as_ref().is_some_and(RunnerReport::alive) => {
                problems.push(Problem::OutOfSync { desired: desired.number, running: None, failure });
            }
            _ => {}
        }
        for other in self.others_out_of_sync() {
            problems.push(Problem::OtherOutOfSync { runner: other.clone(), desired: desired.number });
        }
        let down: Vec<(String, crate::model::ProcessStatus)> = self
            .processes()
            .iter()
            .filter(|p| p.state != crate::model::ProcessStatus::Up)
            .map(|p| (p.name.clone(), p.state))
            .collect();
        if !down.is_empty() {
            problems.push(Problem::Unhealthy { processes: down });
        }
        if let (Some(drift), Some((running, _))) = (self.drifted(), &self.running)
            && !drift.is_empty()
        {
            problems.push(Problem::Drifted { release: running.number, differences: drift.len() });
        }
        problems
    }
}

/// A failure to tell an environment's status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The runner reports a release this ledger does not have.
    #[error("the runner of {env} (pid {pid} on {host}) runs v{number} {id}, which is not in this ledger")]
    UnknownRelease {
        /// The environment.
        env: String,
        /// The runner's pid.
        pid: u32,
        /// Its machine.
        host: String,
        /// The release number it reports.
        number: u64,
        /// The release id it reports.
        id: crate::Digest,
    },
}

/// Tells the status of `app`'s environment `env` from `vantage`.
pub fn env_status(ledger: &dyn Ledger, app: &str, env: &str, vantage: Vantage<'_>) -> Result<EnvStatus, StatusError> {
    let desired = ledger.current_release(app, env)?;
    let mut reports: Vec<RunnerReport> = ledger
        .run_states(app, env)?
        .into_iter()
        .map(|state| RunnerReport { liveness: liveness(&state, vantage), state })
        .collect();
    // The one told of: this machine's if it is alive, else the newest alive
    // one, else this machine's, else the newest (reports come newest first).
    let here =
        |r: &RunnerReport| r.state.host == vantage.host && same_home(Path::new(&r.state.home), vantage.home.root());
    let chosen = reports
        .iter()
        .position(|r| here(r) && r.alive())
        .or_else(|| reports.iter().position(RunnerReport::alive))
        .or_else(|| reports.iter().position(here))
        .or(if reports.is_empty() { None } else { Some(0) });
    let runner = chosen.map(|index| reports.remove(index));
    let others = reports;
    let mut running = None;
    if let Some(runner) = runner.as_ref().filter(|r| r.alive())
        && let Some(reported) = &runner.state.running
    {
        let release = ledger.release(app, env, reported.number)?;
        let Some(release) = release.filter(|r| r.id == reported.id) else {
            return Err(StatusError::UnknownRelease {
                env: env.to_owned(),
                pid: runner.state.runner_pid,
                host: runner.state.host.clone(),
                number: reported.number,
                id: reported.id,
            });
        };
        running = Some((release, reported.since.clone()));
    }
    let drift = match (&runner, &running) {
        (Some(runner), Some((release, _))) => Some(check_drift(&runner.state, release, vantage)),
        _ => None,
    };
    Ok(EnvStatus { app: app.to_owned(), env: env.to_owned(), desired, runner, others, running, drift })
}

/// Judges whether the runner that wrote `state` is alive: it says it runs,
/// it reported within [`ALIVE_WITHIN`], and, when it runs on this machine
/// with this home, its process exists.
pub fn liveness(state: &RunState, vantage: Vantage<'_>) -> Liveness {
    match state.state {
        RunnerState::Running => {}
        RunnerState::Stopped => return Liveness::Stopped,
        // What was applied stays true until the next apply: never stale.
        RunnerState::Cluster => return Liveness::Cluster,
    }
    if crate::time::age(&state.updated_at).is_none_or(|age| age > ALIVE_WITHIN) {
        return Liveness::Stale;
    }
    if state.host == vantage.host && same_home(Path::new(&state.home), vantage.home.root()) {
        let proc = Path::new("/proc");
        // Without /proc (not Linux) the pid cannot be checked here; the
        // report's age has to do.
        if proc.join("self").exists() && !proc.join(state.runner_pid.to_string()).exists() {
            return Liveness::Gone;
        }
    }
    Liveness::Alive
}

fn same_home(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Checks the tree of `release` that the runner runs, if it is on this
/// machine: under the runner's own home, against its own store.
fn check_drift(runner: &RunState, release: &Release, vantage: Vantage<'_>) -> DriftCheck {
    let version = release.version();
    if runner.host != vantage.host {
        return DriftCheck::Unknown(format!("{version} runs on {}, not on this machine", runner.host));
    }
    let home = Home::new(&runner.home);
    let tree = tree_path(&home, release);
    if !tree.is_dir() {
        return DriftCheck::Unknown(format!(
            "the tree of {version} is not laid out on this machine ({})",
            tree.display()
        ));
    }
    // The runner's own home holds the tree and the store it was laid out
    // from (a team store's local copy).
    let checked = open_store(None, &home, std::sync::Arc::new(crate::store::Silent))
        .map_err(|e| crate::error_chain(&e))
        .and_then(|store| {
            let artifact = crate::release::artifact_of(&*store, release).map_err(|e| crate::error_chain(&e))?;
            check_tree(&*store, &artifact.root, &tree).map_err(|e| crate::error_chain(&e))
        });
    match checked {
        Ok(drift) => DriftCheck::Checked(drift),
        Err(why) => DriftCheck::Unknown(format!("could not check the tree of {version}: {why}")),
    }
}

/// How one runner stands with a release it should roll out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutOutcome {
    /// It serves the release (or a newer one, which superseded it).
    Serving,
    /// Its rollout of the release failed for good (not for a passing
    /// cause, which is tried again), and why.
    Failed(String),
    /// Not yet either.
    Pending,
}

/// One alive runner's outcome for a release.
#[derive(Debug, Clone)]
pub struct RunnerRollout {
    /// The runner's machine.
    pub host: String,
    /// Its graven home there.
    pub home: String,
    /// How it stands.
    pub outcome: RolloutOutcome,
}

/// What `--wait` waits for.
#[derive(Debug, Clone, Copy)]
pub enum Goal<'a> {
    /// The release served, or a newer one (which superseded it).
    Release(&'a Release),
    /// The release rolled out again for restart request `seq`, made at
    /// `asked_at` (RFC 3339).
    Restart {
        /// The environment's current release.
        release: &'a Release,
        /// The request's number.
        seq: u64,
        /// When it was made.
        asked_at: &'a str,
    },
    /// Processes running in these counts (`graven scale`), asked at
    /// `asked_at`.
    Formation {
        /// The environment's current release.
        release: &'a Release,
        /// The counts asked for, by type; other types are not looked at.
        counts: &'a crate::model::Formation,
        /// When they were asked for.
        asked_at: &'a str,
    },
}

impl Goal<'_> {
    /// How one runner's report stands with the goal.
    pub fn outcome(&self, state: &RunState) -> RolloutOutcome {
        let (release, asked_at) = match *self {
            Goal::Release(release) => (release, None),
            Goal::Restart { release, asked_at, .. } | Goal::Formation { release, asked_at, .. } => {
                (release, Some(asked_at))
            }
        };
        let reached = state.running.as_ref().is_some_and(|running| match *self {
            Goal::Release(release) => running.number >= release.number,
            Goal::Restart { release, seq, .. } => {
                running.number > release.number || (running.number == release.number && running.restart >= seq)
            }
            Goal::Formation { counts, .. } => counts.0.iter().all(|(kind, n)| running.formation.count(kind) == *n),
        });
        if reached {
            return RolloutOutcome::Serving;
        }
        // A passing failure is tried again: still to come. One from before
        // the request is not about it.
        match &state.last_failure {
            Some(failure)
                if failure.number == release.number
                    && failure.is_final()
                    && asked_at.is_none_or(|at| failure.at.as_str() >= at) =>
            {
                RolloutOutcome::Failed(failure.reason.clone())
            }
            _ => RolloutOutcome::Pending,
        }
    }
}

/// How every alive runner of `app`'s environment `env` stands with
/// `goal`: what `--wait` waits on. Empty when no runner is alive.
pub fn rollout_of(
    ledger: &dyn Ledger,
    app: &str,
    env: &str,
    goal: Goal<'_>,
    vantage: Vantage<'_>,
) -> Result<Vec<RunnerRollout>, LedgerError> {
    Ok(ledger
        .run_states(app, env)?
        .into_iter()
        .filter(|state| liveness(state, vantage) == Liveness::Alive)
        .map(|state| RunnerRollout { outcome: goal.outcome(&state), host: state.host, home: state.home })
        .collect())
}

//! What a runner reports about itself, for `graven status`: which release it
//! runs, since when, its processes and its last failed rollout. The one
//! mutable record in the ledger: each runner overwrites its own row. And
//! what runners add to it, never to change: the release phases they
//! started, for `graven diff`.

use serde::{Deserialize, Serialize};

use crate::Digest;

/// One runner's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// The app.
    pub app: String,
    /// The environment.
    pub env: String,
    /// The machine the runner runs on.
    pub host: String,
    /// The runner's graven home, as an absolute path.
    pub home: String,
    /// The runner's process id.
    pub runner_pid: u32,
    /// Whether the runner runs, or has exited.
    pub state: RunnerState,
    /// The release it runs, if any.
    pub running: Option<RunningRelease>,
    /// Its processes.
    pub processes: Vec<ProcessState>,
    /// The last rollout that failed, if any.
    pub last_failure: Option<Failure>,
    /// The rollout under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutReport>,
    /// When the runner last wrote this, RFC 3339.
    pub updated_at: String,
}

/// A runner's lifecycle, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerState {
    /// Supervising (it may be failing to roll out a release).
    Running,
    /// Exited cleanly.
    Stopped,
    /// Not a runner: the environment's processes run on a Kubernetes
    /// cluster, and this is what the last `graven kube apply` rolled out
    /// there (`graven status --kube` asks the cluster itself).
    Cluster,
}

impl RunnerState {
    /// The state's name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Cluster => "cluster",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Running, Self::Stopped, Self::Cluster].into_iter().find(|state| state.name() == name)
    }
}

/// A process's state, as its runner reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessStatus {
    /// Running.
    Up,
    /// Started, not yet known to be up.
    Starting,
    /// Exited; to be started again after a backoff.
    Restarting,
    /// Not running.
    Stopped,
}

impl ProcessStatus {
    /// The status's name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Starting => "starting",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The release a runner runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningRelease {
    /// The release's id.
    pub id: Digest,
    /// Its number.
    pub number: u64,
    /// Since when it runs, RFC 3339.
    pub since: String,
    /// Whether its processes see its tree read-only at `/app` (runners
    /// from before the mount, and `--no-sandbox`, report `false`).
    #[serde(default)]
    pub read_only_app: bool,
    /// The user its processes run as, if not graven's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The formation its processes were started in (the environment's,
    /// under the runner's `--formation`).
    #[serde(default)]
    pub formation: crate::model::Formation,
    /// The newest `graven restart` request it was rolled out for (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart: u64,
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One process of a runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    /// `web.1`.
    pub name: String,
    /// `web`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its pid while it runs.
    pub pid: Option<u32>,
    /// Whether it is up.
    pub state: ProcessStatus,
    /// How many times it was restarted.
    pub restarts: u32,
    /// When it last started, RFC 3339.
    pub started_at: Option<String>,
}

/// A rollout that failed: the old release kept serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The release that failed to roll out.
    pub number: u64,
    /// Why.
    pub reason: String,
    /// When, RFC 3339.
    pub at: String,
    /// Whether the release is at fault (final) or the machine was, for now
    /// (tried again). Reports from before the distinction are the
    /// release's.
    #[serde(default)]
    pub cause: FailureCause,
    /// With a passing cause: when the rollout is tried again, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
}

impl Failure {
    /// Whether the runner has given this release up: only a new release or
    /// `graven restart` makes it try again.
    pub fn is_final(&self) -> bool {
        self.cause == FailureCause::Release
    }
}

/// Why a rollout failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The release: its release phase failed, a process exited before it
    /// was healthy or while settling, or it never became healthy. Final.
    #[default]
    Release,
    /// The machine, for now: no file descriptors, a full disk, a ledger that
    /// does not answer. Tried again with a backoff.
    Passing,
}

impl FailureCause {
    /// The cause's name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Passing => "passing",
        }
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStage {
    /// Laying out the tree, reading the config.
    Preparing,
    /// Running the release phase.
    ReleasePhase,
    /// Starting the new processes.
    Starting,
    /// Waiting for the new web processes to be healthy.
    Health,
    /// Waiting for every new process to stay up for `[run] settle`.
    Settling,
    /// The proxy sends every new request to the new release.
    Switched,
    /// The old release's processes finish their requests and stop.
    Draining,
    /// It failed; see the failure.
    Failed,
}

impl RolloutStage {
    /// The stage's name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::ReleasePhase => "release phase",
            Self::Starting => "starting",
            Self::Health => "health",
            Self::Settling => "settling",
            Self::Switched => "switched",
            Self::Draining => "draining",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RolloutStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The rollout a runner is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutReport {
    /// The release rolled out.
    pub number: u64,
    /// Where it is.
    pub stage: RolloutStage,
    /// The attempt, 1 for the first; more after passing failures.
    pub attempt: u32,
}

/// A release phase that a runner (or `graven kube apply`) started, as the
/// ledger records it: before the process may run, so that no run goes
/// unrecorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasePhaseRun {
    /// The app.
    pub app: String,
    /// The environment.
    pub env: String,
    /// The number of the release whose release phase it is.
    pub number: u64,
    /// Where it ran: a runner's host, or `kubernetes/<context>`.
    pub host: String,
    /// The runner's graven home (empty for a cluster).
    pub home: String,
    /// When it started, RFC 3339.
    pub started_at: String,
}

/// What the ledger knows of the release phases of some releases of one
/// environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleasePhaseRuns {
    /// The releases whose release phase was started, somewhere, at least
    /// once.
    pub started: std::collections::BTreeSet<u64>,
    /// The first release whose runs are all recorded: the releases before
    /// it were made before graven recorded release phases, and of those,
    /// a release not in `started` may have run its phase or not.
    pub recorded_from: u64,
}

impl ReleasePhaseRuns {
    /// Whether the ledger can tell if release `number`'s phase ran.
    pub fn knows(&self, number: u64) -> bool {
        number >= self.recorded_from || self.started.contains(&number)
    }
}

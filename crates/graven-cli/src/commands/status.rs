//! `graven status`: shows what [`graven::run::status`] tells of an
//! environment (desired and running release, runner, processes, last
//! failed rollout, drift) as text or JSON, and turns what is wrong into the
//! exit code and hints.

use clap::Args;
use graven::model::{ProcessState, ProcessStatus, Release};
use graven::run::Drift;
use graven::run::status::{DriftCheck, EnvStatus, Liveness, Problem, RunnerReport, StatusError, Vantage};

use crate::commands::env::EnvArg;
use crate::error::CommandError;
use crate::output::ReleaseJson;
use crate::settings::Settings;
use crate::ui;

/// The widest label of the text output, `last failure`.
const LABEL_WIDTH: usize = 12;

/// Show which release an environment runs, and whether it is the newest
///
/// Compares the environment's newest release (desired) with the one its
/// runner reports in the ledger (running), and shows the runner's processes,
/// its last failed rollout, and whether the release tree on this machine
/// still matches the artifact (drift). Every other runner of the
/// environment (other machines, other homes) is listed with the release it
/// runs. Works from another shell, and from another machine that shares the
/// ledger. A runner counts as running if it reported in the last 10 seconds
/// (it does every second).
///
/// Exits 0 when the newest release runs, its runner is alive, every process
/// is up, the tree has not drifted, and every other runner that has not
/// stopped runs the newest release too; 1 otherwise, so that scripts can
/// wait for a rollout with it.
///
/// Without --env: one line per environment of the app (desired, running,
/// in sync, runners, the first problem), exiting 1 if any has a problem.
///
/// Examples:
///   graven status
///   graven status --env production
///   graven status --env staging --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    env: EnvArg,

    /// Print the status as JSON on stdout
    #[arg(long)]
    json: bool,

    /// Ask the Kubernetes cluster (through kubectl) which release each
    /// process type runs, instead of graven's runners
    #[arg(long)]
    kube: bool,

    /// With --kube: the kubeconfig context
    #[arg(long, value_name = "NAME", requires = "kube")]
    context: Option<String>,
}

/// `last seen 1 minute ago`: why a runner is not alive.
fn why_not_alive(runner: &RunnerReport) -> String {
    let seen = ui::age(&runner.state.updated_at);
    match runner.liveness {
        Liveness::Alive => format!("alive, seen {seen}"),
        Liveness::Cluster => format!("applied to the cluster {seen} (graven status --kube asks it)"),
        Liveness::Stopped => format!("stopped {seen}"),
        Liveness::Stale => format!("last seen {seen}"),
        Liveness::Gone => format!("process {} is gone, last seen {seen}", runner.state.runner_pid),
    }
}

/// `its runner was last seen 1 minute ago`: the same, as a sentence.
fn sentence_not_alive(runner: &RunnerReport) -> String {
    let seen = ui::age(&runner.state.updated_at);
    match runner.liveness {
        Liveness::Alive => format!("its runner is alive, seen {seen}"),
        Liveness::Cluster => format!("it was applied to the cluster {seen}"),
        Liveness::Stopped => format!("its runner stopped {seen}"),
        Liveness::Stale => format!("its runner was last seen {seen}"),
        Liveness::Gone => {
            format!("its runner's process {} is gone (last seen {seen})", runner.state.runner_pid)
        }
    }
}

/// Why the environment does not run its newest release healthily, with a
/// hint for each; empty when it does.
/// Each of the environment's problems (see [`Problem`]), as a sentence
/// and what to do about it.
fn problems(status: &EnvStatus) -> Vec<(String, String)> {
    status.problems().iter().map(|problem| explain(&status.env, problem)).collect()
}

fn explain(env: &str, problem: &Problem) -> (String, String) {
    let start = format!("start one: graven run --env {env}");
    match problem {
        Problem::NoRelease => {
            (format!("{env} has no release yet"), format!("release a build first: graven release --env {env}"))
        }
        Problem::NoRunner => (format!("{env} is not running: no runner has reported for it"), start),
        Problem::RunnerDown { runner } => (format!("{env} is not running: {}", sentence_not_alive(runner)), start),
        Problem::OutOfSync { desired, running, failure } => {
            let runs = running.map_or_else(|| "nothing runs yet".to_owned(), |number| format!("v{number} runs"));
            (format!("{env} is not in sync: v{desired} is released, {runs}"), sync_hint(env, failure.as_ref()))
        }
        Problem::OtherOutOfSync { runner, desired } => {
            let state = &runner.state;
            let problem = match (&state.running, runner.alive()) {
                (Some(running), true) => {
                    format!(
                        "the runner on {} (home {}) runs v{}, not v{desired}",
                        state.host, state.home, running.number
                    )
                }
                (None, true) => format!("the runner on {} (home {}) runs nothing yet", state.host, state.home),
                (_, false) => format!("the runner on {} (home {}): {}", state.host, state.home, why_not_alive(runner)),
            };
            (problem, format!("graven logs --env {env} on {} shows what it did", state.host))
        }
        Problem::Unhealthy { processes } => {
            let down: Vec<String> = processes.iter().map(|(name, state)| format!("{name} is {state}")).collect();
            (
                format!("{env} is not healthy: {}", down.join(", ")),
                format!("graven logs --env {env} shows what they printed"),
            )
        }
        Problem::Drifted { release, differences } => (
            format!(
                "the tree of v{release} of {env} has drifted from its artifact: {}",
                ui::count_of(*differences as u64, "difference")
            ),
            format!("graven verify --env {env} lists them"),
        ),
    }
}

/// What to do about an environment out of sync, given the newest
/// release's failed rollout, if it failed.
fn sync_hint(env: &str, failure: Option<&graven::model::Failure>) -> String {
    match failure {
        Some(failure) if failure.is_final() => format!(
            "the rollout of v{} failed ({}): graven logs --env {env} shows what its processes printed; \
             release a fix, or try v{} again with graven restart --env {env}",
            failure.number, failure.reason, failure.number
        ),
        Some(failure) => format!(
            "the rollout of v{} failed for a passing cause ({}); the runner tries again{}",
            failure.number,
            failure.reason,
            failure.retry_at.as_deref().map_or_else(String::new, |at| format!(" at {at}"))
        ),
        None => format!(
            "the runner switches to a new release within a second of it, once its processes are healthy: wait, or see graven logs --env {env}"
        ),
    }
}

fn status_error(error: StatusError) -> CommandError {
    match error {
        StatusError::UnknownRelease { .. } => CommandError::failed(error)
            .hint("the runner and this command use different ledgers: check GRAVEN_HOME on both sides"),
        StatusError::Ledger(e) => CommandError::failed(e),
    }
}

pub(crate) fn cmd_status(settings: &Settings, args: &StatusArgs) -> Result<(), CommandError> {
    if args.kube {
        return crate::commands::kube::status(settings, &args.env, args.context.as_deref(), args.json);
    }
    if args.env.env.is_none() {
        return overview(settings, args.json);
    }
    let env = args.env.name()?;
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    crate::commands::env::require_existing(ledger, &app, env)?;
    let host = crate::settings::host();
    let vantage = Vantage { host: &host, home: &settings.home };
    let status = graven::run::status::env_status(ledger, &app, env, vantage).map_err(status_error)?;
    let problems = problems(&status);
    if args.json {
        ui::out_json(&json(&status, &problems));
    } else {
        ui::out(text(&status));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let message = problems.iter().map(|(problem, _)| problem.as_str()).collect::<Vec<_>>().join("; ");
    Err(problems.into_iter().fold(CommandError::failed(message), |error, (_, hint)| error.hint(hint)))
}

/// Seconds since `rfc3339`.
fn seconds_since(rfc3339: &str) -> Option<u64> {
    graven::time::age(rfc3339).map(|age| age.as_secs())
}

/// How long a process has been up: only while it is up or starting.
fn uptime(process: &ProcessState) -> Option<u64> {
    if !matches!(process.state, ProcessStatus::Up | ProcessStatus::Starting) {
        return None;
    }
    process.started_at.as_deref().and_then(seconds_since)
}

/// `12s`, `5m 3s`, `2h 5m`, `3d 4h`.
fn duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        3600..86_400 => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

fn label(name: &str) -> String {
    format!("{name:<LABEL_WIDTH$}")
}

fn line(name: &str, value: impl std::fmt::Display) -> String {
    format!("{}  {value}", label(name))
}

fn release_row(name: &str, release: &Release, when: String) -> Vec<String> {
    vec![
        label(name),
        release.version(),
        release.kind.name().to_owned(),
        ui::short_commit(&release.commit).to_owned(),
        format!("artifact {}", release.artifact.short()),
        format!("config {}", release.config.short()),
        when,
    ]
}

fn text(status: &EnvStatus) -> String {
    let env = &status.env;
    let mut lines = Vec::new();
    let mut releases = Vec::new();
    match &status.desired {
        Some(desired) => {
            releases.push(release_row("desired", desired, format!("released {}", ui::age(&desired.created_at))));
        }
        None => lines.push(line("desired", format!("nothing: {env} has no release yet"))),
    }
    if let Some((running, since)) = &status.running {
        releases.push(release_row("running", running, format!("started {}", ui::age(since))));
    }
    if !releases.is_empty() {
        lines.insert(0, ui::table(&releases));
    }
    if status.running.is_none() {
        let why = match &status.runner {
            None => "not running (no runner has reported)".to_owned(),
            Some(runner) if runner.alive() => "nothing yet (the runner has not finished a rollout)".to_owned(),
            Some(runner) => format!("not running ({})", why_not_alive(runner)),
        };
        lines.push(line("running", why));
    }
    if let Some(desired) = &status.desired {
        let in_sync = match &status.running {
            _ if status.in_sync() => "yes".to_owned(),
            Some((running, _)) => format!("no: {} is released, {} runs", desired.version(), running.version()),
            None => format!("no: {} is released, nothing runs", desired.version()),
        };
        lines.push(line("in sync", in_sync));
    }
    if let Some(runner) = &status.runner {
        lines.extend(runner_lines(runner));
    }
    lines.extend(status.others.iter().map(other_line));
    match &status.drift {
        Some(DriftCheck::Checked(drift)) if drift.is_empty() => {
            lines.push(line("drift", "none: the tree on disk matches the artifact"));
        }
        Some(DriftCheck::Checked(drift)) => lines.push(line(
            "drift",
            format!(
                "{} from the artifact: graven verify --env {env} lists them",
                ui::count_of(drift.len() as u64, "difference")
            ),
        )),
        Some(DriftCheck::Unknown(why)) => lines.push(line("drift", format!("unknown: {why}"))),
        None => {}
    }
    if let Some(rollout) = status.rollout() {
        let attempt = if rollout.attempt > 1 { format!(" (attempt {})", rollout.attempt) } else { String::new() };
        lines.push(line("rollout", format!("v{}: {}{attempt}", rollout.number, rollout.stage)));
    }
    if let Some(failure) = status.last_failure() {
        let retry = match &failure.retry_at {
            Some(at) if !failure.is_final() => format!(" (a passing cause: tried again at {at})"),
            _ => String::new(),
        };
        lines.push(line(
            "last failure",
            format!("v{}, {}: {}{retry}", failure.number, ui::age(&failure.at), failure.reason),
        ));
    }
    let processes = status.processes();
    if !processes.is_empty() {
        let mut rows = vec![["PROCESS", "TYPE", "PID", "STATE", "RESTARTS", "UPTIME"].map(str::to_owned).to_vec()];
        for process in processes {
            rows.push(vec![
                process.name.clone(),
                process.kind.clone(),
                process.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
                process.state.name().to_owned(),
                process.restarts.to_string(),
                uptime(process).map_or_else(|| "-".to_owned(), duration),
            ]);
        }
        lines.push(String::new());
        lines.push(ui::table(&rows));
    }
    lines.join("\n")
}

/// Another runner of the environment (or a cluster): where, and what it runs.
fn other_line(other: &RunnerReport) -> String {
    let state = &other.state;
    if other.liveness == Liveness::Cluster {
        return line("cluster", cluster_line(other));
    }
    let runs = match (&state.running, other.alive()) {
        (Some(running), true) => format!("runs v{}", running.number),
        (None, true) => "runs nothing yet".to_owned(),
        (_, false) => why_not_alive(other),
    };
    line(
        "runner",
        format!(
            "pid {} on {}, home {}: {runs}, reported {}",
            state.runner_pid,
            state.host,
            state.home,
            ui::age(&state.updated_at)
        ),
    )
}

/// A rollout to a Kubernetes cluster, as `graven kube apply` recorded it.
fn cluster_line(report: &RunnerReport) -> String {
    let state = &report.state;
    let release = state.running.as_ref().map_or_else(|| "nothing".to_owned(), |r| format!("v{}", r.number));
    format!(
        "{release} applied to {} {}; graven status --kube asks the cluster what runs",
        state.host,
        ui::age(&state.updated_at)
    )
}

/// This machine's runner: who and where, and how its processes see their
/// code.
fn runner_lines(runner: &RunnerReport) -> Vec<String> {
    let mut lines = Vec::new();
    let state = &runner.state;
    if runner.liveness == Liveness::Cluster {
        return vec![line("cluster", cluster_line(runner))];
    }
    lines.push(line(
        "runner",
        format!(
            "pid {} on {}, home {}: {}, reported {}",
            state.runner_pid,
            state.host,
            state.home,
            if runner.alive() { "running" } else { "not running" },
            ui::age(&state.updated_at)
        ),
    ));
    if let Some(running) = &state.running {
        lines.push(line(
            "code",
            if running.read_only_app {
                match &running.user {
                    Some(user) => format!("read-only at /app for every process, run as {user}"),
                    None => "read-only at /app for every process".to_owned(),
                }
            } else {
                "writable: the runner runs without the read-only /app (--no-sandbox, or an older graven)".to_owned()
            },
        ));
    }
    lines
}

/// DESIGN.md's `status`.
#[derive(serde::Serialize)]
struct StatusJson<'a> {
    app: &'a str,
    env: &'a str,
    desired: Option<ReleaseJson<'a>>,
    running: Option<RunningJson<'a>>,
    in_sync: bool,
    /// `null` when the tree could not be checked here.
    drift: Option<bool>,
    drift_files: Option<usize>,
    last_failure: Option<FailureJson<'a>>,
    /// The rollout under way (or failed), if any.
    rollout: Option<RolloutJson>,
    processes: Vec<ProcessJson<'a>>,
    runner: Option<RunnerJson<'a>>,
    /// Every runner of the environment, this machine's (or the newest) first.
    runners: Vec<RunnerJson<'a>>,
    /// Why the exit code is 1; empty when it is 0.
    problems: Vec<String>,
}

/// Without `--env`: one line per environment of the app, the same
/// judgement as with `--env` behind each; exits 1 if any has a problem.
fn overview(settings: &Settings, as_json: bool) -> Result<(), CommandError> {
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let host = crate::settings::host();
    let vantage = Vantage { host: &host, home: &settings.home };
    let environments = ledger.environments(&app).map_err(CommandError::failed)?;
    let mut rows = vec![["ENV", "DESIRED", "RUNNING", "IN SYNC", "RUNNERS", "PROBLEM"].map(str::to_owned).to_vec()];
    let mut json = Vec::new();
    let mut troubled = Vec::new();
    for env in &environments {
        let status = graven::run::status::env_status(ledger, &app, env, vantage).map_err(status_error)?;
        let problems = problems(&status);
        let desired = status.desired.as_ref().map(graven::model::Release::version);
        let running = status.running.as_ref().map(|(release, _)| release.version());
        let runners = usize::from(status.runner.is_some()) + status.others.len();
        let first_problem = problems.first().map(|(problem, _)| problem.clone());
        rows.push(vec![
            env.clone(),
            desired.clone().unwrap_or_else(|| "-".to_owned()),
            running.clone().unwrap_or_else(|| "-".to_owned()),
            if status.in_sync() { "yes" } else { "no" }.to_owned(),
            runners.to_string(),
            first_problem.clone().unwrap_or_default(),
        ]);
        json.push(serde_json::json!({
            "env": env,
            "desired": desired,
            "running": running,
            "in_sync": status.in_sync(),
            "runners": runners,
            "problems": problems.iter().map(|(problem, _)| problem).collect::<Vec<_>>(),
        }));
        if !problems.is_empty() {
            troubled.push(env.clone());
        }
    }
    if as_json {
        ui::out_json(&json);
    } else if environments.is_empty() {
        ui::note(format!("{app} has no environments yet: make one with graven release --env ENV"));
    } else {
        ui::out(ui::table(&rows));
    }
    if troubled.is_empty() {
        return Ok(());
    }
    Err(CommandError::failed(format!("not every environment of {app} is in sync and healthy: {}", troubled.join(", ")))
        .hint("graven status --env ENV says why, for each"))
}

#[derive(serde::Serialize)]
struct RunningJson<'a> {
    #[serde(flatten)]
    release: ReleaseJson<'a>,
    since: &'a str,
}

#[derive(serde::Serialize)]
struct FailureJson<'a> {
    number: u64,
    version: String,
    reason: &'a str,
    at: &'a str,
    /// `release` (final) or `passing` (tried again at `retry_at`).
    cause: &'static str,
    retry_at: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct RolloutJson {
    number: u64,
    version: String,
    /// `preparing`, `release phase`, `starting`, `health`, `settling`,
    /// `switched`, `draining` or `failed`.
    stage: &'static str,
    attempt: u32,
}

#[derive(serde::Serialize)]
struct ProcessJson<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    pid: Option<u32>,
    state: &'a str,
    restarts: u32,
    uptime_s: Option<u64>,
    started_at: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct RunnerJson<'a> {
    pid: u32,
    host: &'a str,
    home: &'a str,
    state: &'a str,
    alive: bool,
    updated_at: &'a str,
    /// The release it last reported running.
    release: Option<String>,
    /// Whether it is alive and runs the desired release.
    in_sync: bool,
    /// Whether its processes see their code read-only at /app; `null`
    /// while it runs no release.
    read_only_app: Option<bool>,
    /// The user its processes run as, if not graven's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

fn runner_json(r: &RunnerReport, desired: Option<u64>) -> RunnerJson<'_> {
    let number = r.state.running.as_ref().map(|running| running.number);
    RunnerJson {
        pid: r.state.runner_pid,
        host: &r.state.host,
        home: &r.state.home,
        state: r.state.state.name(),
        alive: r.alive(),
        updated_at: &r.state.updated_at,
        release: number.map(|n| format!("v{n}")),
        in_sync: r.alive() && number.is_some() && number == desired,
        read_only_app: r.state.running.as_ref().map(|running| running.read_only_app),
        user: r.state.running.as_ref().and_then(|running| running.user.as_deref()),
    }
}

fn json<'a>(status: &'a EnvStatus, problems: &[(String, String)]) -> StatusJson<'a> {
    let desired_number = status.desired.as_ref().map(|r| r.number);
    StatusJson {
        app: &status.app,
        env: &status.env,
        desired: status.desired.as_ref().map(|r| ReleaseJson::new(r, true)),
        running: status.running.as_ref().map(|(release, since)| RunningJson {
            release: ReleaseJson::new(release, Some(release.number) == desired_number),
            since,
        }),
        in_sync: status.in_sync(),
        drift: status.drifted().map(|d| !d.is_empty()),
        drift_files: status.drifted().map(<[Drift]>::len),
        last_failure: status.last_failure().map(|f| FailureJson {
            number: f.number,
            version: format!("v{}", f.number),
            reason: &f.reason,
            at: &f.at,
            cause: f.cause.name(),
            retry_at: f.retry_at.as_deref(),
        }),
        rollout: status.rollout().map(|r| RolloutJson {
            number: r.number,
            version: format!("v{}", r.number),
            stage: r.stage.name(),
            attempt: r.attempt,
        }),
        processes: status
            .processes()
            .iter()
            .map(|p| ProcessJson {
                name: &p.name,
                kind: &p.kind,
                pid: p.pid,
                state: p.state.name(),
                restarts: p.restarts,
                uptime_s: uptime(p),
                started_at: p.started_at.as_deref(),
            })
            .collect(),
        runner: status.runner.as_ref().map(|r| runner_json(r, desired_number)),
        runners: status.runner.iter().chain(&status.others).map(|r| runner_json(r, desired_number)).collect(),
        problems: problems.iter().map(|(problem, _)| problem.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_uptimes() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(303), "5m 3s");
        assert_eq!(duration(7500), "2h 5m");
        assert_eq!(duration(273_600), "3d 4h");
    }
}

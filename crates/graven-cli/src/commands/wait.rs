//! `--wait`: after a command that makes a release, block until every
//! runner of the environment serves it (or fails it), and say how each did.

use std::time::{Duration, Instant};

use clap::Args;
use graven::ledger::Ledger;
use graven::model::Release;
use graven::run::status::{Goal, RolloutOutcome, Vantage, rollout_of};

use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// `--wait` and `--wait-timeout`.
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct WaitArgs {
    /// Wait until every runner of the environment serves the change, or
    /// fails it; say how each did; exit 0 only if all serve it
    #[arg(long)]
    wait: bool,

    /// How long --wait waits, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 120, requires = "wait")]
    wait_timeout: u64,
}

impl WaitArgs {
    /// Whether `--wait` was given.
    pub(crate) fn given(self) -> bool {
        self.wait
    }
}

/// How often the runners' reports are read while waiting.
const LOOK_EVERY: Duration = Duration::from_millis(100);

impl WaitArgs {
    /// Waits for `release` of `env` if `--wait` was given. Outcome lines go
    /// to stdout, or to stderr when stdout carries JSON.
    pub(crate) fn wait_for(
        self,
        settings: &Settings,
        ledger: &dyn Ledger,
        app: &str,
        env: &str,
        release: &Release,
        json: bool,
    ) -> Result<(), CommandError> {
        self.wait_for_goal(settings, ledger, app, env, Goal::Release(release), json)
    }

    /// Waits for `goal` if `--wait` was given, as [`WaitArgs::wait_for`].
    pub(crate) fn wait_for_goal(
        self,
        settings: &Settings,
        ledger: &dyn Ledger,
        app: &str,
        env: &str,
        goal: Goal<'_>,
        json: bool,
    ) -> Result<(), CommandError> {
        if !self.wait {
            return Ok(());
        }
        let host = crate::settings::host();
        let vantage = Vantage { host: &host, home: &settings.home };
        let deadline = Instant::now() + Duration::from_secs(self.wait_timeout);
        let version = what(goal);
        let say = |text: String| if json { ui::note(text) } else { ui::out(text) };
        loop {
            let runners = rollout_of(ledger, app, env, goal, vantage).map_err(CommandError::failed)?;
            let done = !runners.is_empty() && runners.iter().all(|r| r.outcome != RolloutOutcome::Pending);
            if done || Instant::now() >= deadline {
                if runners.is_empty() {
                    return Err(CommandError::failed(format!(
                        "no runner of {env} is running: nothing rolled {version} out within {} s",
                        self.wait_timeout
                    ))
                    .hint(format!("start one: graven run --env {env}")));
                }
                let mut failed = Vec::new();
                for runner in &runners {
                    let outcome = match &runner.outcome {
                        RolloutOutcome::Serving => reached(goal),
                        RolloutOutcome::Failed(reason) => {
                            failed.push(runner.host.clone());
                            format!("failed {version}: {reason}")
                        }
                        RolloutOutcome::Pending => {
                            failed.push(runner.host.clone());
                            format!("has not rolled {version} out after {} s", self.wait_timeout)
                        }
                    };
                    say(format!("{} ({}): {outcome}", runner.host, runner.home));
                }
                if failed.is_empty() {
                    return Ok(());
                }
                return Err(CommandError::failed(format!(
                    "{version} of {env} is not served everywhere: not on {}",
                    failed.join(", ")
                ))
                .hint(format!("graven status --env {env} and graven logs --env {env} say why")));
            }
            std::thread::sleep(LOOK_EVERY);
        }
    }
}

/// What a goal is, as the outcome lines name it: `v5`, or `web=2`.
fn what(goal: Goal<'_>) -> String {
    match goal {
        Goal::Release(release) | Goal::Restart { release, .. } => release.version(),
        Goal::Formation { counts, .. } => counts.to_string(),
    }
}

/// What a runner that reached `goal` does: `serves v5`, `serves v5,
/// restarted`, `runs web=2`.
fn reached(goal: Goal<'_>) -> String {
    match goal {
        Goal::Release(release) => format!("serves {}", release.version()),
        Goal::Restart { release, .. } => format!("serves {}, restarted", release.version()),
        Goal::Formation { counts, .. } => format!("runs {counts}"),
    }
}

//! The `--env` flag, shared by every command that acts on an environment.

use clap::Args;

use crate::error::CommandError;

/// `--env ENV` (or `GRAVEN_ENV`).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct EnvArg {
    /// The environment, e.g. staging or production [env: GRAVEN_ENV]
    #[arg(long, short = 'e', value_name = "ENV", env = graven::env_vars::GRAVEN_ENV, hide_env = true)]
    pub(crate) env: Option<String>,
}

/// Refuses an environment that does not exist, naming the ones that do.
pub(crate) fn require_existing(ledger: &dyn graven::ledger::Ledger, app: &str, env: &str) -> Result<(), CommandError> {
    let environments = ledger.environments(app).map_err(CommandError::failed)?;
    if environments.iter().any(|e| e == env) {
        return Ok(());
    }
    let hint = if environments.is_empty() {
        format!("{app} has no environments yet: make one with graven release --env {env}")
    } else {
        format!("the environments of {app} are: {}", environments.join(", "))
    };
    Err(CommandError::bad_input(format!("environment '{env}' does not exist")).hint(hint))
}

impl EnvArg {
    /// The environment's name, checked.
    pub(crate) fn name(&self) -> Result<&str, CommandError> {
        let Some(env) = self.env.as_deref() else {
            return Err(CommandError::bad_input("no environment given")
                .hint("pass --env NAME (for example --env production), or set GRAVEN_ENV"));
        };
        graven::release::check_env_name(env)?;
        Ok(env)
    }
}

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

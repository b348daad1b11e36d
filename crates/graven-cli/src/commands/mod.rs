//! The command line: one enum, one match, one file per command.

mod build;
mod builds;
mod config;
mod diff;
mod env;
mod exec;
mod export;
mod gc;
mod init;
mod kube;
mod logs;
mod promote;
mod push;
mod quickstart;
mod release;
mod releases;
mod restart;
mod rollback;
mod run;
mod scale;
mod status;
mod verify;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::CommandError;
use crate::settings::Settings;

/// graven: build, release and run, strictly separated.
///
/// graven builds an exact git commit into an immutable, content-addressed
/// artifact, releases it with an environment's config as a numbered,
/// immutable release, and runs it. Everything it does is recorded in an
/// append-only ledger under .graven/ at the root of your repository.
///
/// Start with `graven init` in your app's repository, then `graven build`.
#[derive(Parser, Debug)]
#[command(name = "graven", version, propagate_version = true, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every command takes.
#[derive(Args, Debug)]
pub(crate) struct GlobalArgs {
    /// Where graven keeps its ledger and store [default: .graven/ at the repository root]
    #[arg(long, global = true, value_name = "DIR", env = graven::env_vars::GRAVEN_HOME)]
    pub(crate) home: Option<PathBuf>,

    /// The app [default: graven.toml's [app] name, else the repository's directory name; outside a repository, the ledger's only app]
    #[arg(long, global = true, value_name = "NAME", env = graven::env_vars::GRAVEN_APP)]
    pub(crate) app: Option<String>,

    /// The ledger's URL [default: the home's embedded SQLite ledger; sqlite:PATH for another file]
    #[arg(long, global = true, value_name = "URL", env = graven::env_vars::GRAVEN_LEDGER, hide_env_values = true)]
    pub(crate) ledger_url: Option<String>,

    /// The store's URL [default: the home's local store; file:PATH for another directory]
    #[arg(long, global = true, value_name = "URL", env = graven::env_vars::GRAVEN_STORE, hide_env_values = true)]
    pub(crate) store_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    Init(init::InitArgs),
    Build(build::BuildArgs),
    Builds(builds::BuildsArgs),
    Export(export::ExportArgs),
    Push(push::PushArgs),
    Kube(kube::KubeArgs),
    Config(config::ConfigArgs),
    Release(release::ReleaseArgs),
    Releases(releases::ReleasesArgs),
    Diff(diff::DiffArgs),
    Rollback(rollback::RollbackArgs),
    Promote(promote::PromoteArgs),
    Run(run::RunArgs),
    Scale(scale::ScaleArgs),
    Restart(restart::RestartArgs),
    Exec(exec::ExecArgs),
    Status(status::StatusArgs),
    Verify(verify::VerifyArgs),
    Logs(logs::LogsArgs),
    Gc(gc::GcArgs),
    Quickstart(quickstart::QuickstartArgs),
}

/// Runs the command the user asked for.
pub(crate) fn run(cli: &Cli) -> Result<ExitCode, CommandError> {
    if let Command::Quickstart(args) = &cli.command {
        return quickstart::cmd_quickstart(args).map(|()| ExitCode::SUCCESS);
    }
    let settings = Settings::resolve(&cli.global)?;
    dispatch(&settings, &cli.command)
}

/// Runs `command` with resolved settings; returns graven's exit code (for
/// `exec`, its command's).
pub(crate) fn dispatch(settings: &Settings, command: &Command) -> Result<ExitCode, CommandError> {
    let outcome = match command {
        Command::Init(args) => init::cmd_init(settings, args),
        Command::Build(args) => build::cmd_build(settings, args),
        Command::Builds(args) => builds::cmd_builds(settings, args),
        Command::Export(args) => export::cmd_export(settings, args),
        Command::Push(args) => push::cmd_push(settings, args),
        Command::Kube(args) => kube::cmd_kube(settings, args),
        Command::Config(args) => config::cmd_config(settings, args),
        Command::Release(args) => release::cmd_release(settings, args),
        Command::Releases(args) => releases::cmd_releases(settings, args),
        Command::Diff(args) => diff::cmd_diff(settings, args),
        Command::Rollback(args) => rollback::cmd_rollback(settings, args),
        Command::Promote(args) => promote::cmd_promote(settings, args),
        Command::Run(args) => run::cmd_run(settings, args),
        Command::Scale(args) => scale::cmd_scale(settings, args),
        Command::Restart(args) => restart::cmd_restart(settings, args),
        Command::Exec(args) => return exec::cmd_exec(settings, args),
        Command::Status(args) => status::cmd_status(settings, args),
        Command::Verify(args) => verify::cmd_verify(settings, args),
        Command::Logs(args) => logs::cmd_logs(settings, args),
        Command::Gc(args) => gc::cmd_gc(settings, args),
        Command::Quickstart(args) => quickstart::cmd_quickstart(args),
    };
    outcome.map(|()| ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}

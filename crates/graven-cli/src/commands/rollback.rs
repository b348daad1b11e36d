//! `graven rollback`: a new release with an earlier release's code and config.

use clap::Args;

use crate::commands::env::EnvArg;
use crate::commands::release::parse_version;
use crate::error::CommandError;
use crate::output::ReleaseJson;
use crate::settings::Settings;
use crate::ui;

/// Roll back to an earlier release's artifact and config
///
/// Creates a new release (kind "rollback") with the artifact *and* the config
/// of release vN; nothing is rewritten, so the rollback itself is in the
/// history. The default is the release the current one replaced.
///
/// Examples:
///   graven rollback --env production        # to the release before the current one
///   graven rollback v41 --env production
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct RollbackArgs {
    /// The release to roll back to: v41 (or 41) [default: the one before the current]
    #[arg(value_name = "vN")]
    target: Option<String>,

    #[command(flatten)]
    env: EnvArg,

    /// Print the new release as JSON on stdout
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    wait: crate::commands::wait::WaitArgs,
}

pub(crate) fn cmd_rollback(settings: &Settings, args: &RollbackArgs) -> Result<(), CommandError> {
    let env = args.env.name()?;
    let target = args.target.as_deref().map(parse_version).transpose()?;
    let open = settings.open_stage()?;
    let (app, stage) = (&open.app, open.stage());
    let release = stage.rollback(env, target)?.release.expect("a rollback makes a release");
    if args.json {
        ui::out_json(&ReleaseJson::new(&release, true));
    } else {
        ui::out(format!(
            "released {app} {} to {env}: {} ({} from {}, config {})",
            release.version(),
            release.description,
            release.artifact.short(),
            ui::short_commit(&release.commit),
            release.config.short()
        ));
    }
    args.wait.wait_for(settings, &*open.ledger, app, env, &release, args.json)
}

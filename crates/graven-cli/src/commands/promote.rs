//! `graven promote`: one environment's artifact, another's config.

use clap::Args;

use crate::error::CommandError;
use crate::output::ReleaseJson;
use crate::settings::Settings;
use crate::ui;

/// Release one environment's current artifact to another environment
///
/// Build once, deploy many: the new release in TO (kind "promote") has the
/// exact artifact FROM runs, with TO's own config.
///
/// Example:
///   graven promote staging production
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct PromoteArgs {
    /// The environment whose current artifact is promoted
    from: String,
    /// The environment that gets it
    to: String,
    /// Print the new release as JSON on stdout
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    wait: crate::commands::wait::WaitArgs,
}

pub(crate) fn cmd_promote(settings: &Settings, args: &PromoteArgs) -> Result<(), CommandError> {
    let open = settings.open_stage()?;
    let (app, stage) = (&open.app, open.stage());
    let outcome = stage.promote(&args.from, &args.to)?;
    if outcome.created_env {
        ui::note(format!("created environment '{}'", args.to));
    }
    let release = outcome.release.expect("a promotion makes a release");
    if args.json {
        ui::out_json(&ReleaseJson::new(&release, true));
    } else {
        ui::out(format!(
            "released {app} {} to {}: {} ({} from {}, config {})",
            release.version(),
            args.to,
            release.description,
            release.artifact.short(),
            ui::short_commit(&release.commit),
            release.config.short()
        ));
    }
    args.wait.wait_for(settings, &*open.ledger, app, &args.to, &release, args.json)
}

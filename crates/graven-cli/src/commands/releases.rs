//! `graven releases`: an environment's history, newest first.

use clap::Args;
use graven::ledger::Ledger as _;

use crate::commands::env::EnvArg;
use crate::error::CommandError;
use crate::output::ReleaseJson;
use crate::settings::Settings;
use crate::ui;

/// List an environment's releases, newest first.
///
/// Every deploy, config change, rollback and promotion is a release; none is
/// ever changed or removed. The current release is marked with '*'.
#[derive(Args, Debug)]
pub(crate) struct ReleasesArgs {
    #[command(flatten)]
    env: EnvArg,

    /// Show at most this many releases
    #[arg(long, short = 'n', value_name = "N")]
    limit: Option<u64>,

    /// Print the releases as a JSON array on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_releases(settings: &Settings, args: &ReleasesArgs) -> Result<(), CommandError> {
    let env = args.env.name()?;
    let app = settings.app()?;
    let ledger = settings.ledger()?;
    let releases = ledger.releases(&app, env, args.limit).map_err(CommandError::failed)?;
    let current = releases.first().map(|r| r.number);
    if args.json {
        let json: Vec<ReleaseJson<'_>> =
            releases.iter().map(|r| ReleaseJson::new(r, Some(r.number) == current)).collect();
        ui::out_json(&json);
        return Ok(());
    }
    if releases.is_empty() {
        ui::note(format!("environment '{env}' has no releases yet; make one with graven release --env {env}"));
        return Ok(());
    }
    let mut rows =
        vec![["", "VERSION", "KIND", "COMMIT", "ARTIFACT", "BY", "CREATED", "DESCRIPTION"].map(str::to_owned).to_vec()];
    for release in &releases {
        rows.push(vec![
            if Some(release.number) == current { "*".to_owned() } else { String::new() },
            release.version(),
            release.kind.name().to_owned(),
            ui::short_commit(&release.commit).to_owned(),
            release.artifact.short(),
            release.author.clone(),
            ui::age(&release.created_at),
            release.description.clone(),
        ]);
    }
    ui::out(ui::table(&rows));
    Ok(())
}

//! `graven builds`: the app's builds, newest first.

use clap::Args;
use graven::ledger::Ledger as _;
use graven::store::{ObjectKind, Store as _};

use crate::error::CommandError;
use crate::output::BuildJson;
use crate::settings::Settings;
use crate::ui;

/// List the app's builds, newest first.
///
/// Each build is one run of the build stage: the commit it came from, the
/// artifact it produced, its size and who ran it. A dirty build (made with
/// --allow-dirty from uncommitted changes) is marked as such for good; a
/// build whose artifact graven gc deleted is marked "collected".
#[derive(Args, Debug)]
pub(crate) struct BuildsArgs {
    /// Print the builds as a JSON array on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_builds(settings: &Settings, args: &BuildsArgs) -> Result<(), CommandError> {
    let app = settings.app()?;
    let ledger = settings.ledger()?;
    let store = settings.store()?;
    let builds = ledger.builds(&app).map_err(CommandError::failed)?;
    // A build whose artifact graven gc deleted stays listed, marked.
    let collected: Vec<bool> =
        builds.iter().map(|b| !store.has_object(ObjectKind::Artifact, &b.build.artifact).unwrap_or(false)).collect();
    if args.json {
        let json: Vec<BuildJson<'_>> = builds
            .iter()
            .zip(&collected)
            .map(|(build, &collected)| BuildJson { collected: Some(collected), ..BuildJson::new(build) })
            .collect();
        ui::out_json(&json);
        return Ok(());
    }
    if builds.is_empty() {
        ui::note(format!("app '{app}' has no builds yet; run `graven build` in its repository"));
        return Ok(());
    }
    let mut rows = vec![["ARTIFACT", "COMMIT", "FILES", "SIZE", "BUILT", "BY"].map(str::to_owned).to_vec()];
    for (record, &collected) in builds.iter().zip(&collected) {
        let build = &record.build;
        let commit = if build.dirty {
            format!("{}+dirty", ui::short_commit(&build.commit))
        } else {
            ui::short_commit(&build.commit).to_owned()
        };
        rows.push(vec![
            build.artifact.short(),
            commit,
            ui::count(build.files),
            if collected { "collected".to_owned() } else { ui::bytes(build.bytes) },
            ui::age(&build.finished_at),
            build.author.clone(),
        ]);
    }
    ui::out(ui::table(&rows));
    Ok(())
}

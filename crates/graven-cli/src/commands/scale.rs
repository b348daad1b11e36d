//! `graven scale`: an environment's formation, in the ledger.

use clap::Args;
use graven::model::{Formation, FormationRecord};

use crate::commands::env::EnvArg;
use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Set how many processes of each type an environment runs
///
/// The formation is the environment's, kept in the ledger (like
/// heroku ps:scale): every runner of the environment applies a change at
/// once, without downtime, and keeps it across releases and rollbacks.
/// Scaling makes no release. Types you do not name keep their count; a type
/// never scaled runs one process; 0 runs none. Without TYPE=N, shows the
/// formation. graven run --formation overrides it for one runner.
///
/// Examples:
///   graven scale web=2 worker=1 --env production
///   graven scale web=3 --env production --wait   # until every runner runs 3
///   graven scale worker=0 --env staging
///   graven scale --env production --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct ScaleArgs {
    /// Process counts, e.g. web=2 worker=1 (from 0 to 100 each)
    #[arg(value_name = "TYPE=N")]
    counts: Vec<String>,

    #[command(flatten)]
    env: EnvArg,

    /// Print the formation as JSON on stdout
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    wait: crate::commands::wait::WaitArgs,
}

pub(crate) fn cmd_scale(settings: &Settings, args: &ScaleArgs) -> Result<(), CommandError> {
    let env = args.env.name()?;
    let change = Formation::parse(args.counts.iter().map(String::as_str))
        .map_err(|e| CommandError::bad_input(e).hint("write it like graven scale web=2 worker=1 --env ENV"))?;
    let app = settings.app()?;
    if args.counts.is_empty() {
        if args.wait.given() {
            return Err(CommandError::bad_input("--wait waits for a change, and none was given")
                .hint("name the counts to set, like graven scale web=2 --env ENV --wait"));
        }
        let ledger = settings.ledger_for_reading()?;
        let current = ledger.formation(&app, env).map_err(CommandError::failed)?;
        show(env, current.as_ref().map(|record| &record.formation), args.json);
        return Ok(());
    }
    let ledger = settings.ledger()?;
    crate::commands::env::require_existing(&*ledger, &app, env)?;
    let current = ledger.formation(&app, env).map_err(CommandError::failed)?.map(|record| record.formation);
    let formation = current.unwrap_or_default().overridden_by(&change);
    let record = FormationRecord {
        formation: formation.clone(),
        author: settings.author(),
        created_at: graven::time::now_rfc3339(),
    };
    ledger.set_formation(&app, env, &record).map_err(CommandError::failed)?;
    if args.json {
        show(env, Some(&formation), true);
    } else {
        ui::out(format!("scaled {app} in {env} to {formation}; its runners apply it now"));
    }
    if !args.wait.given() {
        return Ok(());
    }
    let Some(release) = ledger.current_release(&app, env).map_err(CommandError::failed)? else {
        return Err(CommandError::failed(format!("{env} has no release: there is nothing to scale"))
            .hint(format!("release a build first: graven release --env {env}")));
    };
    let goal =
        graven::run::status::Goal::Formation { release: &release, counts: &change, asked_at: &record.created_at };
    args.wait.wait_for_goal(settings, &*ledger, &app, env, goal, args.json)
}

fn show(env: &str, formation: Option<&Formation>, json: bool) {
    if json {
        ui::out_json(
            &serde_json::json!({"env": env, "formation": formation.map_or_else(Default::default, |f| f.0.clone())}),
        );
    } else {
        match formation {
            Some(formation) => ui::out(format!("{env}: {formation}")),
            None => ui::out(format!("{env}: one process of each type (never scaled)")),
        }
    }
}

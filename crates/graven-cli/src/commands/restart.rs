//! `graven restart`: every runner of an environment rolls its release out
//! again.

use clap::Args;

use crate::commands::env::EnvArg;
use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Roll an environment's current release out again, on every runner
///
/// Each runner starts fresh processes of the current release, checks their
/// health, switches to them and drains the old ones: no downtime, and no
/// release phase (the release is the same). It is also how a release whose
/// rollout failed for good (its processes crashed, say, because a database
/// was down) gets another chance without a new release. The request is
/// recorded in the ledger; it makes no release.
///
/// Examples:
///   graven restart --env production
///   graven restart --env production --wait
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct RestartArgs {
    #[command(flatten)]
    env: EnvArg,

    /// Print the request as JSON on stdout
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    wait: crate::commands::wait::WaitArgs,
}

pub(crate) fn cmd_restart(settings: &Settings, args: &RestartArgs) -> Result<(), CommandError> {
    let env = args.env.name()?;
    let app = settings.app()?;
    let ledger = settings.ledger()?;
    crate::commands::env::require_existing(&*ledger, &app, env)?;
    let Some(release) = ledger.current_release(&app, env).map_err(CommandError::failed)? else {
        return Err(CommandError::bad_input(format!("{env} has no release: there is nothing to restart"))
            .hint(format!("release a build first: graven release --env {env}")));
    };
    let asked_at = graven::time::now_rfc3339();
    let seq = ledger.request_restart(&app, env, &settings.author(), &asked_at).map_err(CommandError::failed)?;
    if args.json {
        ui::out_json(&serde_json::json!({
            "app": app,
            "env": env,
            "restart": seq,
            "release": release.version(),
            "asked_at": asked_at,
        }));
    } else {
        ui::out(format!("asked every runner of {app} {env} to restart {}", release.version()));
    }
    let goal = graven::run::status::Goal::Restart { release: &release, seq, asked_at: &asked_at };
    args.wait.wait_for_goal(settings, &*ledger, &app, env, goal, args.json)
}

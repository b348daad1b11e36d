//! `graven releases`: an environment's history, newest first.

use clap::Args;

use crate::commands::env::EnvArg;
use crate::error::CommandError;
use crate::output::ReleaseJson;
use crate::settings::Settings;
use crate::ui;

/// List an environment's releases, newest first.
///
/// Every deploy, config change, rollback and promotion is a release; none is
/// ever changed or removed. The current release is marked with '*', and a
/// release whose rollout failed on a runner's host with '!', its reason
/// said below the table (and in --json as "rollout_failures").
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

/// Each runner's last failed rollout, with the runner's host.
pub(crate) fn rollout_failures(
    ledger: &dyn graven::ledger::Ledger,
    app: &str,
    env: &str,
) -> Result<Vec<(String, graven::model::Failure)>, CommandError> {
    Ok(ledger
        .run_states(app, env)
        .map_err(CommandError::failed)?
        .into_iter()
        .filter_map(|state| state.last_failure.map(|failure| (state.host, failure)))
        .collect())
}

/// A runner's failed rollout, as `releases --json` and `release show
/// --json` give it.
pub(crate) fn failure_json(host: &str, failure: &graven::model::Failure) -> serde_json::Value {
    serde_json::json!({
        "host": host,
        "reason": failure.reason,
        "at": failure.at,
        "cause": failure.cause.name(),
        "retry_at": failure.retry_at,
    })
}

/// `failed on HOST: REASON`, and when a passing cause is tried again.
pub(crate) fn failure_words(host: &str, failure: &graven::model::Failure) -> String {
    match (&failure.retry_at, failure.is_final()) {
        (Some(at), false) => format!("failed on {host} (a passing cause, tried again at {at}): {}", failure.reason),
        _ => format!("failed on {host}: {}", failure.reason),
    }
}

pub(crate) fn cmd_releases(settings: &Settings, args: &ReleasesArgs) -> Result<(), CommandError> {
    let env = args.env.name()?;
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let releases = ledger.releases(&app, env, args.limit).map_err(CommandError::failed)?;
    let current = releases.first().map(|r| r.number);
    // Each runner's last failed rollout, by release number.
    let failures = rollout_failures(ledger, &app, env)?;
    let failures_of = |number: u64| failures.iter().filter(move |(_, failure)| failure.number == number);
    if args.json {
        let json: Vec<serde_json::Value> = releases
            .iter()
            .map(|r| {
                let mut json =
                    serde_json::to_value(ReleaseJson::new(r, Some(r.number) == current)).expect("a release serialises");
                json["rollout_failures"] = failures_of(r.number).map(|(host, f)| failure_json(host, f)).collect();
                json
            })
            .collect();
        ui::out_json(&json);
        return Ok(());
    }
    if releases.is_empty() {
        ui::note(format!("environment '{env}' has no releases yet; make one with graven release --env {env}"));
        return Ok(());
    }
    let mut rows = vec![
        ["", "VERSION", "KIND", "COMMIT", "ARTIFACT", "BY", "FROM", "CREATED", "DESCRIPTION"]
            .map(str::to_owned)
            .to_vec(),
    ];
    let mut said = Vec::new();
    for release in &releases {
        let mut mark = if Some(release.number) == current { "*".to_owned() } else { String::new() };
        for (host, failure) in failures_of(release.number) {
            if !mark.contains('!') {
                mark.push('!');
            }
            said.push(format!("{}'s rollout {}", release.version(), failure_words(host, failure)));
        }
        rows.push(vec![
            mark,
            release.version(),
            release.kind.name().to_owned(),
            ui::short_commit(&release.commit).to_owned(),
            release.artifact.short(),
            release.author.clone(),
            release.host.clone().unwrap_or_else(|| "-".to_owned()),
            ui::age(&release.created_at),
            release.description.clone(),
        ]);
    }
    ui::out(ui::table(&rows));
    for line in said {
        ui::out(format!("! {line}"));
    }
    Ok(())
}

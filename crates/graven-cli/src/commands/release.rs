//! `graven release`: an artifact plus an environment's config becomes
//! release vN; `graven release show vN` shows one.

use clap::{Args, Subcommand};

use crate::commands::env::EnvArg;
use crate::error::CommandError;
use crate::output::ReleaseJson;
use crate::settings::Settings;
use crate::ui;

/// Release a build to an environment: artifact + that environment's config
///
/// Creates release vN of the environment: immutable, numbered without gaps,
/// chained to the release before it by its id. The build must exist (run
/// graven build first); the artifact is refused if it contains the value of a
/// secret config variable, so config is never baked into a build.
///
/// Examples:
///   graven release --env staging                 # the newest build of HEAD
///   graven release 3f9c2a1 --env production -m "Fix the login page"
///   graven release show v42 --env production
#[derive(Args, Debug)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = true)]
pub(crate) struct ReleaseArgs {
    #[command(subcommand)]
    command: Option<ReleaseCommand>,

    /// The build to release: an artifact id, a prefix of 7+ hex digits, or a
    /// commit [default: HEAD]
    #[arg(value_name = "BUILD|REV")]
    build: Option<String>,

    #[command(flatten)]
    env: EnvArg,

    /// What the release is for [default: Deploy <commit>]
    #[arg(short, long, value_name = "MSG")]
    message: Option<String>,

    /// Print the release as JSON on stdout
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    wait: crate::commands::wait::WaitArgs,
}

#[derive(Subcommand, Debug)]
enum ReleaseCommand {
    /// Show one release: the whole record, its config keys and its artifact
    Show(ShowArgs),
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// The release: v42 (or 42)
    #[arg(value_name = "vN")]
    release: String,
    #[command(flatten)]
    env: EnvArg,
    /// Print the release as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_release(settings: &Settings, args: &ReleaseArgs) -> Result<(), CommandError> {
    if let Some(ReleaseCommand::Show(show_args)) = &args.command {
        return show(settings, show_args);
    }
    let env = args.env.name()?;
    let open = settings.open_stage()?;
    let (app, stage) = (&open.app, open.stage());
    let reference = args.build.as_deref().unwrap_or("HEAD");
    let build = graven::build::resolve_build(&*open.ledger, app, settings.repo.as_ref(), reference)?;
    let outcome = stage.deploy(env, &build, args.message.as_deref())?;
    if outcome.created_env {
        ui::note(format!("created environment '{env}'"));
    }
    let release = outcome.release.expect("a deploy makes a release");
    if args.json {
        ui::out_json(&ReleaseJson::new(&release, true));
    } else {
        ui::out(format!(
            "released {app} {} to {env}: {} from {} with config {}",
            release.version(),
            release.artifact.short(),
            ui::short_commit(&release.commit),
            release.config.short()
        ));
    }
    args.wait.wait_for(settings, &*open.ledger, app, env, &release, args.json)
}

/// Parses `v42` or `42`.
pub(crate) fn parse_version(text: &str) -> Result<u64, CommandError> {
    text.strip_prefix('v').unwrap_or(text).parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        CommandError::bad_input(format!("'{text}' is not a release version")).hint("write it as v42 (or 42)")
    })
}

/// The release `version` names (`v41`), or, with none, the environment's
/// current one; and its config version.
pub(crate) fn release_and_config(
    ledger: &dyn graven::ledger::Ledger,
    app: &str,
    env: &str,
    version: Option<&str>,
) -> Result<(graven::model::Release, graven::model::ConfigVersion), CommandError> {
    let release = match version {
        Some(version) => {
            let number = parse_version(version)?;
            ledger
                .release(app, env, number)
                .map_err(CommandError::failed)?
                .ok_or(graven::release::ReleaseError::UnknownRelease { env: env.to_owned(), number })?
        }
        None => ledger
            .current_release(app, env)
            .map_err(CommandError::failed)?
            .ok_or_else(|| graven::release::ReleaseError::NoRelease { env: env.to_owned() })?,
    };
    let config = ledger.config_version(&release.config).map_err(CommandError::failed)?.ok_or_else(|| {
        CommandError::failed(format!("the config version of {} is missing from the ledger", release.version()))
            .hint("run graven verify --ledger")
    })?;
    Ok((release, config))
}

fn show(settings: &Settings, args: &ShowArgs) -> Result<(), CommandError> {
    let env = args.env.name()?;
    let number = parse_version(&args.release)?;
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let release = ledger
        .release(&app, env, number)
        .map_err(CommandError::failed)?
        .ok_or(graven::release::ReleaseError::UnknownRelease { env: env.to_owned(), number })?;
    let current =
        ledger.current_release(&app, env).map_err(CommandError::failed)?.as_ref().map(|r| r.number) == Some(number);
    let config = ledger.config_version(&release.config).map_err(CommandError::failed)?;
    let builds = ledger.builds(&app).map_err(CommandError::failed)?;
    let build = builds.iter().find(|b| b.build.artifact == release.artifact);
    let failures: Vec<(String, graven::model::Failure)> =
        crate::commands::releases::rollout_failures(ledger, &app, env)?
            .into_iter()
            .filter(|(_, failure)| failure.number == number)
            .collect();
    if args.json {
        #[derive(serde::Serialize)]
        struct Show<'a> {
            #[serde(flatten)]
            release: ReleaseJson<'a>,
            config_keys: Vec<&'a str>,
            secret: Vec<&'a str>,
            files: Option<u64>,
            bytes: Option<u64>,
            artifact_in_store: bool,
            rollout_failures: Vec<serde_json::Value>,
        }
        let show = Show {
            release: ReleaseJson::new(&release, current),
            config_keys: config.as_ref().map(|c| c.vars.keys().map(String::as_str).collect()).unwrap_or_default(),
            secret: config.as_ref().map(|c| c.secret.iter().map(String::as_str).collect()).unwrap_or_default(),
            files: build.map(|b| b.build.files),
            bytes: build.map(|b| b.build.bytes),
            artifact_in_store: graven::store::Store::has_object(
                store,
                graven::store::ObjectKind::Artifact,
                &release.artifact,
            )
            .unwrap_or(false),
            rollout_failures: failures
                .iter()
                .map(|(host, f)| crate::commands::releases::failure_json(host, f))
                .collect(),
        };
        ui::out_json(&show);
        return Ok(());
    }
    let mut rows = vec![
        vec![
            "release".to_owned(),
            format!("{} of {env}{}", release.version(), if current { " (current)" } else { "" }),
        ],
        vec!["id".to_owned(), release.id.to_string()],
        vec!["kind".to_owned(), release.kind.name().to_owned()],
        vec!["description".to_owned(), release.description.clone()],
        vec!["artifact".to_owned(), release.artifact.to_string()],
        vec!["commit".to_owned(), release.commit.clone()],
        vec!["config".to_owned(), release.config.to_string()],
        vec!["parent".to_owned(), release.parent.map_or_else(|| "none".to_owned(), |p| p.to_string())],
        vec!["author".to_owned(), release.author.clone()],
        vec!["from".to_owned(), release.host.clone().unwrap_or_else(|| "(not recorded)".to_owned())],
        vec!["created".to_owned(), format!("{} ({})", release.created_at, ui::age(&release.created_at))],
    ];
    if let Some(number) = release.rollback_of {
        rows.push(vec!["rollback of".to_owned(), format!("v{number}")]);
    }
    for (host, failure) in &failures {
        rows.push(vec!["rollout".to_owned(), crate::commands::releases::failure_words(host, failure)]);
    }
    if let Some(from) = &release.promoted_from {
        rows.push(vec!["promoted from".to_owned(), format!("{} v{}", from.env, from.number)]);
    }
    if let Some(build) = build {
        rows.push(vec![
            "files".to_owned(),
            format!("{} files, {}", ui::count(build.build.files), ui::bytes(build.build.bytes)),
        ]);
    }
    if let Some(config) = &config {
        let keys: Vec<String> = config
            .vars
            .keys()
            .map(|k| if config.secret.contains(k) { format!("{k} (secret)") } else { k.clone() })
            .collect();
        rows.push(vec!["config keys".to_owned(), if keys.is_empty() { "none".to_owned() } else { keys.join(", ") }]);
    }
    ui::out(ui::table(&rows));
    Ok(())
}

//! `graven builds`: the app's builds, newest first.

use clap::{Args, Subcommand};
use graven::store::ObjectKind;

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
///
/// `graven builds show BUILD` shows one build's whole record and the output
/// of its build command.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BuildsArgs {
    #[command(subcommand)]
    command: Option<BuildsCommand>,

    /// Print the builds as a JSON array on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum BuildsCommand {
    /// Show one build: its record and its build command's output
    Show(ShowArgs),
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// The build: an artifact id, a unique prefix of 7+ hex digits, or a commit
    build: String,

    /// Print the record, and the log as "log", as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_builds(settings: &Settings, args: &BuildsArgs) -> Result<(), CommandError> {
    if let Some(BuildsCommand::Show(show_args)) = &args.command {
        return show(settings, show_args);
    }
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let builds = ledger.builds(&app).map_err(CommandError::failed)?;
    // A build whose artifact graven gc deleted stays listed, marked.
    let ids: Vec<graven::Digest> = builds.iter().map(|b| b.build.artifact).collect();
    let collected: Vec<bool> = store
        .has_artifacts(&ids)
        .map_or_else(|_| vec![true; ids.len()], |present| present.into_iter().map(|here| !here).collect());
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
        let commit = format!(
            "{}{}{}",
            ui::short_commit(&build.commit),
            if build.dirty { "+dirty" } else { "" },
            if build.sandboxed { "" } else { " (unsandboxed)" }
        );
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

/// A push of the build, as `builds show --json` lists it.
fn push_json(record: &graven::model::PushRecord) -> serde_json::Value {
    let push = &record.push;
    serde_json::json!({
        "image": push.image(),
        "repository": push.repository,
        "tags": push.tags,
        "digest": push.digest,
        "author": push.author,
        "pushed_at": push.created_at,
    })
}

fn show(settings: &Settings, args: &ShowArgs) -> Result<(), CommandError> {
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let record = graven::build::resolve_build(ledger, &app, settings.repo.as_ref(), &args.build)?;
    let log = ledger.build_log(record.seq).map_err(CommandError::failed)?.unwrap_or_default();
    let collected = !store.has_object(ObjectKind::Artifact, &record.build.artifact).unwrap_or(false);
    // What the artifact needs of the machine that runs it; unknown for a
    // collected one.
    let host_references = if collected {
        None
    } else {
        let id = record.build.artifact;
        store.fetch_listings(&id).map_err(CommandError::failed)?;
        let artifact = graven::model::Artifact::load(store, &id).map_err(CommandError::failed)?;
        Some(graven::store::host_references(store, &id, &artifact.root).map_err(CommandError::failed)?)
    };
    let pushes = ledger.pushes(&app, Some(&record.build.artifact)).map_err(CommandError::failed)?;
    if args.json {
        #[derive(serde::Serialize)]
        struct Show<'a> {
            #[serde(flatten)]
            build: BuildJson<'a>,
            pushes: Vec<serde_json::Value>,
            log: &'a str,
        }
        let pushes = pushes.iter().map(push_json).collect();
        let build = BuildJson {
            collected: Some(collected),
            host_references: host_references.as_deref().map(crate::output::HostReference::all),
            ..BuildJson::new(&record)
        };
        ui::out_json(&Show { build, pushes, log: &log });
        return Ok(());
    }
    let build = &record.build;
    let rows = vec![
        vec!["artifact".to_owned(), format!("{}{}", build.artifact, if collected { " (collected)" } else { "" })],
        vec![
            "commit".to_owned(),
            format!("{}{}", build.commit, if build.dirty { " + uncommitted changes (dirty)" } else { "" }),
        ],
        vec!["recipe".to_owned(), build.recipe.to_string()],
        vec![
            "sandbox".to_owned(),
            if build.sandboxed {
                format!("yes: built at {}", graven::sandbox::APP)
            } else {
                "no: unsandboxed (--no-sandbox, or built before the sandbox)".to_owned()
            },
        ],
        vec![
            "files".to_owned(),
            format!("{} files, {}, {} new", ui::count(build.files), ui::bytes(build.bytes), ui::bytes(build.new_bytes)),
        ],
        vec![
            "built".to_owned(),
            format!("{} ({}) by {} on {}", build.finished_at, ui::age(&build.finished_at), build.author, build.host),
        ],
        vec![
            "took".to_owned(),
            format!(
                "{} ms: build command {} ms, ingest {} ms",
                build.duration_ms, build.build_command_ms, build.ingest_ms
            ),
        ],
    ];
    ui::out(ui::table(&rows));
    if let Some(references) = host_references.filter(|references| !references.is_empty()) {
        ui::out(format!(
            "\nhost references: {} leading out of /app, to what the machine that runs it must have:",
            ui::count_of(references.len() as u64, "symlink")
        ));
        for (path, target) in references {
            ui::out(format!("  {path} -> {target}"));
        }
    }
    if !pushes.is_empty() {
        ui::out("\npushed (graven push), newest first:");
        for record in &pushes {
            let push = &record.push;
            ui::out(format!("  {}  {} by {}", push.image(), push.created_at, push.author));
        }
    }
    if log.is_empty() {
        ui::out("\nthe build command printed nothing (or the app has no build command)");
    } else {
        ui::out("\nbuild command output:");
        for line in log.lines() {
            ui::out(format!("  | {line}"));
        }
    }
    Ok(())
}

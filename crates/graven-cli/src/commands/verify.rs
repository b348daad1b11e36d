//! `graven verify`: check an artifact against its manifest (`BUILD`), or the
//! ledger's hash chain (`--ledger`).

use std::fmt::Write as _;

use clap::Args;
use graven::build::BlobProblem;
use graven::release::chain::ChainProblem;
use graven::run::{Drift, DriftKind};
use serde_json::json;

use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Check an artifact in the store, or the ledger's history
///
/// With BUILD: checks the artifact as graven run would before using it:
/// every directory listing (names, order, kinds, modes, canonical bytes,
/// digest) and every file's blob, re-hashed and measured against its listed
/// size, reporting each one that is missing, invalid or corrupted.
/// With --env: re-hashes the environment's current release tree on this
/// machine and reports every file changed, missing or added, and every mode
/// changed, behind graven's back (drift).
/// With --ledger: recomputes the id of every release and config version from
/// its fields and checks every parent link, reporting each break (a row
/// edited behind graven's back); checks that every release names a build
/// the ledger recorded and that each current release's artifact is in the
/// store. Exits 1 if anything is wrong, also with
/// --json, which prints what was checked and every problem found.
///
/// Examples:
///   graven verify HEAD
///   graven verify --ledger
///   graven verify --env production --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment, group(clap::ArgGroup::new("what").required(true).args(["build", "ledger", "env"])))]
pub(crate) struct VerifyArgs {
    /// The build: an artifact id, a unique prefix of 7+ hex digits, or a commit
    build: Option<String>,

    /// Check the ledger's hash chain instead of a build
    #[arg(long)]
    ledger: bool,

    /// Check the tree of the release running in ENV on this machine (else the
    /// current release's) for drift: every changed, missing or extra file
    /// and mode change
    #[arg(long, value_name = "ENV")]
    env: Option<String>,

    /// Print what was checked and every problem found as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_verify(settings: &Settings, args: &VerifyArgs) -> Result<(), CommandError> {
    if let Some(env) = &args.env {
        return verify_env(settings, env, args.json);
    }
    let Some(build) = &args.build else { return verify_ledger(settings, args.json) };
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let record = graven::build::resolve_build(ledger, &app, settings.repo.as_ref(), build)?;
    let id = record.build.artifact;
    // A shared store's objects are checked as they are fetched; then the
    // local copy is checked whole.
    store.fetch(&id).map_err(|e| {
        CommandError::failed(e).hint(format!(
            "the shared store's copy is damaged or incomplete: rebuild commit {} with graven build --force, which sends what is missing",
            ui::short_commit(&record.build.commit)
        ))
    })?;
    let report = graven::build::verify_artifact(store, &id).map_err(|e| {
        CommandError::failed(e)
            .hint("the artifact record is damaged, invalid or gone: rebuild the commit with graven build --force")
    })?;
    let json = || {
        json!({
            "artifact": id,
            "intact": report.problems.is_empty(),
            "blobs": report.blobs,
            "bytes": report.bytes,
            "problems": report.problems.iter().map(blob_problem_json).collect::<Vec<_>>(),
        })
    };
    let intact =
        || format!("{} is intact: {} blobs, {} checked", id.short(), ui::count(report.blobs), ui::bytes(report.bytes));
    let lines = report.problems.iter().map(|problem| describe(store, problem));
    if show(args.json, json, lines, intact) {
        return Ok(());
    }
    Err(CommandError::failed(format!(
        "artifact {id} is damaged: {} found",
        ui::count_of(report.problems.len() as u64, "problem")
    ))
    .hint(format!(
        "rebuild commit {} with graven build --force to store the files again",
        ui::short_commit(&record.build.commit)
    )))
}

/// Prints what a check found: `json()` with --json; else one line per
/// problem, or `intact()` when there are none. Returns whether everything
/// was intact; the caller turns a problem into its error and exit code.
fn show<L: std::fmt::Display>(
    as_json: bool,
    json: impl FnOnce() -> serde_json::Value,
    problems: impl ExactSizeIterator<Item = L>,
    intact: impl FnOnce() -> String,
) -> bool {
    let is_intact = problems.len() == 0;
    if as_json {
        ui::out_json(&json());
    } else if is_intact {
        ui::out(intact());
    } else {
        problems.for_each(ui::out);
    }
    is_intact
}

fn describe(store: &dyn graven::store::Store, problem: &BlobProblem) -> String {
    let used_by = |paths: &[String]| {
        let mut text = paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if paths.len() > 3 {
            let _ = write!(text, " and {} more", paths.len() - 3);
        }
        text
    };
    match problem {
        BlobProblem::Missing { digest, paths } => {
            format!("missing   {} ({}): blob {digest}", used_by(paths), store.blob_location(digest))
        }
        BlobProblem::Corrupt { digest, paths } => {
            format!("corrupted {} ({}): blob {digest}", used_by(paths), store.blob_location(digest))
        }
        BlobProblem::Size { digest, listed, found, paths } => format!(
            "size      {} ({}): blob {digest} {}",
            used_by(paths),
            store.blob_location(digest),
            graven::store::Mismatch::Size { listed: *listed, found: *found }
        ),
        BlobProblem::Listing { path, why } => format!("listing   {path}: {why}"),
    }
}

fn blob_problem_json(problem: &BlobProblem) -> serde_json::Value {
    match problem {
        BlobProblem::Missing { digest, paths } => json!({"problem": "missing", "digest": digest, "paths": paths}),
        BlobProblem::Corrupt { digest, paths } => json!({"problem": "corrupted", "digest": digest, "paths": paths}),
        BlobProblem::Size { digest, listed, found, paths } => {
            json!({"problem": "size", "digest": digest, "listed": listed, "found": found, "paths": paths})
        }
        BlobProblem::Listing { path, why } => json!({"problem": "listing", "path": path, "why": why}),
    }
}

fn verify_ledger(settings: &Settings, as_json: bool) -> Result<(), CommandError> {
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let report = graven::release::chain::verify_ledger(ledger, store, &app).map_err(CommandError::failed)?;
    let json = || {
        json!({
            "app": app,
            "intact": report.problems.is_empty(),
            "environments": report.environments,
            "releases": report.releases,
            "config_versions": report.config_versions,
            "problems": report.problems.iter().map(chain_problem_json).collect::<Vec<_>>(),
        })
    };
    let intact = || {
        format!(
            "the ledger of app '{app}' is intact: {} releases and {} config versions in {} environments",
            ui::count(report.releases),
            ui::count(report.config_versions),
            ui::count(report.environments)
        )
    };
    if show(as_json, json, report.problems.iter(), intact) {
        return Ok(());
    }
    Err(CommandError::failed(format!(
        "the ledger of app '{app}' has been tampered with: {} {} found",
        report.problems.len(),
        if report.problems.len() == 1 { "break" } else { "breaks" }
    ))
    .hint("restore the ledger from a backup; the releases named above are not what graven wrote"))
}

/// A break in the hash chain: its kind, where, and the sentence the text
/// output prints.
fn chain_problem_json(problem: &ChainProblem) -> serde_json::Value {
    let (kind, env, number) = match problem {
        ChainProblem::ReleaseEdited { env, number, .. } => ("release_edited", env, number),
        ChainProblem::BrokenLink { env, number, .. } => ("broken_link", env, number),
        ChainProblem::Numbering { env, expected, .. } => ("numbering", env, expected),
        ChainProblem::ConfigEdited { env, number, .. } => ("config_edited", env, number),
        ChainProblem::ConfigMissing { env, number, .. } => ("config_missing", env, number),
        ChainProblem::BuildMissing { env, number, .. } => ("build_missing", env, number),
        ChainProblem::ArtifactMissing { env, number, .. } => ("artifact_missing", env, number),
    };
    json!({"problem": kind, "env": env, "number": number, "message": problem.to_string()})
}

fn verify_env(settings: &Settings, env: &str, as_json: bool) -> Result<(), CommandError> {
    graven::release::check_env_name(env)?;
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    // The release this machine's runner runs, else the current one.
    let home = settings.home.root().display().to_string();
    let host = crate::settings::host();
    let running = ledger
        .run_states(&app, env)
        .map_err(CommandError::failed)?
        .into_iter()
        .find(|state| state.host == host && state.home == home)
        .and_then(|state| state.running);
    let release = match running {
        Some(running) => ledger.release(&app, env, running.number).map_err(CommandError::failed)?,
        None => ledger.current_release(&app, env).map_err(CommandError::failed)?,
    }
    .ok_or_else(|| graven::release::ReleaseError::NoRelease { env: env.to_owned() })?;
    let tree = graven::run::tree_path(&settings.home, &release);
    if !tree.is_dir() {
        return Err(CommandError::failed(format!(
            "{} of {env} is not laid out on this machine ({} does not exist)",
            release.version(),
            tree.display()
        ))
        .hint(format!("graven exec --env {env} -- true lays it out")));
    }
    let artifact = graven::release::artifact_of(store, &release)?;
    let drift = graven::run::check_tree(store, &artifact.root, &tree).map_err(crate::error::run_error)?;
    let json = || {
        json!({
            "app": app,
            "env": env,
            "release": {"id": release.id, "number": release.number, "version": release.version()},
            "artifact": release.artifact,
            "tree": tree,
            "drift": !drift.is_empty(),
            "differences": drift.iter().map(drift_json).collect::<Vec<_>>(),
        })
    };
    let intact = || format!("{} of {env} matches artifact {}: no drift", release.version(), release.artifact.short());
    if show(as_json, json, drift.iter(), intact) {
        return Ok(());
    }
    Err(CommandError::failed(format!(
        "{} of {env} has drifted from artifact {}: {} found",
        release.version(),
        release.artifact,
        ui::count_of(drift.len() as u64, "difference")
    ))
    .hint(format!(
        "release files are hard links to the store's copies, so an edit in place may have changed the store too (graven verify {} tells); rebuild the commit with graven build --force if so, then remove {} so that it is laid out again",
        ui::short_commit(&release.commit),
        tree.display()
    )))
}

/// One difference: the path, what differs, and for a mode or kind, what was
/// found and what was expected (modes in octal, as `0644`).
fn drift_json(drift: &Drift) -> serde_json::Value {
    match &drift.kind {
        DriftKind::Changed => json!({"path": drift.path, "problem": "changed"}),
        DriftKind::Missing => json!({"path": drift.path, "problem": "missing"}),
        DriftKind::Extra => json!({"path": drift.path, "problem": "extra"}),
        DriftKind::Mode { found, expected } => json!({
            "path": drift.path, "problem": "mode", "found": format!("{found:04o}"), "expected": format!("{expected:04o}"),
        }),
        DriftKind::Kind { found, expected } => {
            json!({"path": drift.path, "problem": "kind", "found": found, "expected": expected})
        }
    }
}

//! `graven verify BUILD`: re-hash every blob of an artifact.

use std::fmt::Write as _;

use clap::Args;
use graven::build::BlobProblem;

use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Check an artifact in the store against its manifest.
///
/// Re-hashes every file of the artifact and checks every directory listing,
/// reporting each one that is missing or corrupted. Exits 1 if any is.
#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The build: an artifact id, a unique prefix of 7+ hex digits, or a commit
    build: String,
}

pub(crate) fn cmd_verify(settings: &Settings, args: &VerifyArgs) -> Result<(), CommandError> {
    let app = settings.app()?;
    let ledger = settings.ledger()?;
    let store = settings.store()?;
    let record = graven::build::resolve_build(&ledger, &app, settings.repo.as_ref(), &args.build)?;
    let id = record.build.artifact;
    let report = graven::build::verify_artifact(&store, &id).map_err(|e| {
        CommandError::failed(e)
            .hint("the artifact record is damaged or gone: rebuild the commit with graven build --force")
    })?;
    if report.problems.is_empty() {
        ui::out(format!(
            "{} is intact: {} blobs, {} checked",
            id.short(),
            ui::count(report.blobs),
            ui::bytes(report.bytes)
        ));
        return Ok(());
    }
    for problem in &report.problems {
        ui::out(describe(&store, problem));
    }
    Err(CommandError::failed(format!(
        "artifact {} is damaged: {} of {} blobs or listings are missing or corrupted",
        id,
        report.problems.len(),
        report.blobs
    ))
    .hint(format!(
        "rebuild commit {} with graven build --force to store the files again",
        ui::short_commit(&record.build.commit)
    )))
}

fn describe(store: &graven::store::LocalStore, problem: &BlobProblem) -> String {
    let used_by = |paths: &[String]| {
        let mut text = paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if paths.len() > 3 {
            let _ = write!(text, " and {} more", paths.len() - 3);
        }
        text
    };
    match problem {
        BlobProblem::Missing { digest, paths } => {
            format!("missing   {} ({}): blob {digest}", used_by(paths), store.blob_path(digest).display())
        }
        BlobProblem::Corrupt { digest, paths } => {
            format!("corrupted {} ({}): blob {digest}", used_by(paths), store.blob_path(digest).display())
        }
        BlobProblem::Listing { path, why } => format!("listing   {path}: {why}"),
    }
}

//! Finds the build a user means: a full artifact id, a unique prefix of at
//! least 7 hex digits (of an artifact id or a commit), or any revision git
//! understands (`HEAD`, `main`, `v1.2`).

use super::BuildRecord;
use crate::digest::{PREFIX, is_hex_prefix};
use crate::git::Repo;
use crate::ledger::{Ledger, LedgerError};

/// A build reference that names no build, or more than one.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Nothing matches.
    #[error("no build of app '{app}' matches '{reference}'")]
    NotFound {
        /// What was asked for.
        reference: String,
        /// The app looked in.
        app: String,
    },
    /// A revision that git knows, but that was never built.
    #[error("commit {commit} ('{reference}') has not been built")]
    NotBuilt {
        /// What was asked for.
        reference: String,
        /// The commit it names.
        commit: String,
    },
    /// Several artifacts match.
    #[error("'{reference}' is ambiguous; it matches:\n{}", candidates.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n"))]
    Ambiguous {
        /// What was asked for.
        reference: String,
        /// One line per match: artifact and commit.
        candidates: Vec<String>,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The newest build of `app` that `reference` names. A commit names its
/// newest clean build; its dirty builds only if it has no clean one.
pub fn resolve_build(
    ledger: &dyn Ledger,
    app: &str,
    repo: Option<&Repo>,
    reference: &str,
) -> Result<BuildRecord, ResolveError> {
    let mut builds = ledger.builds(app)?;
    // Newest first, clean builds before dirty ones.
    builds.sort_by_key(|b| (b.build.dirty, std::cmp::Reverse(b.seq)));
    if is_hex_prefix(reference) {
        let explicit_artifact = reference.starts_with(PREFIX);
        let hex = reference.strip_prefix(PREFIX).unwrap_or(reference);
        // Every artifact the prefix names, and the preferred build of every
        // commit it names; builds are sorted so the first one seen wins.
        let mut matches: Vec<&BuildRecord> = Vec::new();
        let mut commits_seen: Vec<&str> = Vec::new();
        for build in &builds {
            let artifact_match = build.build.artifact.hex().starts_with(hex);
            let commit_match = !explicit_artifact
                && build.build.commit.starts_with(hex)
                && !commits_seen.contains(&build.build.commit.as_str());
            if commit_match {
                commits_seen.push(&build.build.commit);
            }
            if (artifact_match || commit_match) && !matches.iter().any(|m| m.build.artifact == build.build.artifact) {
                matches.push(build);
            }
        }
        match matches.as_slice() {
            [one] => return Ok((*one).clone()),
            [] => {}
            many => {
                return Err(ResolveError::Ambiguous {
                    reference: reference.to_owned(),
                    candidates: many
                        .iter()
                        .map(|b| {
                            format!(
                                "{} (commit {}, built {})",
                                b.build.artifact.short(),
                                crate::git::short_commit(&b.build.commit),
                                b.build.finished_at
                            )
                        })
                        .collect(),
                });
            }
        }
        if explicit_artifact {
            return Err(ResolveError::NotFound { reference: reference.to_owned(), app: app.to_owned() });
        }
    }
    if let Some(repo) = repo
        && let Ok(commit) = repo.resolve_commit(reference)
    {
        return builds
            .into_iter()
            .find(|b| b.build.commit == commit)
            .ok_or(ResolveError::NotBuilt { reference: reference.to_owned(), commit });
    }
    Err(ResolveError::NotFound { reference: reference.to_owned(), app: app.to_owned() })
}

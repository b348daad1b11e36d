//! Verifies an artifact in the store: its record, every listing, and every
//! blob re-hashed. Reports every problem rather than stopping at the first.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::artifact::{Artifact, ArtifactError};
use super::manifest::{EntryKind, Listing, ManifestError};
use crate::Digest;
use crate::store::{Store, StoreError, blob_matches};

/// Something wrong with an artifact in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobProblem {
    /// A blob is not in the store.
    Missing {
        /// The blob.
        digest: Digest,
        /// The paths in the artifact that use it.
        paths: Vec<String>,
    },
    /// A blob's contents do not match its digest.
    Corrupt {
        /// The blob.
        digest: Digest,
        /// The paths in the artifact that use it.
        paths: Vec<String>,
    },
    /// A directory listing is missing or corrupt; its contents were not
    /// checked.
    Listing {
        /// The directory, relative to the root (`.` for the root).
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// The result of verifying one artifact.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The artifact.
    pub artifact: Digest,
    /// Distinct blobs checked.
    pub blobs: u64,
    /// Their total size.
    pub bytes: u64,
    /// Everything found wrong, in path order.
    pub problems: Vec<BlobProblem>,
}

/// Re-hashes every blob of artifact `id`.
pub fn verify_artifact(store: &dyn Store, id: &Digest) -> Result<VerifyReport, ArtifactError> {
    let artifact = Artifact::load(store, id)?;
    let mut blobs: BTreeMap<Digest, (u64, Vec<String>)> = BTreeMap::new();
    let mut problems = Vec::new();
    collect(store, &artifact.root, "", &mut blobs, &mut problems);

    let checked: Vec<Result<Option<BlobProblem>, StoreError>> = blobs
        .par_iter()
        .map(|(digest, (_, paths))| match blob_matches(store, digest) {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(BlobProblem::Corrupt { digest: *digest, paths: paths.clone() })),
            Err(StoreError::NotFound { .. }) => {
                Ok(Some(BlobProblem::Missing { digest: *digest, paths: paths.clone() }))
            }
            Err(e) => Err(e),
        })
        .collect();
    for result in checked {
        problems.extend(result?);
    }
    problems.sort_by(|a, b| first_path(a).cmp(first_path(b)));
    Ok(VerifyReport {
        artifact: *id,
        blobs: blobs.len() as u64,
        bytes: blobs.values().map(|(size, _)| size).sum(),
        problems,
    })
}

fn first_path(problem: &BlobProblem) -> &str {
    match problem {
        BlobProblem::Missing { paths, .. } | BlobProblem::Corrupt { paths, .. } => {
            paths.first().map_or("", String::as_str)
        }
        BlobProblem::Listing { path, .. } => path,
    }
}

fn collect(
    store: &dyn Store,
    tree: &Digest,
    prefix: &str,
    blobs: &mut BTreeMap<Digest, (u64, Vec<String>)>,
    problems: &mut Vec<BlobProblem>,
) {
    let listing = match Listing::load(store, tree) {
        Ok(listing) => listing,
        Err(e) => {
            let why = match e {
                ManifestError::Store(StoreError::NotFound { .. }) => {
                    format!("listing {tree} is missing from the store")
                }
                other => other.to_string(),
            };
            problems.push(BlobProblem::Listing {
                path: if prefix.is_empty() { ".".to_owned() } else { prefix.to_owned() },
                why,
            });
            return;
        }
    };
    for entry in listing.entries {
        let path = if prefix.is_empty() { entry.name } else { format!("{prefix}/{}", entry.name) };
        match entry.kind {
            EntryKind::File { size, digest, .. } => {
                blobs.entry(digest).or_insert_with(|| (size, Vec::new())).1.push(path);
            }
            EntryKind::Dir { tree } => collect(store, &tree, &path, blobs, problems),
            EntryKind::Symlink { .. } => {}
        }
    }
}

//! Verifies an artifact in the store: its record, every listing (validated
//! as every reader validates it: names, order, uniqueness, kinds, modes,
//! canonical bytes, digest), and every blob re-hashed and measured against
//! its listed size. What `graven run` would refuse, this reports. Reports
//! every problem rather than stopping at the first.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::Digest;
use crate::model::{Artifact, EntryKind, Listing};
use crate::store::ArtifactError;
use crate::store::{Mismatch, Store, StoreError, check_blob};

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
    /// A blob has another size than its listing says.
    Size {
        /// The blob.
        digest: Digest,
        /// The size the listing gives.
        listed: u64,
        /// The size it has.
        found: u64,
        /// The paths in the artifact that use it with that listed size.
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
    // By digest and listed size: two listings may give one blob two sizes,
    // and at most one of them is right.
    let mut blobs: BTreeMap<(Digest, u64), Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    collect(store, &artifact.root, "", &mut blobs, &mut problems);

    let checked: Vec<Result<Option<BlobProblem>, StoreError>> = blobs
        .par_iter()
        .map(|(&(digest, size), paths)| {
            let paths = paths.clone();
            match check_blob(store, &digest, size) {
                Ok(None) => Ok(None),
                Ok(Some(Mismatch::Digest)) => Ok(Some(BlobProblem::Corrupt { digest, paths })),
                Ok(Some(Mismatch::Size { listed, found })) => {
                    Ok(Some(BlobProblem::Size { digest, listed, found, paths }))
                }
                Err(StoreError::NotFound { .. }) => Ok(Some(BlobProblem::Missing { digest, paths })),
                Err(e) => Err(e),
            }
        })
        .collect();
    for result in checked {
        problems.extend(result?);
    }
    problems.sort_by(|a, b| first_path(a).cmp(first_path(b)));
    Ok(VerifyReport {
        artifact: *id,
        blobs: blobs.len() as u64,
        bytes: blobs.keys().map(|(_, size)| size).sum(),
        problems,
    })
}

fn first_path(problem: &BlobProblem) -> &str {
    match problem {
        BlobProblem::Missing { paths, .. } | BlobProblem::Corrupt { paths, .. } | BlobProblem::Size { paths, .. } => {
            paths.first().map_or("", String::as_str)
        }
        BlobProblem::Listing { path, .. } => path,
    }
}

fn collect(
    store: &dyn Store,
    tree: &Digest,
    prefix: &str,
    blobs: &mut BTreeMap<(Digest, u64), Vec<String>>,
    problems: &mut Vec<BlobProblem>,
) {
    let listing = match Listing::load(store, tree, prefix) {
        Ok(listing) => listing,
        Err(e) => {
            problems.push(BlobProblem::Listing {
                path: if prefix.is_empty() { ".".to_owned() } else { prefix.to_owned() },
                why: crate::error_chain(&e),
            });
            return;
        }
    };
    for entry in listing.entries {
        let path = if prefix.is_empty() { entry.name } else { format!("{prefix}/{}", entry.name) };
        match entry.kind {
            EntryKind::File { size, digest, .. } => {
                blobs.entry((digest, size)).or_default().push(path);
            }
            EntryKind::Dir { tree } => collect(store, &tree, &path, blobs, problems),
            EntryKind::Symlink { .. } => {}
        }
    }
}

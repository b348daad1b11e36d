//! Reading the model's objects from a store: the one way in for listings
//! and artifact records, which are untrusted input, validated whole when
//! they are loaded (see [`Listing::parse`] and [`Artifact::parse`]); and
//! walking an artifact's tree through them. Every reader (materialise,
//! export, verify, diff, gc, the release check, drift) goes through here.

use super::{ObjectKind, Store, StoreError};
use crate::Digest;
use crate::model::{Artifact, EntryKind, Listing, ListingProblem, RecordProblem};

impl Listing {
    /// Reads listing `digest` from `store`: the one way in for a listing,
    /// which is untrusted input and validated here whole (see
    /// [`Listing::parse`]). `path` is the directory it lists, relative to
    /// the tree's root (empty for the root), for the error.
    pub fn load(store: &dyn Store, digest: &Digest, path: &str) -> Result<Self, ManifestError> {
        Self::load_with_bytes(store, digest, path).map(|(listing, _)| listing)
    }

    /// Like [`Listing::load`], with the listing's bytes as stored too.
    pub fn load_with_bytes(store: &dyn Store, digest: &Digest, path: &str) -> Result<(Self, Vec<u8>), ManifestError> {
        let bytes = store.get_object(ObjectKind::Manifest, digest).map_err(|source| match source {
            StoreError::NotFound { .. } => ManifestError::Missing { listing: *digest, path: shown_dir(path) },
            source => ManifestError::Store(source),
        })?;
        let listing = Self::parse(&bytes, digest).map_err(|problem| ManifestError::Invalid {
            listing: *digest,
            path: shown_dir(path),
            problem,
        })?;
        Ok((listing, bytes))
    }
}

impl Artifact {
    /// Reads artifact `id` from `store`: the one way in for an artifact
    /// record, which is untrusted input and validated here (see
    /// [`Artifact::parse`]).
    pub fn load(store: &dyn Store, id: &Digest) -> Result<Self, ArtifactError> {
        let bytes = store.get_object(ObjectKind::Artifact, id).map_err(|source| match source {
            StoreError::NotFound { .. } => ArtifactError::Missing { id: *id },
            source => ArtifactError::Store(source),
        })?;
        Self::parse(&bytes, id).map_err(|problem| ArtifactError::Invalid { id: *id, problem })
    }
}

/// How an error names a directory of a tree.
pub(super) fn shown_dir(path: &str) -> String {
    if path.is_empty() { "the root".to_owned() } else { format!("directory '{path}'") }
}

/// An artifact record that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record is not in the store.
    #[error("artifact {id} is not in the store")]
    Missing {
        /// The artifact.
        id: Digest,
    },
    /// The record is not what its id says, or not a valid record.
    #[error("the record of artifact {id} is invalid")]
    Invalid {
        /// The artifact.
        id: Digest,
        /// What is wrong.
        #[source]
        problem: RecordProblem,
    },
    /// A listing of the artifact's tree is missing or invalid.
    #[error("the tree of artifact {id} cannot be used")]
    Tree {
        /// The artifact.
        id: Digest,
        /// Which listing, and what is wrong with it.
        #[source]
        source: Box<ManifestError>,
    },
    /// A file's blob is missing, unreadable, or not what its listing says.
    #[error("file '{path}' of artifact {id} cannot be used")]
    Blob {
        /// The artifact.
        id: Digest,
        /// The file, relative to the tree's root.
        path: String,
        /// What is wrong with its blob.
        #[source]
        source: StoreError,
    },
}

/// A manifest that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listing is not in the store.
    #[error("the listing of {path} ({listing}) is missing from the store")]
    Missing {
        /// The listing.
        listing: Digest,
        /// The directory it lists, as shown.
        path: String,
    },
    /// A listing is not what its digest says, or not a valid listing.
    #[error("the listing of {path} ({listing}) is invalid")]
    Invalid {
        /// The listing.
        listing: Digest,
        /// The directory it lists, as shown.
        path: String,
        /// What is wrong.
        #[source]
        problem: ListingProblem,
    },
}

/// Visits every entry of artifact `id`'s tree, rooted at listing `root`,
/// depth first, each directory before its contents, names in listing
/// order. Paths are relative, `/`-separated, and made of validated names
/// only. The first error, the visitor's own or a listing that cannot be
/// used (as [`ArtifactError::Tree`]), stops the walk and is returned.
pub fn walk<E: From<ArtifactError>>(
    store: &dyn Store,
    id: &Digest,
    root: &Digest,
    visit: &mut dyn FnMut(&str, &EntryKind) -> Result<(), E>,
) -> Result<(), E> {
    fn walk_dir<E: From<ArtifactError>>(
        store: &dyn Store,
        id: &Digest,
        digest: &Digest,
        prefix: &str,
        visit: &mut dyn FnMut(&str, &EntryKind) -> Result<(), E>,
    ) -> Result<(), E> {
        let listing = Listing::load(store, digest, prefix)
            .map_err(|source| ArtifactError::Tree { id: *id, source: Box::new(source) })?;
        for entry in &listing.entries {
            let path = if prefix.is_empty() { entry.name.clone() } else { format!("{prefix}/{}", entry.name) };
            visit(&path, &entry.kind)?;
            if let EntryKind::Dir { tree } = &entry.kind {
                walk_dir(store, id, tree, &path, visit)?;
            }
        }
        Ok(())
    }
    walk_dir(store, id, root, "", visit)
}

/// The host references of artifact `id`, whose tree is rooted at listing
/// `root`: its symlinks that lead out of the tree at `/app` (see
/// [`crate::model::leaves_tree`]), by path, with their targets, in tree
/// order.
pub fn host_references(store: &dyn Store, id: &Digest, root: &Digest) -> Result<Vec<(String, String)>, ArtifactError> {
    let mut references = Vec::new();
    walk(store, id, root, &mut |path, kind| {
        if let EntryKind::Symlink { target } = kind {
            let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
            if crate::model::leaves_tree(dir, target) {
                references.push((path.to_owned(), target.clone()));
            }
        }
        Ok::<_, ArtifactError>(())
    })?;
    Ok(references)
}

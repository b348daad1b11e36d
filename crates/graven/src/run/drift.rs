//! Drift: how a tree on disk differs from the manifest it was laid out
//! from. Every file is re-hashed (but, right after laying a tree out, those
//! that are the store's own blobs); modes must be the read-only ones graven
//! set (files 0444 or 0555, directories 0555).

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::RunError;
use crate::Digest;
use crate::model::{EntryKind, Listing};
use crate::store::Store;

/// One difference between a tree on disk and its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The path, relative to the tree's root.
    pub path: String,
    /// What differs.
    pub kind: DriftKind,
}

/// What differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftKind {
    /// The contents differ.
    Changed,
    /// In the manifest, not on disk.
    Missing,
    /// On disk, not in the manifest.
    Extra,
    /// The permissions differ.
    Mode {
        /// On disk.
        found: u32,
        /// In a materialised tree.
        expected: u32,
    },
    /// A file where a directory should be, or the like.
    Kind {
        /// On disk.
        found: &'static str,
        /// In the manifest.
        expected: &'static str,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DriftKind::Changed => write!(f, "changed  {}", self.path),
            DriftKind::Missing => write!(f, "missing  {}", self.path),
            DriftKind::Extra => write!(f, "extra    {}", self.path),
            DriftKind::Mode { found, expected } => {
                write!(f, "mode     {} is {found:04o}, not {expected:04o}", self.path)
            }
            DriftKind::Kind { found, expected } => write!(f, "kind     {} is a {found}, not a {expected}", self.path),
        }
    }
}

/// Compares the tree at `dir` with the manifest rooted at listing `root`,
/// every file's contents re-hashed.
pub fn check_tree(store: &dyn Store, root: &Digest, dir: &Path) -> Result<Vec<Drift>, RunError> {
    compare(store, root, dir, Hash::Every)
}

/// Like [`check_tree`], for a tree just laid out: a file that is its blob
/// in the local store (the same inode, hard-linked) is not re-hashed, since
/// it holds what the store holds; every other file is.
pub(crate) fn check_laid_out(store: &dyn Store, root: &Digest, dir: &Path) -> Result<Vec<Drift>, RunError> {
    compare(store, root, dir, Hash::AllButBlobs)
}

/// Which files [`compare`] re-hashes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hash {
    Every,
    AllButBlobs,
}

fn compare(store: &dyn Store, root: &Digest, dir: &Path, hash_files: Hash) -> Result<Vec<Drift>, RunError> {
    let mut drift = Vec::new();
    let mut to_hash = Vec::new();
    check_dir(store, root, dir, "", hash_files, &mut drift, &mut to_hash)?;
    let changed: Vec<Drift> = to_hash
        .par_iter()
        .filter(|(path, _, digest)| hash(path).is_none_or(|found| found != *digest))
        .map(|(_, relative, _)| Drift { path: relative.clone(), kind: DriftKind::Changed })
        .collect();
    drift.extend(changed);
    drift.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(drift)
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_file() {
        "file"
    } else {
        "special file"
    }
}

fn check_dir(
    store: &dyn Store,
    tree: &Digest,
    dir: &Path,
    prefix: &str,
    hash_files: Hash,
    drift: &mut Vec<Drift>,
    to_hash: &mut Vec<(PathBuf, String, Digest)>,
) -> Result<(), RunError> {
    let listing = Listing::load(store, tree, prefix)?;
    let join = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}/{name}") };
    let mut expected_names = BTreeSet::new();
    for entry in &listing.entries {
        expected_names.insert(entry.name.as_str());
        let path = dir.join(&entry.name);
        let relative = join(&entry.name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            drift.push(Drift { path: relative, kind: DriftKind::Missing });
            continue;
        };
        let expected_kind = match entry.kind {
            EntryKind::File { .. } => "file",
            EntryKind::Dir { .. } => "directory",
            EntryKind::Symlink { .. } => "symlink",
        };
        if kind_of(&meta) != expected_kind {
            drift.push(Drift {
                path: relative,
                kind: DriftKind::Kind { found: kind_of(&meta), expected: expected_kind },
            });
            continue;
        }
        let mode = meta.mode() & 0o7777;
        match &entry.kind {
            EntryKind::File { executable, size, digest } => {
                let expected = if *executable { 0o555 } else { 0o444 };
                if mode != expected {
                    drift.push(Drift { path: relative.clone(), kind: DriftKind::Mode { found: mode, expected } });
                }
                if meta.len() != *size {
                    drift.push(Drift { path: relative, kind: DriftKind::Changed });
                } else if hash_files == Hash::Every || !is_blob(store, digest, &meta) {
                    to_hash.push((path, relative, *digest));
                }
            }
            EntryKind::Dir { tree } => {
                if mode != 0o555 {
                    drift
                        .push(Drift { path: relative.clone(), kind: DriftKind::Mode { found: mode, expected: 0o555 } });
                }
                check_dir(store, tree, &path, &relative, hash_files, drift, to_hash)?;
            }
            EntryKind::Symlink { target } => {
                if fs::read_link(&path).ok().as_deref().and_then(Path::to_str) != Some(target.as_str()) {
                    drift.push(Drift { path: relative, kind: DriftKind::Changed });
                }
            }
        }
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !expected_names.contains(name.as_ref()) {
                drift.push(Drift { path: join(&name), kind: DriftKind::Extra });
            }
        }
    }
    Ok(())
}

/// Whether the file of `meta` is blob `digest` of the local store itself.
fn is_blob(store: &dyn Store, digest: &Digest, meta: &fs::Metadata) -> bool {
    fs::metadata(store.local().blob_path(digest)).is_ok_and(|blob| blob.dev() == meta.dev() && blob.ino() == meta.ino())
}

/// The sha256 of a file's contents; `None` if it cannot be read.
fn hash(path: &Path) -> Option<Digest> {
    crate::digest::of_reader(fs::File::open(path).ok()?).ok().map(|(digest, _)| digest)
}

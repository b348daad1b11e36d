//! Materialise: a release's tree on disk, from the store, read-only.
//!
//! Files are hard links to the store's blobs where the blob has the file's
//! mode (no copy, no I/O beyond the directory entries), copies otherwise.
//! The tree is built under a temporary name, checked against the manifest,
//! and renamed into place: `releases/<app>/<env>/v<N>/` is whole or absent. Trees
//! stay after use, so a rollback to a recent release costs no I/O.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::{RunError, check_tree};
use crate::build::Artifact;
use crate::build::manifest::{EntryKind, walk};
use crate::home::Home;
use crate::release::Release;
use crate::store::Store;

/// A release's tree on disk.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The tree's root: the processes' working directory.
    pub path: PathBuf,
    /// Whether it was already there.
    pub reused: bool,
}

/// Where release `release`'s tree lives.
pub fn tree_path(home: &Home, release: &Release) -> PathBuf {
    home.releases_dir(&release.app, &release.env).join(release.version())
}

/// Lays out `release`'s tree of `artifact` (the release's, from
/// [`artifact_of`]) from `store`, unless it is already there.
pub fn materialise(store: &dyn Store, home: &Home, release: &Release, artifact: &Artifact) -> Result<Tree, RunError> {
    let path = tree_path(home, release);
    if path.is_dir() {
        return Ok(Tree { path, reused: true });
    }
    let io_error = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| RunError::Io { action, path, source }
    };
    let parent = path.parent().expect("release trees have a parent");
    fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    let temp = parent.join(format!(".tmp-{}-{}", release.version(), std::process::id()));
    crate::fs_tree::remove_tree(&temp);
    fs::create_dir(&temp).map_err(io_error("create", &temp))?;

    let result = lay_out(store, artifact, &temp).and_then(|()| {
        let drift = check_tree(store, &artifact.root, &temp)?;
        if !drift.is_empty() {
            return Err(RunError::Damaged { version: release.version(), id: release.artifact, drift });
        }
        fs::rename(&temp, &path).map_err(io_error("move into place", &path))
    });
    if result.is_err() {
        crate::fs_tree::remove_tree(&temp);
    }
    result.map(|()| Tree { path, reused: false })
}

/// The artifact record of `release`.
pub fn artifact_of(store: &dyn Store, release: &Release) -> Result<Artifact, RunError> {
    Artifact::load(store, &release.artifact)
        .map_err(|e| RunError::Artifact { id: release.artifact, why: e.to_string() })
}

/// Writes every entry of the artifact's manifest under `root`; directories
/// are sealed read-only once their contents are in.
fn lay_out(store: &dyn Store, artifact: &Artifact, root: &Path) -> Result<(), RunError> {
    let mut dirs = Vec::new();
    walk(store, &artifact.root, &mut |relative, kind| {
        let path = root.join(relative);
        match kind {
            EntryKind::Dir { .. } => {
                dirs.push(path.clone());
                fs::create_dir(&path).map_err(|source| RunError::Io { action: "create", path: path.clone(), source })
            }
            EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &path).map_err(|source| RunError::Io {
                action: "create the link",
                path: path.clone(),
                source,
            }),
            EntryKind::File { executable, digest, .. } => place_file(store, digest, *executable, &path),
        }
    })?;
    // Deepest first, so that a parent is sealed after its children, and the
    // root last: every directory gets the normalised mtime once its entries
    // are in (adding an entry changes a directory's mtime).
    dirs.push(root.to_owned());
    for dir in dirs.iter().rev() {
        seal_dir(dir).map_err(|source| RunError::Io { action: "seal", path: dir.clone(), source })?;
    }
    Ok(())
}

/// Makes a directory read-only with the normalised mtime.
fn seal_dir(dir: &Path) -> io::Result<()> {
    crate::fs_tree::set_normalised_mtime(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555))
}

/// A file of the tree: a hard link to its blob if the blob has the right
/// mode, else a read-only copy.
fn place_file(store: &dyn Store, digest: &crate::Digest, executable: bool, path: &Path) -> Result<(), RunError> {
    let mode = if executable { 0o555 } else { 0o444 };
    if let Some(blob) = store.local_blob_path(digest)
        && fs::metadata(&blob).is_ok_and(|meta| meta.mode() & 0o777 == mode)
        && fs::hard_link(&blob, path).is_ok()
    {
        return Ok(());
    }
    let io_error = |action: &'static str| {
        let path = path.to_owned();
        move |source| RunError::Io { action, path, source }
    };
    let mut reader = store.open_blob(digest)?;
    let mut file = fs::File::create_new(path).map_err(io_error("create"))?;
    io::copy(&mut reader, &mut file).map_err(io_error("write"))?;
    crate::fs_tree::set_normalised_mtime(path).map_err(io_error("set the time of"))?;
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_error("seal"))?;
    Ok(())
}

//! Materialise: a release's tree on disk, from the store, read-only.
//!
//! Files are hard links to the store's blobs where the blob has the file's
//! mode (no copy, no I/O beyond the directory entries), copies otherwise.
//! The tree is built under a temporary name, checked against the manifest
//! (every name, kind, mode, size and link; copies are hashed as they are
//! made, and a hard link must be the store's blob itself), and renamed
//! into place: `releases/<app>/<env>/v<N>/` is whole or absent. Trees
//! stay after use, so a rollback to a recent release costs no I/O.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::{AtFlags, CWD, Mode, OFlags, Timestamps};

use super::RunError;
use super::drift::check_laid_out;
use crate::Digest;
use crate::home::Home;
use crate::model::Release;
use crate::model::manifest::name_problem;
use crate::model::{Artifact, EntryKind, Listing};
use crate::store::{ArtifactError, CheckedBlob, Store, StoreError, open_checked_blob};

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
    // From a shared store: what the local one lacks, checked on the way.
    store.fetch(&release.artifact)?;
    let io_error = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| RunError::Io { action, path, source }
    };
    let parent = path.parent().expect("release trees have a parent");
    fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    let temp = parent.join(format!(".tmp-{}-{}", release.version(), std::process::id()));
    crate::fs_tree::remove_tree(&temp);
    fs::create_dir(&temp).map_err(io_error("create", &temp))?;

    let result = lay_out(store, &release.artifact, &artifact.root, &temp).and_then(|()| {
        let drift = check_laid_out(store, &artifact.root, &temp)?;
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
    Ok(Artifact::load(store, &release.artifact)?)
}

/// Writes every entry of the artifact's manifest under `root`; directories
/// are sealed read-only once their contents are in.
///
/// Every entry is created relative to an open handle on its directory, by
/// one name, and nothing on the way is a symlink that could be followed:
/// directories are opened with `O_NOFOLLOW`, files created with `O_EXCL`
/// (which refuses a symlink in their place), links and subdirectories by
/// calls that never follow their last component. So even a listing that
/// validation let through by mistake cannot make this write outside `root`.
fn lay_out(store: &dyn Store, id: &Digest, listing: &Digest, root: &Path) -> Result<(), RunError> {
    let dir = open_dir(CWD, root).map_err(io_error("open", root))?;
    let writer = TreeWriter { store, id, root };
    writer.dir(&dir, listing, "")?;
    seal_dir(&dir).map_err(io_error("seal", root))
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(rustix::io::Errno) -> RunError + 'a {
    move |errno| RunError::Io { action, path: path.to_owned(), source: errno.into() }
}

/// Opens a directory without following a symlink in its place.
fn open_dir(at: impl AsFd, name: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(at, name, OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
}

struct TreeWriter<'a> {
    store: &'a dyn Store,
    id: &'a Digest,
    root: &'a Path,
}

impl TreeWriter<'_> {
    /// Writes the entries of listing `listing` into the open directory `dir`,
    /// which is `prefix` in the tree.
    fn dir(&self, dir: &OwnedFd, listing: &Digest, prefix: &str) -> Result<(), RunError> {
        let listing = Listing::load(self.store, listing, prefix)
            .map_err(|source| ArtifactError::Tree { id: *self.id, source: Box::new(source) })?;
        // This directory's own entries first, then its subdirectories, on
        // as many threads as there are cores: each writes in directories
        // of its own, which the kernel serves in parallel.
        let mut subdirs = Vec::new();
        for entry in &listing.entries {
            let path = if prefix.is_empty() { entry.name.clone() } else { format!("{prefix}/{}", entry.name) };
            let shown = self.root.join(&path);
            // Validated on load; checked again where it matters, so that a
            // name can never be more than one component here.
            if name_problem(&entry.name).is_some() {
                return Err(RunError::Io {
                    action: "create",
                    path: shown,
                    source: io::Error::from(io::ErrorKind::InvalidInput),
                });
            }
            let name = entry.name.as_str();
            match &entry.kind {
                EntryKind::Dir { tree } => {
                    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)).map_err(io_error("create", &shown))?;
                    let child = open_dir(dir, Path::new(name)).map_err(io_error("open", &shown))?;
                    subdirs.push((child, *tree, path, shown));
                }
                EntryKind::Symlink { target } => {
                    rustix::fs::symlinkat(target.as_str(), dir, name).map_err(io_error("create the link", &shown))?;
                }
                EntryKind::File { executable, size, digest } => {
                    self.file(dir, name, digest, *size, *executable).map_err(|e| match e {
                        FileError::Io(action, errno) => RunError::Io { action, path: shown, source: errno.into() },
                        FileError::Blob(source) => ArtifactError::Blob { id: *self.id, path, source }.into(),
                    })?;
                }
            }
        }
        subdirs.into_par_iter().try_for_each(|(child, tree, path, shown)| {
            self.dir(&child, &tree, &path)?;
            // Sealed once its contents are in: adding an entry changes a
            // directory's mtime.
            seal_dir(&child).map_err(io_error("seal", &shown))
        })
    }

    /// One file: a hard link to its blob if the blob has the right mode and
    /// size, else a read-only copy read through its listing's size and
    /// digest. (A linked file is the store's blob itself: it holds what
    /// the store holds, which `graven verify` re-hashes.)
    fn file(&self, dir: &OwnedFd, name: &str, digest: &Digest, size: u64, executable: bool) -> Result<(), FileError> {
        let mode = if executable { 0o555 } else { 0o444 };
        let blob = self.store.local().blob_path(digest);
        if fs::metadata(&blob).is_ok_and(|meta| meta.mode() & 0o777 == mode && meta.len() == size)
            && rustix::fs::linkat(CWD, &blob, dir, name, AtFlags::empty()).is_ok()
        {
            return Ok(());
        }
        let mut reader = open_checked_blob(self.store, digest, size).map_err(FileError::Blob)?;
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| FileError::Io("create", e))?;
        let mut file = fs::File::from(fd);
        if let Err(error) = io::copy(&mut reader, &mut file) {
            return Err(if reader.failed() {
                FileError::Blob(CheckedBlob::into_store_error(digest, error))
            } else {
                FileError::Io("write", rustix::io::Errno::from_io_error(&error).unwrap_or(rustix::io::Errno::IO))
            });
        }
        rustix::fs::futimens(&file, &normalised_times()).map_err(|e| FileError::Io("set the time of", e))?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(|e| FileError::Io("seal", e))?;
        Ok(())
    }
}

/// Why one file could not be placed.
enum FileError {
    Io(&'static str, rustix::io::Errno),
    Blob(StoreError),
}

fn normalised_times() -> Timestamps {
    let time = rustix::fs::Timespec { tv_sec: crate::NORMALISED_MTIME.cast_signed(), tv_nsec: 0 };
    Timestamps { last_access: time, last_modification: time }
}

/// Makes an open directory read-only with the normalised mtime.
fn seal_dir(dir: &OwnedFd) -> rustix::io::Result<()> {
    rustix::fs::futimens(dir, &normalised_times())?;
    rustix::fs::fchmod(dir, Mode::from_raw_mode(0o555))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entry;
    use crate::store::{Handover, LocalStore, ObjectKind};

    /// A store holding a listing with `dir/` (holding `file`) and `file`.
    fn store_with_a_tree(dir: &Path) -> (LocalStore, Digest) {
        let store = LocalStore::open(&dir.join("store")).unwrap();
        let source = dir.join("contents");
        fs::write(&source, "contents").unwrap();
        let blob = Digest::of(b"contents");
        store.local().put_blob(&blob, &source, Handover::Copy).unwrap();
        let file = Entry { name: "file".into(), kind: EntryKind::File { executable: false, size: 8, digest: blob } };
        let inner = Listing { entries: vec![file.clone()] };
        let inner_bytes = inner.to_canonical_json();
        store.put_object(ObjectKind::Manifest, &Digest::of(&inner_bytes), &inner_bytes).unwrap();
        let dir_entry = Entry { name: "dir".into(), kind: EntryKind::Dir { tree: Digest::of(&inner_bytes) } };
        let root = Listing { entries: vec![dir_entry, file] };
        let root_bytes = root.to_canonical_json();
        store.put_object(ObjectKind::Manifest, &Digest::of(&root_bytes), &root_bytes).unwrap();
        (store, Digest::of(&root_bytes))
    }

    #[test]
    fn laying_out_never_follows_a_symlink_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let (store, root) = store_with_a_tree(dir.path());
        let canary = dir.path().join("canary");
        fs::create_dir(&canary).unwrap();
        let id = Digest::of(b"an artifact");

        // A symlink where a directory goes, and one where a file goes: each
        // is an error, and nothing is written through it.
        for in_the_way in ["dir", "file"] {
            let tree = dir.path().join(format!("tree-{in_the_way}"));
            fs::create_dir(&tree).unwrap();
            std::os::unix::fs::symlink(&canary, tree.join(in_the_way)).unwrap();
            let error = lay_out(&store, &id, &root, &tree).unwrap_err();
            assert!(matches!(error, RunError::Io { .. }), "{error:?}");
            assert_eq!(fs::read_dir(&canary).unwrap().count(), 0, "{in_the_way}: wrote through the symlink");
            crate::fs_tree::remove_tree(&tree);
        }
        // The tree root itself may not be a symlink either.
        let link = dir.path().join("tree-link");
        std::os::unix::fs::symlink(&canary, &link).unwrap();
        assert!(lay_out(&store, &id, &root, &link).is_err());
        assert_eq!(fs::read_dir(&canary).unwrap().count(), 0);

        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        lay_out(&store, &id, &root, &tree).unwrap();
        assert_eq!(fs::read_to_string(tree.join("dir/file")).unwrap(), "contents");
    }
}

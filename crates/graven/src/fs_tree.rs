//! Files graven writes into trees: the normalised modification time they
//! get, removing trees that graven made read-only (release trees) or that a
//! build left read-only (scratch directories), and the private modes of
//! what holds config and logs (directories 0700, files 0600).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// The mode of every directory graven keeps private: the home, run state,
/// processes' TMPDIRs.
pub(crate) const PRIVATE_DIR: u32 = 0o700;
/// The mode of every file graven keeps private: the ledger, logs, state.
pub(crate) const PRIVATE_FILE: u32 = 0o600;

/// Creates `path` and any missing parents as private directories (0700);
/// an existing `path` is left as it is.
pub(crate) fn create_private_dir_all(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR).create(path)
}

/// Options that create a private file (0600) if it is missing.
pub(crate) fn private_file() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.mode(PRIVATE_FILE);
    options
}

/// Gives the file or directory `path` the private `mode` if any other user
/// may read or write it; returns the mode it had then. A missing `path` is
/// no error. Never changes what needs no change: on a full disk or a
/// read-only filesystem, an already private home costs nothing.
pub(crate) fn tighten(path: &Path, mode: u32) -> io::Result<Option<u32>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let found = meta.permissions().mode() & 0o7777;
    let others_may_use = found & 0o077 != 0;
    if meta.file_type().is_symlink() || !others_may_use {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(Some(found))
}

/// Gives `path` (a symlink itself, not its target) the normalised
/// modification (and access) time, [`crate::NORMALISED_MTIME`].
pub(crate) fn set_normalised_mtime(path: &Path) -> io::Result<()> {
    let time = rustix::fs::Timespec { tv_sec: crate::NORMALISED_MTIME.cast_signed(), tv_nsec: 0 };
    let times = rustix::fs::Timestamps { last_access: time, last_modification: time };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// `flock`s `file`, again if a signal interrupts; `false` if a
/// non-blocking lock is held elsewhere.
pub(crate) fn lock(file: &fs::File, operation: rustix::fs::FlockOperation) -> io::Result<bool> {
    loop {
        match rustix::fs::flock(file, operation) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// A lock file taken for removing what it guards, or found held; what
/// it guards is to be removed while this lives.
pub(crate) enum Claim {
    /// No one holds it: taken exclusively while this lives (`None`: there
    /// is no lock file, so no one ever held it).
    Free { _lock: Option<fs::File> },
    /// Held elsewhere (a build, an export using what it guards).
    Held,
}

/// Takes the lock file at `path` exclusively, without waiting.
pub(crate) fn claim(path: &Path) -> io::Result<Claim> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Claim::Free { _lock: None }),
        Err(e) => return Err(e),
    };
    Ok(if lock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)? {
        Claim::Free { _lock: Some(file) }
    } else {
        Claim::Held
    })
}

/// Gives every entry of the tree at `root`, `root` included, the normalised
/// modification time; symlinks are not followed, and each directory is done
/// after what is in it (whose creation would change its mtime).
pub(crate) fn normalise_mtimes(root: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(root)?;
    if meta.is_dir() {
        for entry in fs::read_dir(root)? {
            normalise_mtimes(&entry?.path())?;
        }
    }
    set_normalised_mtime(root)
}

/// The bytes of the file at `path`, or of the files under it; symlinks
/// not followed.
pub(crate) fn size_of_tree(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(meta) if meta.is_dir() => {
            fs::read_dir(path).map_or(0, |entries| entries.flatten().map(|entry| size_of_tree(&entry.path())).sum())
        }
        _ => 0,
    }
}

/// Removes the tree at `path`, making its directories writable first where
/// needed. Best effort: what cannot be removed stays.
pub(crate) fn remove_tree(path: &Path) {
    if fs::symlink_metadata(path).is_err() || fs::remove_dir_all(path).is_ok() {
        return;
    }
    make_writable(path);
    let _ = fs::remove_dir_all(path);
}

fn make_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else { return };
    if meta.is_dir() {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o755));
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                make_writable(&entry.path());
            }
        }
    }
}

//! Files graven writes into trees: the normalised modification time they
//! get, and removing trees that graven made read-only (release trees) or
//! that a build left read-only (scratch directories).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Gives `path` (a symlink itself, not its target) the normalised
/// modification (and access) time, [`crate::NORMALISED_MTIME`].
pub(crate) fn set_normalised_mtime(path: &Path) -> io::Result<()> {
    let time = rustix::fs::Timespec { tv_sec: crate::NORMALISED_MTIME.cast_signed(), tv_nsec: 0 };
    let times = rustix::fs::Timestamps { last_access: time, last_modification: time };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
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

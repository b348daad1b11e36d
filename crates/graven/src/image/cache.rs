//! The layer cache's lock: each export or push holds it, shared, from the
//! moment it reads the cache until its image is written or pushed (the
//! image's layers are files in the cache); `graven gc --caches` empties
//! the cache only when no one holds it.

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::FlockOperation;

use super::ImageError;

/// The lock file, kept when the cache is emptied.
const LOCK: &str = ".lock";

/// The layer cache, held by an export or push; dropping it lets go.
#[derive(Debug)]
pub struct CacheHold {
    _lock: File,
}

impl CacheHold {
    /// Holds the cache in `dir`, created if missing, beside every other
    /// export and push; waits while `graven gc --caches` empties it.
    pub fn take(dir: &Path) -> Result<Self, ImageError> {
        let cache_error = |source| ImageError::Cache { path: dir.to_owned(), source };
        crate::fs_tree::create_private_dir_all(dir).map_err(cache_error)?;
        let lock = crate::fs_tree::private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK))
            .map_err(cache_error)?;
        crate::fs_tree::lock(&lock, FlockOperation::LockShared).map_err(cache_error)?;
        Ok(Self { _lock: lock })
    }
}

/// What `graven gc --caches` did to the layer cache, or would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheRemoved {
    /// The size of what was removed.
    pub bytes: u64,
    /// Left alone: an export or push holds it.
    pub in_use: bool,
}

/// Empties the layer cache in `dir` (only measures it if `dry_run`),
/// unless an export or push holds it.
pub fn remove_cache(dir: &Path, dry_run: bool) -> io::Result<CacheRemoved> {
    let claim = crate::fs_tree::claim(&dir.join(LOCK))?;
    if matches!(claim, crate::fs_tree::Claim::Held) {
        return Ok(CacheRemoved { bytes: 0, in_use: true });
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CacheRemoved::default()),
        Err(e) => return Err(e),
    };
    let mut bytes = 0;
    for entry in entries.flatten().filter(|entry| entry.file_name() != LOCK) {
        let path = entry.path();
        bytes += crate::fs_tree::size_of_tree(&path);
        if dry_run {
            continue;
        }
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            crate::fs_tree::remove_tree(&path);
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(CacheRemoved { bytes, in_use: false })
}

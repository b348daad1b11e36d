//! The embedded store: a directory on the local filesystem.
//!
//! ```text
//! store/blobs/sha256/ab/cdef…          file contents (62 more hex digits)
//! store/manifests/sha256/ab/cdef…      directory listings
//! store/artifacts/sha256/ab/cdef…      artifact records
//!
//! A file being written is named `.tmp-<pid>-<n>` beside its final name,
//! and linked into place when complete.
//! ```
//!
//! Every stored file is read-only with the normalised mtime. A blob's mode
//! is 0444, or 0555 if it was first stored from an executable file.

use std::fs::{self, File};
use std::io::{self, Read, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Area, Handover, ObjectKind, Store, StoreError, StoredItem};
use crate::Digest;

/// A store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// Numbers temporary names. One counter for the whole process rather than
/// one per [`LocalStore`]: two handles on one store in one process must
/// never pick the same name.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    /// Opens (and creates, if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(|source| StoreError::Io {
            action: "could not create the store at",
            path: root.to_owned(),
            source,
        })?;
        Ok(Self { root: root.to_owned() })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.path_in(Area::Blobs, digest)
    }

    /// Where object `digest` of `kind` lives.
    pub fn object_path(&self, kind: ObjectKind, digest: &Digest) -> PathBuf {
        self.path_in(kind.into(), digest)
    }

    /// Every file under `area`'s two-level fan-out, with its metadata;
    /// temporary files are reported apart.
    fn scan(&self, area: Area, mut visit: impl FnMut(&Path, &str, &fs::Metadata)) -> Result<(), StoreError> {
        let top = self.root.join(area.name()).join("sha256");
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { action: "could not list", path, source }
        };
        let shards = match fs::read_dir(&top) {
            Ok(shards) => shards,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&top)(e)),
        };
        for shard in shards {
            let shard = shard.map_err(io_error(&top))?;
            let shard_name = shard.file_name();
            let Some(prefix) = shard_name.to_str() else { continue };
            for entry in fs::read_dir(shard.path()).map_err(io_error(&shard.path()))? {
                let entry = entry.map_err(io_error(&shard.path()))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let Ok(meta) = entry.metadata() else { continue };
                let path = entry.path();
                if name.starts_with(TEMP_PREFIX) {
                    visit(&path, name, &meta);
                } else {
                    visit(&path, &format!("{prefix}{name}"), &meta);
                }
            }
        }
        Ok(())
    }

    fn path_in(&self, area: Area, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        let mut path = self.root.join(area.name());
        path.push("sha256");
        path.push(&hex[..2]);
        path.push(&hex[2..]);
        path
    }

    /// A fresh temporary name beside `target`, unique across threads and
    /// processes. Beside, not in a shared scratch directory: a link or
    /// rename within one directory does not take the filesystem-wide lock
    /// that a rename across directories does.
    fn temp_beside(target: &Path) -> PathBuf {
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        target.with_file_name(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
    }

    /// Runs `op`, creating `target`'s directory and retrying once if it is
    /// missing.
    fn in_shard<T>(target: &Path, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(target.parent().expect("store paths have parents"))?;
                op()
            }
            other => other,
        }
    }

    /// Writes a new file beside `target` with `fill`, seals it and moves it
    /// to `target`, unless a complete `target` of `len` bytes is there by
    /// then. Returns whether this call stored it: of several writers racing
    /// to store the same thing, exactly one does.
    fn write_beside(
        target: &Path,
        len: u64,
        executable: bool,
        fill: impl Fn(&Path) -> io::Result<()>,
    ) -> io::Result<bool> {
        let temp = Self::temp_beside(target);
        let fill = || match fill(&temp) {
            // A file left by a killed process that had this process's id:
            // nothing alive uses the name, since the counter is process-wide.
            Err(e)
                if matches!(e.kind(), io::ErrorKind::AlreadyExists | io::ErrorKind::PermissionDenied)
                    && temp.exists() =>
            {
                fs::remove_file(&temp)?;
                fill(&temp)
            }
            other => other,
        };
        let result = Self::in_shard(target, fill)
            .and_then(|()| seal(&temp, executable))
            .and_then(|()| publish(&temp, target, len));
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

/// Names of files being written start with this; they are never read as
/// blobs or objects, and are left behind only by a killed writer.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Moves the complete file `temp` to `target` unless a complete `target` of
/// `len` bytes is already there; returns whether it did. A hard link and
/// not a rename, because a link fails where a file exists while a rename
/// replaces it: of several writers of the same content, exactly one wins.
fn publish(temp: &Path, target: &Path, len: u64) -> io::Result<bool> {
    let stored = match fs::hard_link(temp, target) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !fs::metadata(target).is_ok_and(|meta| meta.len() == len) {
                // A file of the wrong size, left by a crash: replace it.
                fs::rename(temp, target)?;
                return Ok(true);
            }
            false
        }
        // A filesystem without hard links: rename, and trust the caller's
        // earlier check that the file was missing.
        Err(_) => {
            fs::rename(temp, target)?;
            return Ok(true);
        }
    };
    // Only a name goes: the contents live on as `target`, or were not needed.
    let _ = fs::remove_file(temp);
    Ok(stored)
}

/// How long ago a stored file was written. Its mtime is normalised, so this
/// is its ctime: the time it was sealed and linked into the store.
fn age_of(meta: &fs::Metadata) -> std::time::Duration {
    let ctime = std::time::UNIX_EPOCH + std::time::Duration::new(meta.ctime().cast_unsigned(), 0);
    std::time::SystemTime::now().duration_since(ctime).unwrap_or_default()
}

/// Sets the read-only mode and the normalised mtime on a file about to enter
/// the store.
fn seal(path: &Path, executable: bool) -> io::Result<()> {
    let mode = if executable { 0o555 } else { 0o444 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    crate::fs_tree::set_normalised_mtime(path)
}

impl LocalStore {
    /// The lock file that builds share and garbage collection takes alone.
    /// Read-only like everything in the store: `flock` needs no write.
    fn lease_file(&self) -> Result<File, StoreError> {
        let path = self.root.join(".lease");
        let error = |source| StoreError::Io { action: "could not open", path: path.clone(), source };
        match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let created = fs::OpenOptions::new().write(true).create_new(true).mode(0o444).open(&path);
                match created {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => File::open(&path).map_err(error),
                    Ok(file) => {
                        crate::fs_tree::set_normalised_mtime(&path).map_err(error)?;
                        Ok(file)
                    }
                    Err(e) => Err(error(e)),
                }
            }
            other => other.map_err(error),
        }
    }

    fn lock(&self, file: &File, operation: rustix::fs::FlockOperation) -> Result<(), StoreError> {
        crate::fs_tree::lock(file, operation).map(drop).map_err(|source| StoreError::Io {
            action: "could not lock",
            path: self.root.join(".lease"),
            source,
        })
    }
}

impl LocalStore {
    /// Adds blob `digest` from its bytes, which must hash to it (read from a
    /// shared store and checked); `executable` gives its mode, as the first
    /// listing that names it says. Returns whether the store did not have
    /// it before.
    pub fn put_blob_bytes(&self, digest: &Digest, bytes: &[u8], executable: bool) -> Result<bool, StoreError> {
        debug_assert_eq!(Digest::of(bytes), *digest);
        let len = bytes.len() as u64;
        if self.has_blob(digest, len)? {
            return Ok(false);
        }
        let target = self.blob_path(digest);
        Self::write_beside(&target, len, executable, |temp| {
            File::create_new(temp).and_then(|mut file| file.write_all(bytes))
        })
        .map_err(|source| StoreError::Io { action: "could not write", path: target, source })
    }

    /// Adds the file at `path`, whose contents have digest `digest`, as a
    /// blob. Returns whether the store did not have it before.
    pub fn put_blob(&self, digest: &Digest, path: &Path, handover: Handover) -> Result<bool, StoreError> {
        let io_error = |action, path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { action, path, source }
        };
        let meta = fs::symlink_metadata(path).map_err(io_error("could not read", path))?;
        if self.has_blob(digest, meta.len())? {
            return Ok(false);
        }
        let target = self.blob_path(digest);
        let executable = meta.mode() & 0o100 != 0;
        if let Handover::Move { links } = handover
            && meta.nlink() <= links
        {
            // A hard link, not a rename: a rename across directories takes a
            // filesystem-wide lock that parallel ingest threads queue on.
            // The build directory's name goes away with the build directory.
            seal(path, executable).map_err(io_error("could not seal", path))?;
            match Self::in_shard(&target, || fs::hard_link(path, &target)) {
                Ok(()) => return Ok(true),
                // Stored meanwhile by another thread or process, or a blob
                // of the wrong size left by a crash: replace it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if self.has_blob(digest, meta.len())? {
                        return Ok(false);
                    }
                    return Self::write_beside(&target, meta.len(), executable, |temp| fs::hard_link(path, temp))
                        .map_err(io_error("could not write", &target));
                }
                // Another filesystem: copy instead.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        action: "could not move into the store",
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        }
        // The file is shared with something outside the build, or must stay:
        // copy it, so that nothing outside the store can change a blob.
        // `fs::copy` is copy_file_range on Linux, which shares the extents
        // copy-on-write (a reflink) where the filesystem can (Btrfs, XFS):
        // safe and nearly free there, a real copy elsewhere.
        Self::write_beside(&target, meta.len(), executable, |temp| fs::copy(path, temp).map(drop))
            .map_err(io_error("could not copy into the store", path))
    }
}

impl Store for LocalStore {
    fn local(&self) -> &LocalStore {
        self
    }

    fn lease(&self) -> Result<super::Lease, StoreError> {
        let file = self.lease_file()?;
        self.lock(&file, rustix::fs::FlockOperation::LockShared)?;
        Ok(super::Lease::new(file))
    }

    fn collect_lease(&self, on_wait: &mut dyn FnMut()) -> Result<super::Lease, StoreError> {
        let file = self.lease_file()?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(super::Lease::new(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => on_wait(),
            Err(_) => {}
        }
        self.lock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(super::Lease::new(file))
    }

    fn has_blob(&self, digest: &Digest, size: u64) -> Result<bool, StoreError> {
        Ok(self.blob_size(digest)? == Some(size))
    }

    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { action: "could not read", path, source }),
        }
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, StoreError> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(file) => Ok(Box::new(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { kind: "blob", digest: *digest })
            }
            Err(source) => Err(StoreError::Io { action: "could not open", path, source }),
        }
    }

    fn blob_location(&self, digest: &Digest) -> String {
        self.blob_path(digest).display().to_string()
    }

    fn put_object(&self, kind: ObjectKind, digest: &Digest, bytes: &[u8]) -> Result<bool, StoreError> {
        debug_assert_eq!(Digest::of(bytes), *digest);
        let target = self.object_path(kind, digest);
        if fs::metadata(&target).is_ok_and(|meta| meta.len() == bytes.len() as u64) {
            return Ok(false);
        }
        let len = bytes.len() as u64;
        Self::write_beside(&target, len, false, |temp| {
            File::create_new(temp).and_then(|mut file| file.write_all(bytes))
        })
        .map_err(|source| StoreError::Io { action: "could not write", path: target, source })
    }

    fn get_object(&self, kind: ObjectKind, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.object_path(kind, digest);
        match fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { kind: kind.name(), digest: *digest })
            }
            Err(source) => Err(StoreError::Io { action: "could not read", path, source }),
        }
    }

    fn has_object(&self, kind: ObjectKind, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.object_path(kind, digest).exists())
    }

    fn list(&self, area: Area, visit: &mut dyn FnMut(StoredItem) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut failed = None;
        self.scan(area, |_, hex, meta| {
            if failed.is_none()
                && let Ok(digest) = hex.parse::<Digest>()
                && let Err(error) = visit(StoredItem { digest, size: meta.len(), age: age_of(meta) })
            {
                failed = Some(error);
            }
        })?;
        failed.map_or(Ok(()), Err)
    }

    fn blob_sizes(&self, digests: &[Digest]) -> Result<Vec<Option<u64>>, StoreError> {
        use rayon::prelude::*;
        digests.par_iter().map(|digest| self.blob_size(digest)).collect()
    }

    fn remove(&self, area: Area, digest: &Digest) -> Result<(), StoreError> {
        let path = self.path_in(area, digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StoreError::Io { action: "could not remove", path, source: e })
            }
            _ => Ok(()),
        }
    }

    fn remove_abandoned(&self, age: std::time::Duration) -> Result<u64, StoreError> {
        let mut freed = 0;
        for area in [Area::Blobs, Area::Manifests, Area::Artifacts] {
            self.scan(area, |path, name, meta| {
                if name.starts_with(TEMP_PREFIX) && age_of(meta) >= age && fs::remove_file(path).is_ok() {
                    freed += meta.len();
                }
            })?;
        }
        Ok(freed)
    }

    fn sync(&self) -> Result<(), StoreError> {
        // One syncfs for the whole filesystem costs far less than an fsync
        // per file and per directory, and covers them all.
        let dir = File::open(&self.root).map_err(|source| StoreError::Io {
            action: "could not open",
            path: self.root.clone(),
            source,
        })?;
        rustix::fs::syncfs(&dir).map_err(|e| StoreError::Io {
            action: "could not sync",
            path: self.root.clone(),
            source: e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_left_by_a_killed_process_with_this_pid_are_replaced() {
        // A container often gives graven the same pid every run, so a run
        // killed mid-write leaves names that the next run picks again.
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("store")).unwrap();
        let source = dir.path().join("source");
        fs::write(&source, "blob").unwrap();
        let (object, blob) = (Digest::of(b"object"), Digest::of(b"blob"));
        let targets = [store.object_path(ObjectKind::Manifest, &object), store.blob_path(&blob)];
        let next = NEXT_TEMP.load(Ordering::Relaxed);
        for target in &targets {
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            for n in next..next + 64 {
                let leftover = target.with_file_name(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
                fs::write(&leftover, "stale").unwrap();
                seal(&leftover, false).unwrap();
            }
        }
        assert!(store.put_object(ObjectKind::Manifest, &object, b"object").unwrap());
        assert!(store.put_blob(&blob, &source, Handover::Copy).unwrap());
        assert_eq!(store.get_object(ObjectKind::Manifest, &object).unwrap(), b"object");
        assert_eq!(fs::read(store.blob_path(&blob)).unwrap(), b"blob");
    }
}

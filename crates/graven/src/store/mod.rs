//! The store holds artifact contents, content-addressed: file contents as
//! blobs, and small canonical JSON objects (directory listings and artifact
//! records). Everything in it is named by its sha256 and never changes once
//! written; writers use a temporary name and rename, so a reader sees a
//! whole object or none.
//!
//! The build, export and run stages reach the store only through [`Store`].

mod local;
mod objects;
mod pack;
mod s3;

use std::io::Read;
use std::path::PathBuf;

pub use local::LocalStore;
pub use objects::{ArtifactError, ManifestError, host_references, walk};
pub use pack::IndexProblem;
pub use s3::{RemoteProblem, S3Store};

use crate::Digest;

/// The kinds of small objects kept beside the blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A directory listing of a manifest.
    Manifest,
    /// An artifact record: a manifest's root and how to run it.
    Artifact,
}

impl ObjectKind {
    /// The name used in paths and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::Artifact => "artifact",
        }
    }
}

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A blob or object is not in the store.
    #[error("{kind} {digest} is not in the store")]
    NotFound {
        /// `blob`, `manifest` or `artifact`.
        kind: &'static str,
        /// What was looked for.
        digest: Digest,
    },
    /// `GRAVEN_STORE` (or `--store-url`) is not a store URL graven knows.
    #[error("'{url}' is not a store URL: {why}")]
    BadUrl {
        /// The URL, without any password.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A request to a shared store failed.
    #[error(transparent)]
    Remote(Box<RemoteFailure>),
    /// An object an artifact needs is not in the shared store.
    #[error("{what} is not in {url}: it was deleted, or never sent")]
    NotInBucket {
        /// The object, e.g. "blob sha256:…".
        what: String,
        /// Where it should be.
        url: String,
    },
    /// A pack index in the shared store cannot be used.
    #[error("the pack index {url} cannot be used")]
    BadIndex {
        /// The index.
        url: String,
        /// What is wrong with it.
        #[source]
        problem: IndexProblem,
    },
    /// An object in the shared store is shorter than its index says.
    #[error("{url} ends at byte {found}, before byte {wanted} that its index names: it is truncated")]
    Truncated {
        /// The object.
        url: String,
        /// Where it should reach.
        wanted: u64,
        /// Where it ends.
        found: u64,
    },
    /// A blob's bytes are not what its listing says: another size, or
    /// another digest.
    #[error("blob {digest} {mismatch}")]
    Mismatch {
        /// The blob.
        digest: Digest,
        /// How it differs.
        mismatch: Mismatch,
    },
    /// The filesystem failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What graven was doing, e.g. "could not write".
        action: &'static str,
        /// The file it was doing it to.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// A request to a shared store that failed.
#[derive(Debug, thiserror::Error)]
#[error("{doing} {url}: {problem}")]
pub struct RemoteFailure {
    /// The object or bucket, as `s3://bucket/key`.
    pub url: String,
    /// What graven was doing, e.g. "could not read".
    pub doing: &'static str,
    /// Why, and what to do.
    pub problem: RemoteProblem,
    /// The failure.
    #[source]
    pub source: object_store::Error,
}

/// The three areas of a store, for listing and collecting garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// File contents.
    Blobs,
    /// Directory listings.
    Manifests,
    /// Artifact records.
    Artifacts,
}

impl Area {
    /// The area's directory name, and the word used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blobs => "blobs",
            Self::Manifests => "manifests",
            Self::Artifacts => "artifacts",
        }
    }
}

impl From<ObjectKind> for Area {
    fn from(kind: ObjectKind) -> Self {
        match kind {
            ObjectKind::Manifest => Self::Manifests,
            ObjectKind::Artifact => Self::Artifacts,
        }
    }
}

/// One stored item, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredItem {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// How long ago it was stored.
    pub age: std::time::Duration,
}

/// How a file may be handed to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The store may take the file itself (link or rename it into place):
    /// the caller will not use it again. If the file's inode has more links
    /// than the caller's, something else shares it, and the store copies it
    /// instead, so that nothing outside the store can change a blob.
    Move {
        /// How many links to the file's inode the caller holds (and will
        /// throw away): 1, unless it has hard links of its own.
        links: u64,
    },
    /// The store must copy the contents; the file stays where it is.
    Copy,
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the local store to the shared one.
    Upload,
    /// From the shared store to the local one.
    Download,
}

/// What a transfer between the local and a shared store reports, from
/// several threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEvent {
    /// It starts, with this much to move.
    Started {
        /// Upload or download.
        direction: Direction,
        /// Objects to move (blobs, listings, packs of them).
        objects: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// This much more has moved.
    Moved {
        /// Objects.
        objects: u64,
        /// Bytes.
        bytes: u64,
    },
    /// It is over.
    Finished,
}

/// Told of transfers' progress: a progress bar on a terminal.
pub trait TransferObserver: Send + Sync {
    /// One event.
    fn on_transfer(&self, event: &TransferEvent);
}

/// An observer that ignores everything.
pub struct Silent;

impl TransferObserver for Silent {
    fn on_transfer(&self, _: &TransferEvent) {}
}

/// What a [`Store::publish`] or [`Store::fetch`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Transfer {
    /// Blobs and listings moved.
    pub objects: u64,
    /// Their bytes (packed ones included, without any framing).
    pub bytes: u64,
    /// Requests made to the shared store.
    pub requests: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// A lease on a store, held until dropped: see [`Store::lease`] and
/// [`Store::collect_lease`].
pub struct Lease {
    _held: Box<dyn std::any::Any + Send>,
}

impl Lease {
    /// A lease held by `guard` (a lock, an open file) until it is dropped.
    pub fn new(guard: impl std::any::Any + Send) -> Self {
        Self { _held: Box::new(guard) }
    }
}

/// Where artifact contents live. Implementations must be safe to use from
/// many threads and many processes at once.
pub trait Store: Send + Sync {
    /// The local store in front of this one: the store itself when it is
    /// local, else the local copy of a shared one. Builds write files into
    /// it (see [`LocalStore::put_blob`]) and the run stage lays trees out
    /// from it by hard link; [`Store::publish`] and [`Store::fetch`] move
    /// artifacts between it and the shared store.
    fn local(&self) -> &LocalStore;

    /// A build's lease: held from a build's first look at the store until
    /// the ledger records it. Many builds hold one at once; garbage
    /// collection waits until none does, so nothing a build found in the
    /// store and reuses (a blob, an artifact) is collected under it, however
    /// old it is.
    fn lease(&self) -> Result<Lease, StoreError>;

    /// Garbage collection's lease: held while it decides what is garbage and
    /// removes it; no build holds [`Store::lease`] meanwhile. Calls `on_wait`
    /// once if it must wait for builds in progress, then waits.
    fn collect_lease(&self, on_wait: &mut dyn FnMut()) -> Result<Lease, StoreError>;

    /// Whether blob `digest` is present with `size` bytes. A blob of another
    /// size (a write cut short by a crash) counts as missing, so it is
    /// written again.
    fn has_blob(&self, digest: &Digest, size: u64) -> Result<bool, StoreError>;

    /// The size of blob `digest`, or `None` if the store does not have it.
    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;

    /// The sizes of many blobs, in order, `None` for each one the store
    /// lacks: one call for what a build or a release must check, which a
    /// remote store answers with few requests, and a local one in parallel.
    fn blob_sizes(&self, digests: &[Digest]) -> Result<Vec<Option<u64>>, StoreError> {
        digests.iter().map(|digest| self.blob_size(digest)).collect()
    }

    /// Opens blob `digest` for reading.
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Where blob `digest` is, for a message: a path, a URL.
    fn blob_location(&self, digest: &Digest) -> String;

    /// Adds an object; returns whether the store did not have it before.
    /// `bytes` must hash to `digest`.
    fn put_object(&self, kind: ObjectKind, digest: &Digest, bytes: &[u8]) -> Result<bool, StoreError>;

    /// Reads an object.
    fn get_object(&self, kind: ObjectKind, digest: &Digest) -> Result<Vec<u8>, StoreError>;

    /// Whether an object is present.
    fn has_object(&self, kind: ObjectKind, digest: &Digest) -> Result<bool, StoreError>;

    /// Whether each artifact record of `ids` is present, in order: one call
    /// for a list of builds, which a remote store answers with one listing
    /// rather than a request per build.
    fn has_artifacts(&self, ids: &[Digest]) -> Result<Vec<bool>, StoreError> {
        ids.iter().map(|id| self.has_object(ObjectKind::Artifact, id)).collect()
    }

    /// Makes everything added so far durable. Called once per build, before
    /// the ledger records it, rather than once per file.
    fn sync(&self) -> Result<(), StoreError>;

    /// Makes sure the shared store has artifact `id` whole, its record last:
    /// sends what the shared store lacks from the local store in front, so
    /// that nothing there ever names an object that is not there. A no-op
    /// for a local store, which is its own front. A shared store that has
    /// the record is trusted to have the rest, unless `repair` asks to
    /// check every object and send again what is gone.
    fn publish(&self, id: &Digest, repair: bool) -> Result<Transfer, ArtifactError> {
        let _ = (id, repair);
        Ok(Transfer::default())
    }

    /// Makes sure the local store in front has artifact `id` whole: brings
    /// what it lacks from the shared store, each object checked against its
    /// digest (and each listing validated) before it is stored. After it,
    /// the artifact's record, listings and blobs are read from
    /// [`Store::local`]. A no-op for a local store.
    fn fetch(&self, id: &Digest) -> Result<Transfer, ArtifactError> {
        let _ = id;
        Ok(Transfer::default())
    }

    /// Like [`Store::fetch`], but only the artifact's record and listings,
    /// for commands that compare trees without reading files.
    fn fetch_listings(&self, id: &Digest) -> Result<Transfer, ArtifactError> {
        let _ = id;
        Ok(Transfer::default())
    }

    /// Calls `visit` with everything in `area`, temporary files excluded,
    /// as it is read: a store of millions of blobs is never held in memory.
    fn list(&self, area: Area, visit: &mut dyn FnMut(StoredItem) -> Result<(), StoreError>) -> Result<(), StoreError>;

    /// Removes one item; one that is already gone is not an error.
    fn remove(&self, area: Area, digest: &Digest) -> Result<(), StoreError>;

    /// Removes temporary files older than `age`, left by killed writers;
    /// returns the bytes freed.
    fn remove_abandoned(&self, age: std::time::Duration) -> Result<u64, StoreError>;
}

/// Opens the store at `url` (`GRAVEN_STORE`), or the local one in `home`
/// when there is none: the one place a store backend is chosen.
/// `file:PATH` names a local store elsewhere; `s3://BUCKET/PREFIX` a bucket,
/// with the home's store in front as its cache. Transfers to and from a
/// shared store are reported to `observer`.
pub fn open_store(
    url: Option<&str>,
    home: &crate::home::Home,
    observer: std::sync::Arc<dyn TransferObserver>,
) -> Result<Box<dyn Store>, StoreError> {
    let root = match url.filter(|url| !url.is_empty()) {
        None => home.store_dir(),
        Some(url) => match crate::url::scheme(url) {
            Some("file") => crate::url::local_path(url)
                .ok_or_else(|| StoreError::BadUrl { url: crate::url::redacted(url), why: "it names no directory" })?,
            Some("s3") => {
                let cache = LocalStore::open(&home.store_dir())?;
                let indexes = home.pack_index_dir();
                let aws_vars: Vec<(String, String)> =
                    std::env::vars().filter(|(key, _)| key.starts_with("AWS_")).collect();
                return Ok(Box::new(S3Store::open(url, cache, indexes, observer, &aws_vars)?));
            }
            _ => {
                return Err(StoreError::BadUrl {
                    url: crate::url::redacted(url),
                    why: "use s3://BUCKET/PREFIX, or file:PATH",
                });
            }
        },
    };
    Ok(Box::new(LocalStore::open(&root)?))
}

/// Removes blob `digest` if the store holds one whose contents do not match
/// it, so that the next [`LocalStore::put_blob`] stores it again; returns whether
/// it did. A put trusts a blob of the right size, so this is how a blob
/// damaged in place (through a hard link, say) is repaired.
pub fn remove_if_corrupt_blob(store: &dyn Store, digest: &Digest) -> Result<bool, StoreError> {
    match blob_matches(store, digest) {
        Ok(true) | Err(StoreError::NotFound { .. }) => Ok(false),
        Ok(false) => store.remove(Area::Blobs, digest).map(|()| true),
        Err(error) => Err(error),
    }
}

/// Removes object `digest` if the store holds one whose bytes do not match
/// it; returns whether it did. See [`remove_if_corrupt_blob`].
pub fn remove_if_corrupt_object(store: &dyn Store, kind: ObjectKind, digest: &Digest) -> Result<bool, StoreError> {
    match store.get_object(kind, digest) {
        Ok(bytes) if Digest::of(&bytes) == *digest => Ok(false),
        Ok(_) => store.remove(kind.into(), digest).map(|()| true),
        Err(StoreError::NotFound { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// How a blob differs from what its listing says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// It has another size.
    Size {
        /// The size its listing gives.
        listed: u64,
        /// The size it has.
        found: u64,
    },
    /// Its bytes hash to another digest.
    Digest,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Size { listed, found } => write!(f, "has {found} bytes, not the {listed} its listing says"),
            Self::Digest => f.write_str("does not hash to its name: its contents are corrupt"),
        }
    }
}

/// Opens blob `digest`, which a listing says has `size` bytes: the one way
/// an artifact's file contents are read. The reader yields exactly the
/// blob's bytes, and fails (with [`std::io::ErrorKind::InvalidData`], wrapping a
/// [`StoreError::Mismatch`]) as soon as the blob proves longer or shorter
/// than `size`, or, at its end, if its bytes do not hash to `digest`; so a
/// caller that reads to the end has used nothing but the listed bytes.
pub fn open_checked_blob(store: &dyn Store, digest: &Digest, size: u64) -> Result<CheckedBlob, StoreError> {
    Ok(CheckedBlob {
        inner: store.open_blob(digest)?,
        digest: *digest,
        listed: size,
        read: 0,
        hasher: Some(crate::digest::Hasher::default()),
        failed: false,
    })
}

/// A blob read through its listing's size and digest: see
/// [`open_checked_blob`].
pub struct CheckedBlob {
    inner: Box<dyn Read + Send>,
    digest: Digest,
    listed: u64,
    read: u64,
    /// `None` once the end is reached and the digest checked.
    hasher: Option<crate::digest::Hasher>,
    failed: bool,
}

impl CheckedBlob {
    /// Whether a read failed: the blob, not whatever its bytes were being
    /// written to.
    pub fn failed(&self) -> bool {
        self.failed
    }

    fn mismatch(&self, mismatch: Mismatch) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, StoreError::Mismatch { digest: self.digest, mismatch })
    }

    /// The [`StoreError`] behind a read error of this reader: the mismatch,
    /// or the read failure of blob `digest`.
    pub fn into_store_error(digest: &Digest, error: std::io::Error) -> StoreError {
        match error.downcast::<StoreError>() {
            Ok(store_error) => store_error,
            Err(error) => {
                StoreError::Io { action: "could not read blob", path: PathBuf::from(digest.to_string()), source: error }
            }
        }
    }
}

impl Read for CheckedBlob {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let result = self.read_checked(buf);
        self.failed |= result.as_ref().is_err_and(|e| e.kind() != std::io::ErrorKind::Interrupted);
        result
    }
}

impl CheckedBlob {
    fn read_checked(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let remaining = self.listed - self.read;
        if remaining == 0 {
            // At the listed end: the blob must end here too, and hash right.
            let Some(hasher) = self.hasher.take() else { return Ok(0) };
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? != 0 {
                // Longer: the rest is read only to say how much longer.
                let rest = std::io::copy(&mut self.inner, &mut std::io::sink())?;
                return Err(self.mismatch(Mismatch::Size { listed: self.listed, found: self.listed + 1 + rest }));
            }
            if hasher.finish() != self.digest {
                return Err(self.mismatch(Mismatch::Digest));
            }
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..max])?;
        if read == 0 && max > 0 {
            return Err(self.mismatch(Mismatch::Size { listed: self.listed, found: self.read }));
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..read]);
        }
        self.read += read as u64;
        Ok(read)
    }
}

/// Reads blob `digest`, which a listing says has `size` bytes, whole, and
/// checks it: `Ok(None)` if it is what the listing says, else how it
/// differs.
pub fn check_blob(store: &dyn Store, digest: &Digest, size: u64) -> Result<Option<Mismatch>, StoreError> {
    let mut blob = open_checked_blob(store, digest, size)?;
    match std::io::copy(&mut blob, &mut std::io::sink()) {
        Ok(_) => Ok(None),
        Err(error) => match CheckedBlob::into_store_error(digest, error) {
            StoreError::Mismatch { mismatch, .. } => Ok(Some(mismatch)),
            other => Err(other),
        },
    }
}

/// Reads blob `digest` whole and checks it against its digest. Returns
/// `Ok(false)` if the contents do not match.
pub fn blob_matches(store: &dyn Store, digest: &Digest) -> Result<bool, StoreError> {
    let (found, _) = crate::digest::of_reader(store.open_blob(digest)?).map_err(|source| StoreError::Io {
        action: "could not read blob",
        path: PathBuf::from(digest.to_string()),
        source,
    })?;
    Ok(found == *digest)
}

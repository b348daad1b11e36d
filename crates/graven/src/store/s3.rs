//! The S3 store: a bucket on any S3-compatible server, shared by a team,
//! with the local store in front of it as a cache.
//!
//! ```text
//! PREFIX/artifacts/<hex>        artifact records, written last
//! PREFIX/blobs/<hex>            blobs of 1 MiB and more, one object each
//! PREFIX/packs/<hex>.pack       listings and small blobs, back to back
//! PREFIX/packs/<hex>.index      where each object of pack <hex> is
//! ```
//!
//! Everything is content-addressed and written create-only
//! (`If-None-Match: *`), so nothing is ever overwritten, and "already
//! there" is success. A build is stored locally first, then
//! [`Store::publish`] sends only what the bucket lacks: packs, then their
//! indexes, then big blobs, then the artifact record, so nothing in the
//! bucket names an object that is not there. [`Store::fetch`] brings into
//! the cache only what it lacks; every object is checked against its own
//! digest before it is stored, whatever a pack's index says.
//!
//! All requests go through `object_store` (retries with backoff, timeouts)
//! on a tokio runtime private to this store, a bounded number at once.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, RetryConfig,
};

use super::objects::shown_dir;
use super::pack::{LOOSE_MIN, PACK_TARGET, PackBuilder, PackIndex, Packed};
use super::{
    Area, ArtifactError, Direction, Lease, LocalStore, ManifestError, Mismatch, ObjectKind, RemoteFailure, Store,
    StoreError, StoredItem, Transfer, TransferEvent, TransferObserver,
};
use crate::Digest;
use crate::model::{Artifact, EntryKind, Listing};

/// Requests in flight at once.
const REQUESTS_AT_ONCE: usize = 8;

/// Ranges of one pack closer than this are fetched in one request.
const SPAN_GAP: u64 = 1 << 20;

/// Blobs up to this size are sent in one create-only request; bigger ones
/// in parts (which S3 cannot make conditional: the key is the content's
/// digest, so a racing writer writes the same bytes).
const SINGLE_PUT_MAX: u64 = 64 << 20;

/// How a failed request is retried: transient failures (a 5xx, a reset
/// connection) again and again for up to 3 s, with backoff; so an
/// unreachable server is reported within seconds, not minutes.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: Duration::from_secs(3),
    }
}

/// Where a packed object is.
#[derive(Debug, Clone, Copy)]
struct Location {
    pack: Digest,
    offset: u64,
    size: u64,
}

/// What the bucket's packs hold.
#[derive(Debug, Default)]
struct BucketIndex {
    objects: HashMap<(Packed, Digest), Location>,
    /// Every pack's index, for fetching the whole of a pack of listings.
    packs: HashMap<Digest, PackIndex>,
}

/// An artifact's tree as the local store has it: what a publish sends.
struct LocalTree {
    listings: Vec<(Digest, Vec<u8>)>,
    blobs: BTreeMap<Digest, u64>,
}

/// A blob a fetch must bring: its size and mode from the first listing
/// that names it, and that file's path, for errors.
#[derive(Debug, Clone)]
struct Wanted {
    size: u64,
    executable: bool,
    path: String,
}

/// The S3 store. See the module's documentation.
pub struct S3Store {
    cache: Arc<LocalStore>,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    /// Where the server is, for messages: `AWS_ENDPOINT_URL`, or AWS.
    endpoint: String,
    bucket: Arc<AmazonS3>,
    /// `prefix/`, or empty.
    prefix: String,
    runtime: tokio::runtime::Runtime,
    /// Local copies of pack indexes, which never change.
    indexes: PathBuf,
    observer: Arc<dyn TransferObserver>,
    requests: AtomicU64,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("url", &self.url).field("cache", &self.cache.root()).finish_non_exhaustive()
    }
}

impl S3Store {
    /// Opens `s3://BUCKET/PREFIX` with the standard `AWS_*` variables in
    /// `aws_vars` (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`…; the
    /// process's own, from [`open_store`](super::open_store)), with `cache`
    /// in front; pack indexes are kept in `indexes`. Makes no request: a bad
    /// bucket or bad credentials show at the first use.
    pub fn open(
        url: &str,
        cache: LocalStore,
        indexes: PathBuf,
        observer: Arc<dyn TransferObserver>,
        aws_vars: &[(String, String)],
    ) -> Result<Self, StoreError> {
        let bad = |why| StoreError::BadUrl { url: crate::url::redacted(url), why };
        let rest = url.strip_prefix("s3://").ok_or(bad("an S3 store's URL is s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !is_bucket_name(bucket) {
            return Err(bad("the bucket name must be 3 to 63 of a-z, 0-9, '.' and '-'"));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() && !prefix.split('/').all(is_prefix_part) {
            return Err(bad("the prefix must be names of A-Z, a-z, 0-9, '.', '_' and '-', separated by '/'"));
        }
        let var = |name: &str| aws_vars.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
        let endpoint = var("AWS_ENDPOINT_URL").or_else(|| var("AWS_ENDPOINT")).unwrap_or_else(|| "AWS".to_owned());
        // As object_store's from_env, from the variables given. Timeouts are
        // set one by one: client options as a whole would replace what the
        // variables set (AWS_ALLOW_HTTP among them).
        let mut builder = AmazonS3Builder::new();
        for (key, value) in aws_vars {
            if let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
        let store = builder
            .with_bucket_name(bucket)
            .with_retry(retry_config())
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "2s")
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "300s")
            .build()
            .map_err(|source| {
                StoreError::Remote(Box::new(RemoteFailure {
                    url: crate::url::redacted(url),
                    doing: "could not set up",
                    problem: RemoteProblem::Setup,
                    source,
                }))
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("graven-s3")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io { action: "could not start threads for", path: url.into(), source })?;
        Ok(Self {
            cache: Arc::new(cache),
            url: format!("s3://{bucket}{}{prefix}", if prefix.is_empty() { "" } else { "/" }),
            endpoint,
            bucket: Arc::new(store),
            prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
            runtime,
            indexes,
            observer,
            requests: AtomicU64::new(0),
        })
    }

    fn key(&self, name: &str) -> Key {
        Key::from(format!("{}{name}", self.prefix))
    }

    fn artifact_key(&self, id: &Digest) -> Key {
        self.key(&format!("artifacts/{}", id.hex()))
    }

    fn blob_key(&self, digest: &Digest) -> Key {
        self.key(&format!("blobs/{}", digest.hex()))
    }

    fn pack_key(&self, pack: &Digest, ext: &str) -> Key {
        self.key(&format!("packs/{}.{ext}", pack.hex()))
    }

    /// `s3://bucket/prefix/key`, for messages.
    fn shown(&self, key: &Key) -> String {
        let bucket = self.url.trim_start_matches("s3://").split('/').next().unwrap_or_default();
        format!("s3://{bucket}/{key}")
    }

    fn error(&self, key: &Key, doing: &'static str, source: object_store::Error) -> StoreError {
        let problem = RemoteProblem::of(&source, &self.endpoint, &self.url);
        StoreError::Remote(Box::new(RemoteFailure { url: self.shown(key), doing, problem, source }))
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether `key` is in the bucket.
    async fn exists(&self, key: &Key) -> Result<Option<u64>, StoreError> {
        self.count();
        match self.bucket.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.error(key, "could not look up", source)),
        }
    }

    /// Reads `key` whole; `None` if it is not there.
    async fn get(&self, key: &Key) -> Result<Option<Bytes>, StoreError> {
        self.count();
        let result = match self.bucket.get(key).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(self.error(key, "could not read", source)),
        };
        result.bytes().await.map(Some).map_err(|source| self.error(key, "could not read", source))
    }

    /// Writes `key` unless it is there: "already there" is success, since
    /// every key names its content. Returns whether it wrote.
    async fn put_new(&self, key: &Key, bytes: Bytes) -> Result<bool, StoreError> {
        self.count();
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.bucket.put_opts(key, PutPayload::from_bytes(bytes), options).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(source) => Err(self.error(key, "could not write", source)),
        }
    }

    /// Makes sure the bucket exists and lets us in: a missing key looks the
    /// same as a missing bucket to a GET or a HEAD, which S3 answers 404
    /// for both. One listing of at most one page.
    async fn probe(&self) -> Result<(), StoreError> {
        let prefix = self.key("artifacts");
        self.count();
        self.bucket
            .list_with_delimiter(Some(&prefix))
            .await
            .map(drop)
            .map_err(|e| self.error(&prefix, "could not list", e))
    }

    /// Every pack index in the bucket, from the local copies where there
    /// are some. The listing of `packs/` is also the first request of a
    /// publish or a fetch, and so the one that finds a missing bucket or
    /// refused credentials.
    async fn bucket_index(&self) -> Result<BucketIndex, StoreError> {
        let prefix = self.key("packs");
        let mut packs = Vec::new();
        let mut listed = 0u64;
        let mut listing = self.bucket.list(Some(&prefix));
        self.count();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|source| self.error(&prefix, "could not list", source))?;
            listed += 1;
            if listed.is_multiple_of(1000) {
                self.count();
            }
            if let Some(hex) = meta.location.filename().and_then(|name| name.strip_suffix(".index"))
                && let Ok(pack) = format!("sha256:{hex}").parse::<Digest>()
            {
                packs.push(pack);
            }
        }
        let indexes: Vec<PackIndex> = stream::iter(packs)
            .map(|pack| self.pack_index(pack))
            .buffer_unordered(REQUESTS_AT_ONCE)
            .try_collect()
            .await?;
        let mut index = BucketIndex::default();
        for pack in indexes {
            for entry in &pack.entries {
                index.objects.entry((entry.kind, entry.digest)).or_insert(Location {
                    pack: pack.pack,
                    offset: entry.offset,
                    size: entry.size,
                });
            }
            index.packs.insert(pack.pack, pack);
        }
        Ok(index)
    }

    /// Pack `pack`'s index: the local copy if it is valid, else the
    /// bucket's, validated, then kept.
    async fn pack_index(&self, pack: Digest) -> Result<PackIndex, StoreError> {
        let copy = self.indexes.join(format!("{}.index", pack.hex()));
        if let Ok(bytes) = std::fs::read(&copy)
            && let Ok(index) = PackIndex::parse(&bytes, &pack)
        {
            return Ok(index);
        }
        let key = self.pack_key(&pack, "index");
        let bytes = self.get(&key).await?.ok_or_else(|| StoreError::NotInBucket {
            what: format!("the index of pack {pack}"),
            url: self.shown(&key),
        })?;
        let index = PackIndex::parse(&bytes, &pack)
            .map_err(|problem| StoreError::BadIndex { url: self.shown(&key), problem })?;
        // A cache: a copy that cannot be kept is fetched again next time.
        let _ = keep_copy(&self.indexes, &copy, &bytes);
        Ok(index)
    }

    fn started(&self, direction: Direction, objects: u64, bytes: u64) {
        self.observer.on_transfer(&TransferEvent::Started { direction, objects, bytes });
    }

    fn moved(&self, objects: u64, bytes: u64) {
        self.observer.on_transfer(&TransferEvent::Moved { objects, bytes });
    }

    /// What the bucket lacks of `tree`: listings, small blobs, big blobs.
    /// With `repair`, packs are looked up too, since an index may outlive
    /// its pack.
    async fn lacking<'t>(
        &self,
        tree: &'t LocalTree,
        repair: bool,
    ) -> Result<(Vec<&'t (Digest, Vec<u8>)>, Vec<(Digest, u64)>, Vec<(Digest, u64)>), ArtifactError> {
        let mut index = self.bucket_index().await?;
        if repair {
            // An index may outlive its pack: forget the packs that are gone,
            // so that their objects are sent again.
            let packs: Vec<Digest> = index.packs.keys().copied().collect();
            let present: Vec<(Digest, bool)> = stream::iter(packs)
                .map(|pack| async move { Ok((pack, self.exists(&self.pack_key(&pack, "pack")).await?.is_some())) })
                .buffer_unordered(REQUESTS_AT_ONCE)
                .try_collect::<Vec<_>>()
                .await
                .map_err(ArtifactError::Store)?;
            let gone: std::collections::HashSet<Digest> =
                present.into_iter().filter(|(_, present)| !present).map(|(pack, _)| pack).collect();
            index.objects.retain(|_, location| !gone.contains(&location.pack));
        }
        let listings: Vec<&'t (Digest, Vec<u8>)> = tree
            .listings
            .iter()
            .filter(|(digest, _)| !index.objects.contains_key(&(Packed::Manifest, *digest)))
            .collect();
        let (small, large): (Vec<_>, Vec<_>) = tree
            .blobs
            .iter()
            .filter(|(digest, _)| !index.objects.contains_key(&(Packed::Blob, **digest)))
            .map(|(digest, size)| (*digest, *size))
            .partition(|(_, size)| *size < LOOSE_MIN);
        // Big blobs are looked up one by one: few, and each may be there.
        let looked_up: Vec<(Digest, u64, Option<u64>)> = stream::iter(large)
            .map(|(digest, size)| async move { Ok((digest, size, self.exists(&self.blob_key(&digest)).await?)) })
            .buffer_unordered(REQUESTS_AT_ONCE)
            .try_collect::<Vec<_>>()
            .await
            .map_err(ArtifactError::Store)?;
        let mut large = Vec::new();
        for (digest, size, found) in looked_up {
            match found {
                None => large.push((digest, size)),
                Some(found) if found == size => {}
                Some(found) => {
                    return Err(ArtifactError::Store(StoreError::Mismatch {
                        digest,
                        mismatch: Mismatch::Size { listed: size, found },
                    }));
                }
            }
        }
        Ok((listings, small, large))
    }

    async fn publish_tree(
        &self,
        id: &Digest,
        record: Vec<u8>,
        tree: LocalTree,
        repair: bool,
    ) -> Result<Transfer, ArtifactError> {
        let (listings, small, large) = self.lacking(&tree, repair).await?;

        // Listings in packs of their own, which a fetch takes whole; then
        // small blobs, in the order of their digests.
        let mut packs: Vec<Vec<(Packed, Digest, u64)>> = Vec::new();
        let mut fill = |kind: Packed, items: &mut dyn Iterator<Item = (Digest, u64)>| {
            let mut current: Vec<(Packed, Digest, u64)> = Vec::new();
            let mut bytes = 0;
            for (digest, size) in items {
                current.push((kind, digest, size));
                bytes += size;
                if bytes >= PACK_TARGET {
                    packs.push(std::mem::take(&mut current));
                    bytes = 0;
                }
            }
            if !current.is_empty() {
                packs.push(current);
            }
        };
        fill(Packed::Manifest, &mut listings.iter().map(|(digest, bytes)| (*digest, bytes.len() as u64)));
        fill(Packed::Blob, &mut small.iter().copied());
        let objects = (listings.len() + small.len() + large.len()) as u64;
        let bytes = listings.iter().map(|(_, bytes)| bytes.len() as u64).sum::<u64>()
            + small.iter().chain(&large).map(|(_, size)| size).sum::<u64>()
            + record.len() as u64;
        self.started(Direction::Upload, objects + 1, bytes);

        let listing_bytes: HashMap<Digest, &[u8]> =
            listings.iter().map(|(digest, bytes)| (*digest, bytes.as_slice())).collect();
        let cache = &*self.cache;
        let send_pack = |items: Vec<(Packed, Digest, u64)>| {
            // Read here, on the thread that drives the requests; the
            // requests in flight move on the runtime's threads meanwhile.
            let read = (|| {
                let mut pack = PackBuilder::default();
                for (kind, digest, _) in &items {
                    match kind {
                        Packed::Manifest => pack.push(*kind, *digest, listing_bytes[digest]),
                        Packed::Blob => pack.push(*kind, *digest, &read_blob(cache, digest)?),
                    }
                }
                Ok::<_, StoreError>(pack.finish())
            })();
            async move {
                let (bytes, index) = read?;
                let (objects, size) = (index.entries.len() as u64, bytes.len() as u64);
                self.put_new(&self.pack_key(&index.pack, "pack"), Bytes::from(bytes)).await?;
                let index_bytes = index.to_canonical_json();
                self.put_new(&self.pack_key(&index.pack, "index"), Bytes::from(index_bytes.clone())).await?;
                // This machine's next publish or fetch reads it from here.
                let copy = self.indexes.join(format!("{}.index", index.pack.hex()));
                let _ = keep_copy(&self.indexes, &copy, &index_bytes);
                self.moved(objects, size);
                Ok::<_, StoreError>(())
            }
        };
        stream::iter(packs).map(send_pack).buffer_unordered(REQUESTS_AT_ONCE).try_collect::<()>().await?;
        stream::iter(large)
            .map(|(digest, size)| async move {
                self.put_blob(&digest, size).await?;
                // A blob sent in parts has reported its bytes as it went.
                self.moved(1, if size <= SINGLE_PUT_MAX { size } else { 0 });
                Ok::<_, StoreError>(())
            })
            .buffer_unordered(REQUESTS_AT_ONCE / 2)
            .try_collect::<()>()
            .await?;
        // Last: now everything the record names is in the bucket.
        crate::fail_point::check("publish-before-record");
        let record_len = record.len() as u64;
        self.put_new(&self.artifact_key(id), Bytes::from(record)).await?;
        self.moved(1, record_len);
        Ok(Transfer { objects: objects + 1, bytes, ..Transfer::default() })
    }

    /// Sends big blob `digest` from the cache, alone.
    async fn put_blob(&self, digest: &Digest, size: u64) -> Result<(), StoreError> {
        let key = self.blob_key(digest);
        if size <= SINGLE_PUT_MAX {
            let bytes = read_blob(&self.cache, digest)?;
            self.put_new(&key, Bytes::from(bytes)).await?;
            return Ok(());
        }
        let path = self.cache.blob_path(digest);
        let io_error = |source| StoreError::Io { action: "could not read", path: path.clone(), source };
        let mut file = std::fs::File::open(&path).map_err(io_error)?;
        self.count();
        let upload = self.bucket.put_multipart(&key).await.map_err(|e| self.error(&key, "could not write", e))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, 16 << 20);
        let mut buf = vec![0; 1 << 20];
        loop {
            let read = file.read(&mut buf).map_err(io_error)?;
            if read == 0 {
                break;
            }
            writer.wait_for_capacity(REQUESTS_AT_ONCE / 2).await.map_err(|e| self.error(&key, "could not write", e))?;
            writer.write(&buf[..read]);
            self.moved(0, read as u64);
        }
        let parts = size.div_ceil(16 << 20);
        self.requests.fetch_add(parts + 1, Ordering::Relaxed);
        writer.finish().await.map_err(|e| self.error(&key, "could not write", e))?;
        Ok(())
    }

    /// The record of artifact `id`: the cache's, or the bucket's, checked.
    fn record(&self, id: &Digest) -> Result<Vec<u8>, StoreError> {
        match self.cache.get_object(ObjectKind::Artifact, id) {
            Err(StoreError::NotFound { .. }) => {}
            other => return other,
        }
        let key = self.artifact_key(id);
        let bytes = self.runtime.block_on(async {
            if let Some(bytes) = self.get(&key).await? {
                return Ok(bytes);
            }
            self.probe().await?;
            Err(StoreError::NotInBucket { what: format!("artifact {id}"), url: self.url.clone() })
        })?;
        if Digest::of(&bytes) != *id {
            return Err(StoreError::Mismatch { digest: *id, mismatch: Mismatch::Digest });
        }
        Ok(bytes.to_vec())
    }

    async fn fetch_tree(&self, id: &Digest, root: Digest, whole: bool) -> Result<Transfer, ArtifactError> {
        let tree_error = |source: ManifestError| ArtifactError::Tree { id: *id, source: Box::new(source) };
        let mut index: Option<BucketIndex> = None;
        let mut wanted: BTreeMap<Digest, Wanted> = BTreeMap::new();
        let mut pending: Vec<(Digest, String)> = vec![(root, String::new())];
        let mut fetched_listings = std::collections::HashSet::new();
        let (mut objects, mut bytes) = (0u64, 0u64);
        while !pending.is_empty() {
            let mut next = Vec::new();
            let mut absent = Vec::new();
            for (digest, path) in pending {
                let listing = match self.cache.get_object(ObjectKind::Manifest, &digest) {
                    Ok(bytes) if Digest::of(&bytes) == digest => {
                        Listing::parse(&bytes, &digest).map_err(|problem| {
                            tree_error(ManifestError::Invalid { listing: digest, path: shown_dir(&path), problem })
                        })?
                    }
                    Ok(_) | Err(StoreError::NotFound { .. }) if !fetched_listings.contains(&digest) => {
                        absent.push((digest, path));
                        continue;
                    }
                    Ok(_) => {
                        return Err(tree_error(ManifestError::Store(StoreError::Mismatch {
                            digest,
                            mismatch: Mismatch::Digest,
                        })));
                    }
                    Err(StoreError::NotFound { .. }) => {
                        return Err(tree_error(ManifestError::Missing { listing: digest, path: shown_dir(&path) }));
                    }
                    Err(error) => return Err(error.into()),
                };
                for entry in listing.entries {
                    let child = if path.is_empty() { entry.name } else { format!("{path}/{}", entry.name) };
                    match entry.kind {
                        EntryKind::Dir { tree } => next.push((tree, child)),
                        EntryKind::File { executable, size, digest } if whole => {
                            if !wanted.contains_key(&digest) && !self.cache.has_blob(&digest, size)? {
                                wanted.insert(digest, Wanted { size, executable, path: child });
                            }
                        }
                        EntryKind::File { .. } | EntryKind::Symlink { .. } => {}
                    }
                }
            }
            if !absent.is_empty() {
                if index.is_none() {
                    index = Some(self.bucket_index().await?);
                }
                let index = index.as_ref().expect("loaded just above");
                let (moved, size) = self.download_listings(id, index, &absent).await?;
                objects += moved;
                bytes += size;
                fetched_listings.extend(absent.iter().map(|(digest, _)| *digest));
                next.extend(absent);
            }
            pending = next;
        }
        if !wanted.is_empty() {
            if index.is_none() {
                index = Some(self.bucket_index().await?);
            }
            let (moved, size) = self.fetch_blobs(id, index.as_ref().expect("loaded just above"), wanted).await?;
            objects += moved;
            bytes += size;
        }
        Ok(Transfer { objects, bytes, ..Transfer::default() })
    }

    /// Brings listings `absent` into the cache: each pack that holds one is
    /// fetched whole, and all its listings are kept, since the rest of the
    /// tree is most likely among them.
    async fn download_listings(
        &self,
        id: &Digest,
        index: &BucketIndex,
        absent: &[(Digest, String)],
    ) -> Result<(u64, u64), ArtifactError> {
        let mut packs = Vec::new();
        for (digest, path) in absent {
            let Some(location) = index.objects.get(&(Packed::Manifest, *digest)) else {
                return Err(ArtifactError::Tree {
                    id: *id,
                    source: Box::new(ManifestError::Store(StoreError::NotInBucket {
                        what: format!("the listing of {} ({digest})", shown_dir(path)),
                        url: self.url.clone(),
                    })),
                });
            };
            if !packs.contains(&location.pack) {
                packs.push(location.pack);
            }
        }
        let tree_error =
            |source: StoreError| ArtifactError::Tree { id: *id, source: Box::new(ManifestError::Store(source)) };
        let wanted: std::collections::HashSet<Digest> = absent.iter().map(|(digest, _)| *digest).collect();
        let cache = &*self.cache;
        let fetched: Vec<(u64, u64)> = stream::iter(packs)
            .map(|pack| {
                let wanted = &wanted;
                async move {
                    let entries: Vec<_> =
                        index.packs[&pack].entries.iter().filter(|e| e.kind == Packed::Manifest).copied().collect();
                    let mut moved = (0, 0);
                    for (start, end) in spans(entries.iter().map(|e| (e.offset, e.size))) {
                        let bytes = self.get_range(&pack, start, end).await?;
                        for entry in entries.iter().filter(|e| e.offset >= start && e.offset + e.size <= end) {
                            let at = usize::try_from(entry.offset - start).expect("a span fits in memory");
                            let object = &bytes[at..at + usize::try_from(entry.size).expect("a span fits in memory")];
                            if Digest::of(object) == entry.digest {
                                cache.put_object(ObjectKind::Manifest, &entry.digest, object)?;
                                moved.0 += 1;
                                moved.1 += entry.size;
                            } else if wanted.contains(&entry.digest) {
                                // Others are not stored, and reported if
                                // the tree turns out to need them.
                                return Err(StoreError::Mismatch { digest: entry.digest, mismatch: Mismatch::Digest });
                            }
                        }
                    }
                    self.moved(moved.0, moved.1);
                    Ok::<_, StoreError>(moved)
                }
            })
            .buffer_unordered(REQUESTS_AT_ONCE)
            .try_collect()
            .await
            .map_err(tree_error)?;
        Ok(fetched.into_iter().fold((0, 0), |total, (objects, bytes)| (total.0 + objects, total.1 + bytes)))
    }

    /// Brings blobs `wanted` into the cache, each checked against its
    /// listing's size and digest.
    async fn fetch_blobs(
        &self,
        id: &Digest,
        index: &BucketIndex,
        wanted: BTreeMap<Digest, Wanted>,
    ) -> Result<(u64, u64), ArtifactError> {
        let objects = wanted.len() as u64;
        let bytes = wanted.values().map(|w| w.size).sum();
        self.started(Direction::Download, objects, bytes);
        let mut by_pack: BTreeMap<Digest, Vec<(Location, Digest)>> = BTreeMap::new();
        let mut loose = Vec::new();
        for digest in wanted.keys() {
            match index.objects.get(&(Packed::Blob, *digest)) {
                Some(location) => by_pack.entry(location.pack).or_default().push((*location, *digest)),
                None => loose.push(*digest),
            }
        }
        let blob_error =
            |digest: &Digest, source| ArtifactError::Blob { id: *id, path: wanted[digest].path.clone(), source };
        let wanted_ref = &wanted;
        let from_packs = stream::iter(by_pack).flat_map(|(pack, mut items)| {
            items.sort_by_key(|(location, _)| location.offset);
            let spans = spans(items.iter().map(|(location, _)| (location.offset, location.size)));
            stream::iter(spans.into_iter().map(move |(start, end)| {
                let members: Vec<(Location, Digest)> = items
                    .iter()
                    .filter(|(location, _)| location.offset >= start && location.offset + location.size <= end)
                    .copied()
                    .collect();
                async move {
                    let span = self.get_range(&pack, start, end).await.map_err(|e| blob_error(&members[0].1, e))?;
                    let cache = Arc::clone(&self.cache);
                    let wants: Vec<(Location, Digest, Wanted)> =
                        members.into_iter().map(|(l, d)| (l, d, wanted_ref[&d].clone())).collect();
                    let stored = tokio::task::spawn_blocking(move || store_packed(&cache, &span, start, &wants))
                        .await
                        .expect("storing blobs does not panic");
                    let (count, size) = stored.map_err(|(digest, e)| blob_error(&digest, e))?;
                    self.moved(count, size);
                    Ok::<_, ArtifactError>(())
                }
            }))
        });
        let from_loose = stream::iter(loose).map(|digest| async move {
            let want = &wanted_ref[&digest];
            // Its bytes were reported as they came.
            self.get_loose(&digest, want).await.map_err(|e| blob_error(&digest, e))?;
            self.moved(1, 0);
            Ok::<_, ArtifactError>(())
        });
        from_packs
            .map(futures_util::future::Either::Left)
            .chain(from_loose.map(futures_util::future::Either::Right))
            .buffer_unordered(REQUESTS_AT_ONCE)
            .try_collect::<()>()
            .await?;
        self.observer.on_transfer(&TransferEvent::Finished);
        Ok((objects, bytes))
    }

    /// Bytes `start..end` of pack `pack`.
    async fn get_range(&self, pack: &Digest, start: u64, end: u64) -> Result<Bytes, StoreError> {
        let key = self.pack_key(pack, "pack");
        self.count();
        match self.bucket.get_range(&key, start..end).await {
            Ok(bytes) if bytes.len() as u64 == end - start => Ok(bytes),
            Ok(bytes) => {
                Err(StoreError::Truncated { url: self.shown(&key), wanted: end, found: start + bytes.len() as u64 })
            }
            Err(object_store::Error::NotFound { .. }) => {
                Err(StoreError::NotInBucket { what: format!("pack {pack}"), url: self.shown(&key) })
            }
            Err(source) => Err(self.error(&key, "could not read", source)),
        }
    }

    /// Brings big blob `digest` into the cache, streamed through a
    /// temporary file and checked before it is stored.
    async fn get_loose(&self, digest: &Digest, want: &Wanted) -> Result<(), StoreError> {
        let key = self.blob_key(digest);
        self.count();
        let result = match self.bucket.get(&key).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotInBucket { what: format!("blob {digest}"), url: self.shown(&key) });
            }
            Err(source) => return Err(self.error(&key, "could not read", source)),
        };
        let root = self.cache.root().to_owned();
        let io_error = |source| StoreError::Io { action: "could not write a download in", path: root.clone(), source };
        let mut temp =
            tempfile::Builder::new().prefix(super::local::TEMP_PREFIX).tempfile_in(&root).map_err(io_error)?;
        let mut hasher = crate::digest::Hasher::default();
        let mut found = 0u64;
        let mut chunks = result.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|source| self.error(&key, "could not read", source))?;
            found += chunk.len() as u64;
            if found > want.size {
                return Err(StoreError::Mismatch {
                    digest: *digest,
                    mismatch: Mismatch::Size { listed: want.size, found },
                });
            }
            hasher.update(&chunk);
            temp.write_all(&chunk).map_err(io_error)?;
            self.moved(0, chunk.len() as u64);
        }
        if found != want.size {
            return Err(StoreError::Mismatch {
                digest: *digest,
                mismatch: Mismatch::Size { listed: want.size, found },
            });
        }
        if hasher.finish() != *digest {
            return Err(StoreError::Mismatch { digest: *digest, mismatch: Mismatch::Digest });
        }
        let mode = if want.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(temp.path(), std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(io_error)?;
        let path = temp.into_temp_path();
        self.cache.put_blob(digest, &path, super::Handover::Move { links: 1 })?;
        Ok(())
    }
}

/// Checks and stores the blobs `wants` of a span of a pack that starts at
/// `start`; returns how many and how many bytes, or the first blob that is
/// not what its listing says.
fn store_packed(
    cache: &LocalStore,
    span: &[u8],
    start: u64,
    wants: &[(Location, Digest, Wanted)],
) -> Result<(u64, u64), (Digest, StoreError)> {
    let mut moved = (0, 0);
    for (location, digest, want) in wants {
        if location.size != want.size {
            return Err((
                *digest,
                StoreError::Mismatch {
                    digest: *digest,
                    mismatch: Mismatch::Size { listed: want.size, found: location.size },
                },
            ));
        }
        let at = usize::try_from(location.offset - start).expect("a span fits in memory");
        let bytes = &span[at..at + usize::try_from(location.size).expect("a span fits in memory")];
        if Digest::of(bytes) != *digest {
            return Err((*digest, StoreError::Mismatch { digest: *digest, mismatch: Mismatch::Digest }));
        }
        cache.put_blob_bytes(digest, bytes, want.executable).map_err(|e| (*digest, e))?;
        moved.0 += 1;
        moved.1 += location.size;
    }
    Ok(moved)
}

/// Ranges `(offset, size)`, sorted by offset, merged into spans
/// `(start, end)` wherever the gap between two is under [`SPAN_GAP`]: one
/// request each.
fn spans(ranges: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for (offset, size) in ranges {
        match spans.last_mut() {
            Some((_, end)) if offset.saturating_sub(*end) < SPAN_GAP && offset >= *end => *end = offset + size,
            _ => spans.push((offset, offset + size)),
        }
    }
    spans
}

/// Blob `digest` from the cache, whole.
fn read_blob(cache: &LocalStore, digest: &Digest) -> Result<Vec<u8>, StoreError> {
    let path = cache.blob_path(digest);
    std::fs::read(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound { kind: "blob", digest: *digest },
        _ => StoreError::Io { action: "could not read", path, source },
    })
}

/// Keeps a copy of a pack index, private, written whole or not at all.
fn keep_copy(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The local store's tree of artifact `id`, with listings' bytes, every
/// listing loaded (and so validated) on the way.
fn local_tree(cache: &LocalStore, id: &Digest, root: &Digest) -> Result<LocalTree, ArtifactError> {
    let mut tree = LocalTree { listings: Vec::new(), blobs: BTreeMap::new() };
    let mut pending = vec![(*root, String::new())];
    let mut seen = std::collections::HashSet::new();
    while let Some((digest, path)) = pending.pop() {
        if !seen.insert(digest) {
            continue;
        }
        let (listing, bytes) = Listing::load_with_bytes(cache, &digest, &path)
            .map_err(|source| ArtifactError::Tree { id: *id, source: Box::new(source) })?;
        for entry in &listing.entries {
            match &entry.kind {
                EntryKind::Dir { tree: child } => {
                    pending.push((
                        *child,
                        if path.is_empty() { entry.name.clone() } else { format!("{path}/{}", entry.name) },
                    ));
                }
                EntryKind::File { size, digest, .. } => {
                    tree.blobs.insert(*digest, *size);
                }
                EntryKind::Symlink { .. } => {}
            }
        }
        tree.listings.push((digest, bytes));
    }
    Ok(tree)
}

fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

fn is_prefix_part(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why a request to a shared store failed, with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteProblem {
    /// The server cannot be reached.
    Unreachable {
        /// Where it should be.
        endpoint: String,
    },
    /// The credentials were refused.
    Denied,
    /// The bucket does not exist.
    NoBucket {
        /// `s3://bucket/prefix`.
        url: String,
    },
    /// The store could not be set up from the URL and the `AWS_*` variables.
    Setup,
    /// The endpoint is plain HTTP, which is not allowed by default.
    PlainHttp,
    /// Something else.
    Other,
}

impl RemoteProblem {
    fn of(error: &object_store::Error, endpoint: &str, url: &str) -> Self {
        let text = crate::error_chain(error);
        match error {
            object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. } => Self::Denied,
            _ if text.contains("URL scheme is not allowed") => Self::PlainHttp,
            _ if text.contains("NoSuchBucket") => Self::NoBucket { url: url.to_owned() },
            _ if ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"]
                .iter()
                .any(|code| text.contains(code)) =>
            {
                Self::Denied
            }
            _ if [
                "error sending request",
                "onnection refused",
                "timed out",
                "dns error",
                "error trying to connect",
            ]
            .iter()
            .any(|sign| text.contains(sign)) =>
            {
                Self::Unreachable { endpoint: endpoint.to_owned() }
            }
            _ => Self::Other,
        }
    }
}

impl std::fmt::Display for RemoteProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable { endpoint } => write!(
                f,
                "the S3 server ({endpoint}) cannot be reached: check AWS_ENDPOINT_URL, and that the server is up"
            ),
            Self::Denied => f.write_str(
                "the S3 server refused the credentials: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN",
            ),
            Self::NoBucket { url } => {
                write!(f, "the bucket of {url} does not exist: create it, or fix GRAVEN_STORE")
            }
            Self::Setup => f.write_str("check GRAVEN_STORE and the AWS_* variables"),
            Self::PlainHttp => f.write_str(
                "AWS_ENDPOINT_URL is plain HTTP: use https, or set AWS_ALLOW_HTTP=true for a server on a network you trust",
            ),
            Self::Other => f.write_str("the S3 server answered with an error"),
        }
    }
}

impl Store for S3Store {
    fn local(&self) -> &LocalStore {
        &self.cache
    }

    fn lease(&self) -> Result<Lease, StoreError> {
        self.cache.lease()
    }

    fn collect_lease(&self, on_wait: &mut dyn FnMut()) -> Result<Lease, StoreError> {
        self.cache.collect_lease(on_wait)
    }

    fn has_blob(&self, digest: &Digest, size: u64) -> Result<bool, StoreError> {
        self.cache.has_blob(digest, size)
    }

    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.cache.blob_size(digest)
    }

    fn blob_sizes(&self, digests: &[Digest]) -> Result<Vec<Option<u64>>, StoreError> {
        self.cache.blob_sizes(digests)
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, StoreError> {
        self.cache.open_blob(digest)
    }

    fn blob_location(&self, digest: &Digest) -> String {
        self.cache.blob_location(digest)
    }

    fn put_object(&self, kind: ObjectKind, digest: &Digest, bytes: &[u8]) -> Result<bool, StoreError> {
        self.cache.put_object(kind, digest, bytes)
    }

    /// An artifact record the cache lacks is read from the bucket (and
    /// checked), so that commands that only read records, such as
    /// `release`, work on a machine that did not build.
    fn get_object(&self, kind: ObjectKind, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        match kind {
            ObjectKind::Artifact => self.record(digest).map_err(|error| match error {
                StoreError::NotInBucket { .. } => StoreError::NotFound { kind: kind.name(), digest: *digest },
                other => other,
            }),
            ObjectKind::Manifest => self.cache.get_object(kind, digest),
        }
    }

    fn has_object(&self, kind: ObjectKind, digest: &Digest) -> Result<bool, StoreError> {
        if self.cache.has_object(kind, digest)? {
            return Ok(true);
        }
        match kind {
            ObjectKind::Artifact => self.runtime.block_on(async {
                if self.exists(&self.artifact_key(digest)).await?.is_some() {
                    return Ok(true);
                }
                self.probe().await.map(|()| false)
            }),
            ObjectKind::Manifest => Ok(false),
        }
    }

    fn has_artifacts(&self, ids: &[Digest]) -> Result<Vec<bool>, StoreError> {
        let mut present = self.cache.has_artifacts(ids)?;
        if present.iter().all(|&here| here) {
            return Ok(present);
        }
        // The bucket's records, in one listing (a page per 1,000).
        let prefix = self.key("artifacts");
        let in_bucket: std::collections::HashSet<String> = self.runtime.block_on(async {
            self.count();
            self.bucket
                .list(Some(&prefix))
                .map_ok(|meta| meta.location.filename().unwrap_or_default().to_owned())
                .try_collect()
                .await
                .map_err(|source| self.error(&prefix, "could not list", source))
        })?;
        for (here, id) in present.iter_mut().zip(ids) {
            *here = *here || in_bucket.contains(&id.hex());
        }
        Ok(present)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.cache.sync()
    }

    fn publish(&self, id: &Digest, repair: bool) -> Result<Transfer, ArtifactError> {
        let (before, started) = (self.requests(), std::time::Instant::now());
        let result = self.runtime.block_on(async {
            if !repair && self.exists(&self.artifact_key(id)).await?.is_some() {
                return Ok(Transfer::default());
            }
            let record = match self.cache.get_object(ObjectKind::Artifact, id) {
                Ok(record) => record,
                Err(StoreError::NotFound { .. }) => return Err(ArtifactError::Missing { id: *id }),
                Err(error) => return Err(error.into()),
            };
            let artifact =
                Artifact::parse(&record, id).map_err(|problem| ArtifactError::Invalid { id: *id, problem })?;
            let tree = local_tree(&self.cache, id, &artifact.root)?;
            self.publish_tree(id, record, tree, repair).await
        });
        self.observer.on_transfer(&TransferEvent::Finished);
        result.map(|transfer| Transfer { requests: self.requests() - before, duration_ms: millis(started), ..transfer })
    }

    fn fetch(&self, id: &Digest) -> Result<Transfer, ArtifactError> {
        self.fetch_part(id, true)
    }

    fn fetch_listings(&self, id: &Digest) -> Result<Transfer, ArtifactError> {
        self.fetch_part(id, false)
    }

    fn list(&self, area: Area, visit: &mut dyn FnMut(StoredItem) -> Result<(), StoreError>) -> Result<(), StoreError> {
        self.cache.list(area, visit)
    }

    fn remove(&self, area: Area, digest: &Digest) -> Result<(), StoreError> {
        self.cache.remove(area, digest)
    }

    fn remove_abandoned(&self, age: Duration) -> Result<u64, StoreError> {
        self.cache.remove_abandoned(age)
    }
}

impl S3Store {
    fn fetch_part(&self, id: &Digest, whole: bool) -> Result<Transfer, ArtifactError> {
        let (before, started) = (self.requests(), std::time::Instant::now());
        let record = self.record(id).map_err(|error| match error {
            StoreError::NotInBucket { .. } => ArtifactError::Missing { id: *id },
            other => ArtifactError::Store(other),
        })?;
        let artifact = Artifact::parse(&record, id).map_err(|problem| ArtifactError::Invalid { id: *id, problem })?;
        let transfer = self.runtime.block_on(self.fetch_tree(id, artifact.root, whole))?;
        if whole {
            // Last, as in the bucket: a record in the cache names a tree
            // that is there.
            self.cache.put_object(ObjectKind::Artifact, id, &record)?;
        }
        Ok(Transfer { requests: self.requests() - before, duration_ms: millis(started), ..transfer })
    }
}

fn millis(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

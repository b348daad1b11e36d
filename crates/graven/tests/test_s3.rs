//! The S3 store against a real S3 API server (moto's, on loopback): the
//! store conformance suite, the shared-store suite (two homes on one
//! backend stand for two machines, run against `file:` too), and what only
//! a bucket can suffer: objects corrupted, truncated, deleted or planted
//! by someone else.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use graven::Digest;
use graven::build::{BuildOutcome, BuildRequest, Quiet};
use graven::git::Repo;
use graven::home::Home;
use graven::ledger::SqliteLedger;
use graven::model::{Artifact, EntryKind};
use graven::store::{ArtifactError, LocalStore, S3Store, Silent, Store, StoreError, Transfer, open_store};
use graven_testutils::TestRepo;
use graven_testutils::s3::{Bucket, fresh_bucket};
use tempfile::TempDir;

use crate::store_conformance::{StoreFixture, conformance};
use crate::support::{app_with_command, files_under};

/// The shared test server, or `None` (skip) outside the test command.
fn server() -> Option<String> {
    graven_testutils::s3::server()
}

fn open_s3(endpoint: &str, url: &str, home: &Home) -> S3Store {
    let cache = LocalStore::open(&home.store_dir()).expect("open the cache");
    let indexes = home.pack_index_dir();
    S3Store::open(url, cache, indexes, Arc::new(Silent), &graven_testutils::s3::env(endpoint)).expect("open the store")
}

struct S3Fixture {
    _dir: TempDir,
    scratch: PathBuf,
    store: S3Store,
}

impl StoreFixture for S3Fixture {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    fn scratch(&self) -> &Path {
        &self.scratch
    }

    fn plant_blob(&self, digest: &Digest, bytes: &[u8]) {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.store.local().blob_path(digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    }

    fn local_files(&self) -> Vec<PathBuf> {
        files_under(self.store.local().root())
            .into_iter()
            .filter(|path| !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".tmp-")))
            .collect()
    }
}

#[test]
fn the_s3_store_passes_the_conformance_suite() {
    let Some(endpoint) = server() else { return };
    let bucket = fresh_bucket(&endpoint);
    conformance(&|| {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("home/tmp");
        std::fs::create_dir_all(&scratch).unwrap();
        let home = Home::new(dir.path().join("home"));
        let store = open_s3(&endpoint, &format!("s3://{bucket}/conformance"), &home);
        Box::new(S3Fixture { _dir: dir, scratch, store })
    });
}

/// A home (standing for a machine) on a shared store.
struct TeamHome {
    _dir: TempDir,
    home: Home,
    store: Box<dyn Store>,
    ledger: SqliteLedger,
}

impl TeamHome {
    fn new(open: &dyn Fn(&Home) -> Box<dyn Store>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        home.create().unwrap();
        let store = open(&home);
        let ledger = SqliteLedger::open(&home.ledger_path()).unwrap();
        Self { _dir: dir, home, store, ledger }
    }

    fn build(&self, repo: &Path, force: bool) -> BuildOutcome {
        let git = Repo::discover(repo).unwrap();
        let request = BuildRequest {
            repo: &git,
            home: &self.home,
            rev: "HEAD",
            app: None,
            allow_dirty: false,
            force,
            check_reproducible: false,
            sandbox: true,
            cache: true,
            author: "tester@example.com",
            host: "test-host",
        };
        graven::build::build(&request, &*self.store, &self.ledger, &Quiet)
            .unwrap_or_else(|e| panic!("build: {}", graven::error_chain(&e)))
    }

    fn export(&self, id: &Digest) -> Result<Vec<u8>, graven::export::ExportError> {
        let mut out = Vec::new();
        graven::export::export(&*self.store, id, graven::export::Format::Tar, &mut out)?;
        Ok(out)
    }

    /// Every file of artifact `id` in the local store, by path: its blob's
    /// bytes, read from the local store alone.
    fn local_files_of(&self, id: &Digest) -> Vec<(String, Vec<u8>)> {
        let local = self.store.local();
        let artifact = Artifact::load(local, id).expect("the record is local");
        let mut files = Vec::new();
        graven::store::walk(local, id, &artifact.root, &mut |path, kind| {
            if let EntryKind::File { digest, .. } = kind {
                files.push((path.to_owned(), std::fs::read(local.blob_path(digest)).expect("the blob is local")));
            }
            Ok::<_, ArtifactError>(())
        })
        .expect("the tree is local");
        files
    }
}

/// The build command of an app that writes `small` small files (in 10
/// directories), an empty one, one big file, an executable and a symlink.
fn command(small: u32) -> String {
    format!(
        "mkdir -p out/big && for d in $(seq 0 9); do mkdir -p out/d$d; done && \
         for i in $(seq 1 {small}); do echo \"file $i\" > out/d$((i % 10))/f$i.txt; done && \
         head -c 3000000 /dev/zero > out/big/blob && : > out/empty && chmod +x out/d1/f1.txt && ln -s d1/f1.txt out/link"
    )
}

fn app(small: u32) -> TestRepo {
    app_with_command(&command(small), "")
}

/// Runs the shared-store cases with homes from `open`.
fn shared_store_cases(open: &dyn Fn(&Home) -> Box<dyn Store>) {
    let repo = app(300);
    let ci = TeamHome::new(open);
    let id = ci.build(repo.path(), false).record.build.artifact;
    let expected = ci.export(&id).unwrap();

    // Another machine, with an empty local store, gets the same artifact.
    let server = TeamHome::new(open);
    let fetched = server.store.fetch(&id).unwrap_or_else(|e| panic!("fetch: {}", graven::error_chain(&e)));
    assert_eq!(server.local_files_of(&id), ci.local_files_of(&id), "the local copy is not the artifact");
    assert_eq!(server.export(&id).unwrap(), expected, "the export differs between machines");
    let again = server.store.fetch(&id).unwrap();
    assert_eq!(again.objects, 0, "a second fetch moved objects: {again:?} (first: {fetched:?})");
    let republished = ci.store.publish(&id, false).unwrap();
    assert_eq!(republished.objects, 0, "a second publish sent objects: {republished:?}");

    // Two machines publishing one artifact at once both succeed.
    let (a, b) = (TeamHome::new(open), TeamHome::new(open));
    let other = app(40);
    other.write("extra.txt", "another build");
    other.commit("Another build");
    let other = other.path();
    std::thread::scope(|scope| {
        let first = scope.spawn(|| a.build(other, false).record.build.artifact);
        let second = scope.spawn(|| b.build(other, false).record.build.artifact);
        let (first, second) = (first.join().unwrap(), second.join().unwrap());
        assert_eq!(first, second);
        let third = TeamHome::new(open);
        assert_eq!(third.export(&first).unwrap(), a.export(&first).unwrap());
    });
}

#[test]
fn two_homes_on_one_file_store_share_artifacts() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file:{}", shared.path().display());
    shared_store_cases(&|home| open_store(Some(&url), home, Arc::new(Silent)).unwrap());
}

#[test]
fn two_homes_on_one_bucket_share_artifacts_and_fetch_only_what_they_lack() {
    let Some(endpoint) = server() else { return };
    let url = format!("s3://{}/team", fresh_bucket(&endpoint));
    shared_store_cases(&|home| Box::new(open_s3(&endpoint, &url, home)));
}

/// A bucket with one published artifact, and a fresh home to fetch it.
struct Published {
    bucket: Bucket,
    ci: TeamHome,
    server: TeamHome,
    id: Digest,
    /// The prefix of every key.
    prefix: String,
    upload: Transfer,
}

fn published(small: u32) -> Option<Published> {
    let endpoint = server()?;
    let name = fresh_bucket(&endpoint);
    let url = format!("s3://{name}/app");
    let open = |home: &Home| -> Box<dyn Store> { Box::new(open_s3(&endpoint, &url, home)) };
    let ci = TeamHome::new(&open);
    let outcome = ci.build(app(small).path(), false);
    let server = TeamHome::new(&open);
    Some(Published {
        bucket: Bucket::new(&endpoint, &name),
        ci,
        server,
        id: outcome.record.build.artifact,
        prefix: "app".to_owned(),
        upload: outcome.upload,
    })
}

impl Published {
    fn keys(&self, area: &str) -> Vec<String> {
        self.bucket.keys(&format!("{}/{area}", self.prefix))
    }

    /// The key of a pack of blobs (not of listings).
    fn blob_pack(&self) -> String {
        let index = self
            .keys("packs")
            .into_iter()
            .filter(|key| Path::new(key).extension().is_some_and(|ext| ext == "index"))
            .find(|key| String::from_utf8(self.bucket.get(key)).unwrap().contains(r#""kind":"blob""#))
            .expect("a pack of blobs");
        index.replace(".index", ".pack")
    }

    fn fetch_error(&self) -> String {
        match self.server.store.fetch(&self.id) {
            Ok(transfer) => panic!("the fetch succeeded: {transfer:?}"),
            Err(error) => graven::error_chain(&error),
        }
    }

    /// Nothing of the artifact was laid out: the server's local store has
    /// no record of it, so nothing runs from it.
    fn assert_nothing_usable(&self) {
        assert!(
            !self.server.store.local().object_path(graven::store::ObjectKind::Artifact, &self.id).exists(),
            "the local store holds the artifact's record after a failed fetch"
        );
        assert!(self.server.export(&self.id).is_err(), "an export succeeded from a damaged bucket");
    }
}

#[test]
fn thousands_of_small_files_travel_in_a_few_packs_and_only_the_change_is_sent_again() {
    let Some(p) = published(2000) else { return };
    // 2,000 small files, 11 directories and one big file: far under
    // files/100 + a small constant.
    assert!(p.upload.requests <= 2000 / 100 + 10, "{:?}", p.upload);
    assert_eq!(p.keys("blobs").len(), 1, "only the big file travels alone");
    assert_eq!(p.keys("artifacts"), vec![format!("app/artifacts/{}", p.id.hex())]);

    // Five files change: the bucket receives them and the listings above
    // them, nothing else.
    let changed = app_with_command(
        &format!("{} && for i in 1 2 3 4 5; do echo changed $i > out/d$i/f$((i + 10)).txt; done", command(2000)),
        "",
    );
    let changed = p.ci.build(changed.path(), false).upload;
    // 5 blobs of a few bytes, 6 listings (the root and 5 directories) of
    // about 200 files each, and the record.
    let listing_bytes = 6 * 200 * 150;
    assert!(changed.objects <= 5 + 6 + 1, "{changed:?}");
    assert!(changed.bytes <= 5 * 20 + listing_bytes + 1000, "{changed:?}");
    assert!(changed.requests <= 10, "{changed:?}");
}

#[test]
fn a_corrupted_packed_blob_is_an_error_naming_the_file_and_the_artifact() {
    let Some(p) = published(50) else { return };
    let data_pack = p.blob_pack();
    let mut bytes = p.bucket.get(&data_pack);
    bytes[3] ^= 0xff;
    p.bucket.put(&data_pack, &bytes);
    let error = p.fetch_error();
    assert!(error.contains(&format!("of artifact {}", p.id)), "{error}");
    assert!(error.contains("does not hash to its name: its contents are corrupt"), "{error}");
    assert!(error.contains("file 'd"), "the file is not named: {error}");
    p.assert_nothing_usable();
}

#[test]
fn a_truncated_pack_or_a_deleted_blob_is_an_error_and_build_force_sends_it_again() {
    let Some(p) = published(50) else { return };
    let data_pack = p.blob_pack();
    let bytes = p.bucket.get(&data_pack);
    p.bucket.put(&data_pack, &bytes[..bytes.len() / 2]);
    let error = p.fetch_error();
    assert!(error.contains("it is truncated") || error.contains("is not in"), "{error}");
    assert!(error.contains(&p.id.to_string()), "{error}");
    p.assert_nothing_usable();

    let big = p.keys("blobs").pop().unwrap();
    p.bucket.delete(&big);
    p.bucket.delete(&data_pack);
    let error = p.fetch_error();
    assert!(error.contains("is not in s3://"), "{error}");
    assert!(error.contains("it was deleted, or never sent"), "{error}");

    // The builder still has it all: a forced build sends what is gone.
    let repaired = p.ci.store.publish(&p.id, true).unwrap();
    assert!(repaired.objects >= 2, "{repaired:?}");
    p.server.store.fetch(&p.id).unwrap_or_else(|e| panic!("{}", graven::error_chain(&e)));
    assert_eq!(p.server.local_files_of(&p.id), p.ci.local_files_of(&p.id));
}

#[test]
fn planted_objects_are_refused_and_never_overwritten() {
    let Some(p) = published(20) else { return };
    // A record that does not hash to its name.
    let record = format!("app/artifacts/{}", p.id.hex());
    let genuine = p.bucket.get(&record);
    p.bucket.put(&record, b"{\"format\":1}");
    let error = p.fetch_error();
    assert!(error.contains("does not hash to its name"), "{error}");
    // A publish leaves it alone (create-only), and says nothing was sent.
    assert_eq!(p.ci.store.publish(&p.id, false).unwrap().objects, 0);
    p.ci.store.publish(&p.id, true).unwrap();
    assert_eq!(p.bucket.get(&record), b"{\"format\":1}", "a create-only write replaced an object");
    p.bucket.put(&record, &genuine);

    // An index that names another pack.
    let index =
        p.keys("packs").into_iter().find(|key| Path::new(key).extension().is_some_and(|ext| ext == "index")).unwrap();
    let text = String::from_utf8(p.bucket.get(&index)).unwrap();
    let other = Digest::of(b"another pack");
    let pack = index.trim_end_matches(".index").rsplit('/').next().unwrap().to_owned();
    p.bucket.put(&index, text.replace(&pack, &other.hex()).as_bytes());
    let error = p.fetch_error();
    assert!(error.contains("cannot be used"), "{error}");
    assert!(error.contains("not of the pack it is named after"), "{error}");
    p.assert_nothing_usable();
}

#[test]
fn a_missing_bucket_and_an_unreachable_server_are_clear_errors_within_seconds() {
    let Some(endpoint) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    home.create().unwrap();
    let missing = open_s3(&endpoint, "s3://no-such-bucket-here/x", &home);
    let id = Digest::of(b"anything");
    let error = graven::error_chain(&missing.fetch(&id).unwrap_err());
    assert!(error.contains("does not exist: create it, or fix GRAVEN_STORE"), "{error}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = open_s3(&format!("http://127.0.0.1:{closed}"), "s3://bucket/x", &home);
    let started = std::time::Instant::now();
    let error = nowhere.fetch(&id).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    let error = graven::error_chain(&error);
    assert!(error.contains("cannot be reached: check AWS_ENDPOINT_URL"), "{error}");
    assert!(matches!(nowhere.fetch(&id), Err(ArtifactError::Store(StoreError::Remote(_)))));
}

#[test]
fn gc_collects_the_local_copy_only_and_never_the_bucket() {
    use graven::release::gc::{GcOptions, collect_garbage};
    let Some(p) = published(20) else { return };
    let before = p.bucket.keys("app");
    let options = GcOptions { keep: 1, grace: std::time::Duration::ZERO, dry_run: false };
    // A kept artifact that this machine never fetched is no error.
    let report = collect_garbage(&p.ci.ledger, &*p.server.store, &options, &mut || {}).unwrap();
    assert_eq!(report.blobs, 0, "{report:?}");
    // What this machine fetched and no longer keeps goes; the bucket stays.
    p.server.store.fetch(&p.id).unwrap();
    let report = collect_garbage(&p.server.ledger, &*p.server.store, &options, &mut || {}).unwrap();
    assert!(report.artifacts == 1 && report.blobs > 0, "{report:?}");
    assert_eq!(p.bucket.keys("app"), before, "gc changed the bucket");
    p.server.store.fetch(&p.id).unwrap();
    assert_eq!(p.server.local_files_of(&p.id), p.ci.local_files_of(&p.id));
}

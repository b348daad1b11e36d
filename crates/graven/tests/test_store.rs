//! The local store: the conformance suite, plus what only a store on the
//! local filesystem promises (its layout, modes, temporary files).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Barrier;

use graven::Digest;
use graven::store::{Handover, LocalStore, ObjectKind, Store};
use tempfile::TempDir;

use crate::store_conformance::{StoreFixture, conformance};
use crate::support::files_under;

struct LocalFixture {
    _dir: TempDir,
    scratch: PathBuf,
    store: LocalStore,
}

impl LocalFixture {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("graven-store-").tempdir().expect("create a temporary directory");
        // Beside the store, as the home's tmp/ is: on the same filesystem.
        let scratch = dir.path().join("scratch");
        fs::create_dir(&scratch).expect("create scratch/");
        let store = LocalStore::open(&dir.path().join("store")).expect("open the store");
        Self { _dir: dir, scratch, store }
    }
}

impl StoreFixture for LocalFixture {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    fn scratch(&self) -> &Path {
        &self.scratch
    }

    fn plant_blob(&self, digest: &Digest, bytes: &[u8]) {
        let path = self.store.blob_path(digest);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
    }

    fn local_files(&self) -> Vec<PathBuf> {
        files_under(self.store.root()).into_iter().filter(|path| !is_temporary(path)).collect()
    }
}

fn is_temporary(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".tmp-"))
}

#[test]
fn the_local_store_passes_the_conformance_suite() {
    conformance(&|| Box::new(LocalFixture::new()));
}

#[test]
fn blobs_and_objects_live_where_format_md_says_with_their_modes() {
    let fixture = LocalFixture::new();
    let store = &fixture.store;
    let plain = fixture.scratch().join("plain");
    fs::write(&plain, "plain\n").unwrap();
    let exec = fixture.scratch().join("exec");
    fs::write(&exec, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&exec, fs::Permissions::from_mode(0o755)).unwrap();
    let (plain_digest, exec_digest) = (Digest::of(b"plain\n"), Digest::of(b"#!/bin/sh\n"));
    store.local().put_blob(&plain_digest, &plain, Handover::Move { links: 1 }).unwrap();
    store.local().put_blob(&exec_digest, &exec, Handover::Copy).unwrap();
    store.put_object(ObjectKind::Manifest, &Digest::of(b"m"), b"m").unwrap();
    store.put_object(ObjectKind::Artifact, &Digest::of(b"a"), b"a").unwrap();

    let relative = |digest: &Digest, dir: &str| {
        let hex = digest.hex();
        format!("{dir}/sha256/{}/{}", &hex[..2], &hex[2..])
    };
    let mut expected = vec![
        (relative(&plain_digest, "blobs"), 0o444),
        (relative(&exec_digest, "blobs"), 0o555),
        (relative(&Digest::of(b"m"), "manifests"), 0o444),
        (relative(&Digest::of(b"a"), "artifacts"), 0o444),
    ];
    expected.sort();
    let found: Vec<(String, u32)> = files_under(store.root())
        .into_iter()
        .map(|path| {
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            (path.strip_prefix(store.root()).unwrap().to_str().unwrap().to_owned(), mode)
        })
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn racing_writers_leave_no_temporary_files_behind() {
    let fixture = LocalFixture::new();
    let store = &fixture.store;
    let barrier = Barrier::new(8);
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let barrier = &barrier;
            let scratch = fixture.scratch();
            scope.spawn(move || {
                barrier.wait();
                for n in 0..50 {
                    let bytes = format!("file {n}\n");
                    let digest = Digest::of(bytes.as_bytes());
                    let path = scratch.join(format!("{thread}-{n}"));
                    fs::write(&path, &bytes).unwrap();
                    let handover = if n % 2 == 0 { Handover::Copy } else { Handover::Move { links: 1 } };
                    store.local().put_blob(&digest, &path, handover).unwrap();
                    let listing = format!("listing {n}");
                    store
                        .put_object(ObjectKind::Manifest, &Digest::of(listing.as_bytes()), listing.as_bytes())
                        .unwrap();
                }
            });
        }
    });
    let temporary: Vec<PathBuf> = files_under(store.root()).into_iter().filter(|p| is_temporary(p)).collect();
    assert!(temporary.is_empty(), "temporary files left behind: {temporary:?}");
    assert_eq!(files_under(store.root()).len(), 100);
}

#[test]
fn two_handles_on_one_store_in_one_process_do_not_collide() {
    // Two builds in one process (a server, a test harness) each open the
    // store: their temporary names must not collide.
    let fixture = LocalFixture::new();
    let other = LocalStore::open(fixture.store.root()).unwrap();
    let handles: [&LocalStore; 2] = [&fixture.store, &other];
    for round in 0..20 {
        let bytes = format!("object of round {round}");
        let digest = Digest::of(bytes.as_bytes());
        let source = fixture.scratch().join(format!("blob-{round}"));
        fs::write(&source, &bytes).unwrap();
        let barrier = Barrier::new(8);
        let results: Vec<(bool, bool)> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    let (barrier, store, bytes, source) = (&barrier, handles[i % 2], &bytes, &source);
                    scope.spawn(move || {
                        barrier.wait();
                        let object = store.put_object(ObjectKind::Manifest, &digest, bytes.as_bytes()).unwrap();
                        let blob = store.local().put_blob(&digest, source, Handover::Copy).unwrap();
                        (object, blob)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("a writer failed")).collect()
        });
        assert_eq!(results.iter().filter(|(object, _)| *object).count(), 1, "round {round}: objects");
        assert_eq!(results.iter().filter(|(_, blob)| *blob).count(), 1, "round {round}: blobs");
        assert_eq!(other.get_object(ObjectKind::Manifest, &digest).unwrap(), bytes.as_bytes());
    }
}

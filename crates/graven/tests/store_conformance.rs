//! The conformance suite of the [`Store`] trait (STYLE.md rule 4): the same
//! cases run against every backend. A backend joins by implementing
//! [`StoreFixture`] and calling [`conformance`] from one test, as
//! `test_store.rs` does for the local store; an S3 store will do the same.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Barrier;

use graven::store::{Handover, ObjectKind, Store, StoreError};
use graven::{Digest, NORMALISED_MTIME};

/// A fresh, empty store of one backend, and what the suite needs beside it.
pub(crate) trait StoreFixture {
    /// The store under test.
    fn store(&self) -> &dyn Store;
    /// A directory for the files the cases hand to the store, on the
    /// filesystem the store can take files from.
    fn scratch(&self) -> &Path;
    /// Stores `bytes` as blob `digest` behind the store's back, as a write
    /// cut short by a crash would leave it.
    fn plant_blob(&self, digest: &Digest, bytes: &[u8]);
    /// Every file the store keeps on the local filesystem (none for a
    /// remote store), temporary files excepted.
    fn local_files(&self) -> Vec<PathBuf>;
}

type Case = fn(&dyn StoreFixture);

/// Every case, by name.
const CASES: &[(&str, Case)] = &[
    ("blobs_round_trip", blobs_round_trip),
    ("collection_waits_for_every_build_lease", collection_waits_for_every_build_lease),
    ("blob_sizes_answer_in_order_and_list_visits_each_item", blob_sizes_answer_in_order_and_list_visits_each_item),
    ("move_takes_a_file_with_one_link", move_takes_a_file_with_one_link),
    ("move_takes_a_file_whose_links_all_belong_to_the_caller", move_takes_a_file_whose_links_all_belong_to_the_caller),
    ("copy_leaves_the_source_untouched", copy_leaves_the_source_untouched),
    ("a_file_linked_from_outside_is_copied_never_shared", a_file_linked_from_outside_is_copied_never_shared),
    (
        "a_blob_of_the_wrong_size_counts_as_missing_and_is_replaced",
        a_blob_of_the_wrong_size_counts_as_missing_and_is_replaced,
    ),
    ("objects_round_trip_by_kind", objects_round_trip_by_kind),
    ("absent_blobs_and_objects_are_not_found", absent_blobs_and_objects_are_not_found),
    ("stored_files_are_read_only_with_the_normalised_mtime", stored_files_are_read_only_with_the_normalised_mtime),
    ("concurrent_moves_of_one_blob_store_it_once", concurrent_moves_of_one_blob_store_it_once),
    ("concurrent_copies_of_one_blob_store_it_once", concurrent_copies_of_one_blob_store_it_once),
    ("concurrent_puts_of_one_object_store_it_once", concurrent_puts_of_one_object_store_it_once),
];

/// Runs every case, each on a fresh store from `new_fixture`; panics listing
/// the cases that failed.
pub(crate) fn conformance(new_fixture: &dyn Fn() -> Box<dyn StoreFixture>) {
    let mut failed = Vec::new();
    for (name, case) in CASES {
        let fixture = new_fixture();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(&*fixture))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failed.push(format!("{name}: {message}"));
        }
    }
    assert!(failed.is_empty(), "store conformance cases failed:\n{}", failed.join("\n"));
}

/// Writes a file into the fixture's scratch directory.
fn source(fixture: &dyn StoreFixture, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    let path = fixture.scratch().join(name);
    fs::write(&path, bytes).expect("write a source file");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod a source file");
    path
}

fn read_blob(store: &dyn Store, digest: &Digest) -> Vec<u8> {
    let mut bytes = Vec::new();
    store.open_blob(digest).expect("open the blob").read_to_end(&mut bytes).expect("read the blob");
    bytes
}

fn inode(path: &Path) -> (u64, u64) {
    let meta = fs::symlink_metadata(path).expect("stat");
    (meta.dev(), meta.ino())
}

/// Runs `f` on `threads` threads released together; returns their results.
fn race<T: Send>(threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                scope.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a racing thread panicked")).collect()
    })
}

const MOVE: Handover = Handover::Move { links: 1 };

fn blobs_round_trip(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    let bytes = b"print('hello')\n";
    let digest = Digest::of(bytes);
    let size = bytes.len() as u64;
    assert!(!store.has_blob(&digest, size).unwrap());
    let path = source(fixture, "app.py", bytes, 0o644);
    assert!(store.local().put_blob(&digest, &path, Handover::Copy).unwrap(), "the first put is new");
    assert!(store.has_blob(&digest, size).unwrap());
    assert!(!store.has_blob(&digest, size + 1).unwrap(), "another size counts as missing");
    assert_eq!(read_blob(store, &digest), bytes);
    assert_eq!(fs::read(store.local().blob_path(&digest)).unwrap(), bytes);
    assert!(!store.local().put_blob(&digest, &path, Handover::Copy).unwrap(), "a second put is not new");
    let again = source(fixture, "again.py", bytes, 0o644);
    assert!(!store.local().put_blob(&digest, &again, MOVE).unwrap(), "a second put is not new");
    assert_eq!(read_blob(store, &digest), bytes);
    store.sync().unwrap();
}

fn move_takes_a_file_with_one_link(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    let bytes = b"moved contents\n";
    let digest = Digest::of(bytes);
    let path = source(fixture, "moved", bytes, 0o644);
    assert!(store.local().put_blob(&digest, &path, MOVE).unwrap());
    assert_eq!(read_blob(store, &digest), bytes);
    // Taken, not copied: the source is gone, or is the stored file itself.
    if path.exists() {
        assert_eq!(
            inode(&path),
            inode(&store.local().blob_path(&digest)),
            "the blob is a copy, not the file handed over"
        );
    }
}

fn move_takes_a_file_whose_links_all_belong_to_the_caller(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    let bytes = b"two names, one inode\n";
    let digest = Digest::of(bytes);
    let first = source(fixture, "first", bytes, 0o644);
    let second = fixture.scratch().join("second");
    fs::hard_link(&first, &second).unwrap();
    let before = inode(&first);
    assert!(store.local().put_blob(&digest, &first, Handover::Move { links: 2 }).unwrap());
    assert!(!store.local().put_blob(&digest, &second, Handover::Move { links: 2 }).unwrap());
    assert_eq!(read_blob(store, &digest), bytes);
    assert_eq!(inode(&store.local().blob_path(&digest)), before, "the blob is a copy, not the file handed over");
}

fn copy_leaves_the_source_untouched(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    let bytes = b"#!/bin/sh\necho copied\n";
    let digest = Digest::of(bytes);
    let path = source(fixture, "run", bytes, 0o755);
    let before = fs::metadata(&path).unwrap();
    assert!(store.local().put_blob(&digest, &path, Handover::Copy).unwrap());
    let after = fs::metadata(&path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(after.mode(), before.mode(), "the source's mode changed");
    assert_eq!((after.mtime(), after.mtime_nsec()), (before.mtime(), before.mtime_nsec()), "the mtime changed");
    assert_eq!(after.nlink(), 1, "the source gained a link: it is shared with the store");
    assert_ne!(inode(&store.local().blob_path(&digest)), inode(&path));
    // Writing to the source afterwards leaves the blob alone.
    fs::write(&path, b"changed").unwrap();
    assert_eq!(read_blob(store, &digest), bytes);
}

fn a_file_linked_from_outside_is_copied_never_shared(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    for (name, handover) in [("move", MOVE), ("copy", Handover::Copy)] {
        let bytes = format!("shared with an outside link, handed over by {name}\n");
        let digest = Digest::of(bytes.as_bytes());
        let inside = source(fixture, &format!("inside-{name}"), bytes.as_bytes(), 0o644);
        let outside = fixture.scratch().join(format!("outside-{name}"));
        fs::hard_link(&inside, &outside).unwrap();
        assert!(store.local().put_blob(&digest, &inside, handover).unwrap());
        let meta = fs::metadata(&outside).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o644, "{name}: the store changed the mode of a file it does not own");
        assert_eq!(meta.nlink(), 2, "{name}: the store linked a file whose inode is shared");
        fs::write(&outside, b"changed through the outside link").unwrap();
        assert_eq!(read_blob(store, &digest), bytes.as_bytes(), "{name}: the blob changed with the outside file");
    }
}

fn a_blob_of_the_wrong_size_counts_as_missing_and_is_replaced(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    for (name, handover) in [("move", MOVE), ("copy", Handover::Copy)] {
        let bytes = format!("a blob that a crash cut short, replaced by {name}\n");
        let digest = Digest::of(bytes.as_bytes());
        let size = bytes.len() as u64;
        fixture.plant_blob(&digest, &bytes.as_bytes()[..10]);
        assert!(!store.has_blob(&digest, size).unwrap(), "{name}: a short blob counts as present");
        let path = source(fixture, &format!("whole-{name}"), bytes.as_bytes(), 0o644);
        assert!(store.local().put_blob(&digest, &path, handover).unwrap(), "{name}: replacing a short blob is new");
        assert!(store.has_blob(&digest, size).unwrap());
        assert_eq!(read_blob(store, &digest), bytes.as_bytes());
    }
}

fn objects_round_trip_by_kind(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    let bytes = br#"{"entries":[]}"#;
    let digest = Digest::of(bytes);
    assert!(!store.has_object(ObjectKind::Manifest, &digest).unwrap());
    assert!(store.put_object(ObjectKind::Manifest, &digest, bytes).unwrap(), "the first put is new");
    assert!(!store.put_object(ObjectKind::Manifest, &digest, bytes).unwrap(), "a second put is not new");
    assert!(store.has_object(ObjectKind::Manifest, &digest).unwrap());
    assert_eq!(store.get_object(ObjectKind::Manifest, &digest).unwrap(), bytes);
    // Kinds are kept apart.
    assert!(!store.has_object(ObjectKind::Artifact, &digest).unwrap());
    assert!(store.put_object(ObjectKind::Artifact, &digest, bytes).unwrap());
    assert_eq!(store.get_object(ObjectKind::Artifact, &digest).unwrap(), bytes);
    // Objects are not blobs.
    assert!(!store.has_blob(&digest, bytes.len() as u64).unwrap());
}

fn absent_blobs_and_objects_are_not_found(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    let digest = Digest::of(b"never stored");
    match store.open_blob(&digest) {
        Err(error @ StoreError::NotFound { kind: "blob", digest: d }) if d == digest => {
            assert_eq!(error.to_string(), format!("blob {digest} is not in the store"));
        }
        Err(other) => panic!("expected NotFound, got {other:?}"),
        Ok(_) => panic!("opened a blob that was never stored"),
    }
    for (kind, name) in [(ObjectKind::Manifest, "manifest"), (ObjectKind::Artifact, "artifact")] {
        match store.get_object(kind, &digest) {
            Err(error @ StoreError::NotFound { kind: k, digest: d }) if k == name && d == digest => {
                assert_eq!(error.to_string(), format!("{name} {digest} is not in the store"));
            }
            other => panic!("expected NotFound for a {name}, got {other:?}"),
        }
        assert!(!store.has_object(kind, &digest).unwrap());
    }
    assert!(!store.has_blob(&digest, 12).unwrap());
}

fn stored_files_are_read_only_with_the_normalised_mtime(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    let mut blobs = Vec::new();
    for (name, mode, handover) in [
        ("plain", 0o644, MOVE),
        ("exec", 0o755, MOVE),
        ("private", 0o600, Handover::Copy),
        ("tool", 0o700, Handover::Copy),
    ] {
        let bytes = format!("contents of {name}\n");
        let digest = Digest::of(bytes.as_bytes());
        let path = source(fixture, name, bytes.as_bytes(), mode);
        store.local().put_blob(&digest, &path, handover).unwrap();
        blobs.push(digest);
    }
    let listing = br#"{"entries":[{"kind":"symlink","name":"a","target":"b"}]}"#;
    store.put_object(ObjectKind::Manifest, &Digest::of(listing), listing).unwrap();
    store.put_object(ObjectKind::Artifact, &Digest::of(b"{}"), b"{}").unwrap();
    store.sync().unwrap();

    let mut files = fixture.local_files();
    files.extend(blobs.iter().map(|digest| store.local().blob_path(digest)));
    for path in files {
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o222, 0, "{} is writable: mode {:o}", path.display(), meta.mode() & 0o7777);
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (NORMALISED_MTIME.cast_signed(), 0),
            "{} has another mtime",
            path.display()
        );
    }
}

fn concurrent_moves_of_one_blob_store_it_once(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    for round in 0..20 {
        let bytes = format!("raced by movers, round {round}\n");
        let digest = Digest::of(bytes.as_bytes());
        let paths: Vec<PathBuf> =
            (0..8).map(|i| source(fixture, &format!("move-{round}-{i}"), bytes.as_bytes(), 0o644)).collect();
        let results = race(paths.len(), |i| store.local().put_blob(&digest, &paths[i], MOVE));
        let new = results.into_iter().map(|r| r.expect("a racing put failed")).filter(|&new| new).count();
        assert_eq!(new, 1, "round {round}: {new} of 8 racing puts reported the blob new");
        assert_eq!(read_blob(store, &digest), bytes.as_bytes());
    }
}

fn concurrent_copies_of_one_blob_store_it_once(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    for round in 0..20 {
        let bytes = format!("raced by copiers, round {round}\n");
        let digest = Digest::of(bytes.as_bytes());
        let path = source(fixture, &format!("copy-{round}"), bytes.as_bytes(), 0o644);
        let results = race(8, |_| store.local().put_blob(&digest, &path, Handover::Copy));
        let new = results.into_iter().map(|r| r.expect("a racing put failed")).filter(|&new| new).count();
        assert_eq!(new, 1, "round {round}: {new} of 8 racing puts reported the blob new");
        assert_eq!(read_blob(store, &digest), bytes.as_bytes());
    }
}

fn concurrent_puts_of_one_object_store_it_once(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    for round in 0..20 {
        let bytes = format!(r#"{{"entries":[],"round":{round}}}"#);
        let digest = Digest::of(bytes.as_bytes());
        let results = race(8, |_| store.put_object(ObjectKind::Manifest, &digest, bytes.as_bytes()));
        let new = results.into_iter().map(|r| r.expect("a racing put failed")).filter(|&new| new).count();
        assert_eq!(new, 1, "round {round}: {new} of 8 racing puts reported the object new");
        assert_eq!(store.get_object(ObjectKind::Manifest, &digest).unwrap(), bytes.as_bytes());
    }
}

fn collection_waits_for_every_build_lease(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    // Builds share the store: two leases at once.
    let first = store.lease().unwrap();
    let second = store.lease().unwrap();
    let (waited, collected) = (std::sync::atomic::AtomicBool::new(false), std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|scope| {
        let collector = scope.spawn(|| {
            let lease = store.collect_lease(&mut || waited.store(true, std::sync::atomic::Ordering::SeqCst)).unwrap();
            collected.store(true, std::sync::atomic::Ordering::SeqCst);
            lease
        });
        // It said it waits, and it does while any build's lease is held.
        while !waited.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::yield_now();
        }
        drop(first);
        assert!(!collected.load(std::sync::atomic::Ordering::SeqCst), "collected while a build held a lease");
        drop(second);
        let lease = collector.join().unwrap();
        assert!(collected.load(std::sync::atomic::Ordering::SeqCst));
        drop(lease);
    });
    // With no build, a collection does not wait.
    let mut waited = false;
    drop(store.collect_lease(&mut || waited = true).unwrap());
    assert!(!waited);
}

fn blob_sizes_answer_in_order_and_list_visits_each_item(fixture: &dyn StoreFixture) {
    let store = fixture.store();
    let (a, b, absent) = (Digest::of(b"a"), Digest::of(b"bb"), Digest::of(b"absent"));
    store.local().put_blob(&a, &source(fixture, "a", b"a", 0o644), Handover::Copy).unwrap();
    store.local().put_blob(&b, &source(fixture, "b", b"bb", 0o644), Handover::Copy).unwrap();
    assert_eq!(store.blob_sizes(&[b, absent, a]).unwrap(), [Some(2), None, Some(1)]);
    assert_eq!(store.blob_sizes(&[]).unwrap(), []);

    let mut seen = Vec::new();
    store
        .list(graven::store::Area::Blobs, &mut |item| {
            seen.push((item.digest, item.size));
            Ok(())
        })
        .unwrap();
    seen.sort();
    let mut expected = vec![(a, 1), (b, 2)];
    expected.sort();
    assert_eq!(seen, expected);
    // The visitor's error ends the listing and is returned.
    let mut visits = 0;
    let result = store.list(graven::store::Area::Blobs, &mut |item| {
        visits += 1;
        Err(StoreError::NotFound { kind: "blob", digest: item.digest })
    });
    assert!(matches!(result, Err(StoreError::NotFound { .. })));
    assert_eq!(visits, 1);
}

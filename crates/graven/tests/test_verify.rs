//! `verify_artifact`: every blob re-hashed, every problem reported with the
//! paths it affects.

use std::fs;

use graven::Digest;
use graven::build::{BlobProblem, verify_artifact};
use graven::store::ObjectKind;

use crate::support::{TestHome, app_with_command, make_writable};

/// Builds an app where `a` and `sub/b` have the same contents.
fn built() -> (TestHome, Digest) {
    let home = TestHome::new();
    let repo = app_with_command(
        "mkdir -p out/sub/deep && echo same > out/a && echo same > out/sub/b && echo other > out/c \
         && echo deeper > out/sub/deep/d && ln -s a out/link",
        "",
    );
    let id = home.built(&repo);
    (home, id)
}

#[test]
fn an_intact_artifact_has_no_problems() {
    let (home, id) = built();
    let report = verify_artifact(&home.store, &id).unwrap();
    assert_eq!(report.artifact, id);
    assert_eq!(report.blobs, 3, "a and sub/b share one blob");
    assert_eq!(report.bytes, 5 + 6 + 7);
    assert_eq!(report.problems, []);
}

#[test]
fn a_corrupt_blob_is_reported_with_every_path_that_uses_it() {
    let (home, id) = built();
    let digest = home.file_digest(&id, "a");
    let blob = home.store.blob_path(&digest);
    make_writable(&blob);
    fs::write(&blob, "evil\n").unwrap();
    let report = verify_artifact(&home.store, &id).unwrap();
    assert_eq!(report.problems, [BlobProblem::Corrupt { digest, paths: vec!["a".to_owned(), "sub/b".to_owned()] }]);
}

#[test]
fn a_missing_blob_is_reported() {
    let (home, id) = built();
    let digest = home.file_digest(&id, "sub/deep/d");
    fs::remove_file(home.store.blob_path(&digest)).unwrap();
    let report = verify_artifact(&home.store, &id).unwrap();
    assert_eq!(report.problems, [BlobProblem::Missing { digest, paths: vec!["sub/deep/d".to_owned()] }]);
}

#[test]
fn a_missing_or_corrupt_listing_is_reported_with_its_directory() {
    let (home, id) = built();
    let deep = home.tree_digest(&id, "sub/deep");
    fs::remove_file(home.store.object_path(ObjectKind::Manifest, &deep)).unwrap();
    let report = verify_artifact(&home.store, &id).unwrap();
    assert_eq!(
        report.problems,
        [BlobProblem::Listing {
            path: "sub/deep".to_owned(),
            why: format!("the listing of directory 'sub/deep' ({deep}) is missing from the store")
        }]
    );
    assert_eq!(report.blobs, 2, "blobs outside the missing directory are still checked");

    let root = home.tree_digest(&id, "");
    let listing = home.store.object_path(ObjectKind::Manifest, &root);
    make_writable(&listing);
    fs::write(&listing, "not json").unwrap();
    let report = verify_artifact(&home.store, &id).unwrap();
    match report.problems.as_slice() {
        [BlobProblem::Listing { path, why }] => {
            assert_eq!(path, ".");
            assert_eq!(why, &format!("the listing of the root ({root}) is invalid: its bytes do not hash to its name"));
        }
        other => panic!("expected one listing problem, got {other:?}"),
    }
}

#[test]
fn problems_are_reported_together_in_path_order() {
    let (home, id) = built();
    let (a, c) = (home.file_digest(&id, "a"), home.file_digest(&id, "c"));
    fs::remove_file(home.store.blob_path(&c)).unwrap();
    let blob = home.store.blob_path(&a);
    make_writable(&blob);
    fs::write(&blob, "evil\n").unwrap();
    let deep = home.tree_digest(&id, "sub/deep");
    fs::remove_file(home.store.object_path(ObjectKind::Manifest, &deep)).unwrap();
    let report = verify_artifact(&home.store, &id).unwrap();
    assert_eq!(
        report.problems,
        [
            BlobProblem::Corrupt { digest: a, paths: vec!["a".to_owned(), "sub/b".to_owned()] },
            BlobProblem::Missing { digest: c, paths: vec!["c".to_owned()] },
            BlobProblem::Listing {
                path: "sub/deep".to_owned(),
                why: format!("the listing of directory 'sub/deep' ({deep}) is missing from the store")
            },
        ]
    );
}

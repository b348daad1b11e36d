//! The build stage through `graven::build::build`: what ingest keeps, what it
//! refuses, how builds share storage, reuse and reproducibility.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use graven::NORMALISED_MTIME;
use graven::build::{BuildError, IngestError};
use graven::model::Artifact;
use graven::store::ObjectKind;
use graven::store::Store as _;

use crate::support::{APP, TestHome, app, app_with_command, files_under};

/// Builds an app whose build command is `command`, expecting a refusal;
/// checks that nothing was recorded or published, and returns the error.
fn refused(command: &str) -> BuildError {
    let home = TestHome::new();
    let repo = app_with_command(command, "");
    let Err(error) = home.build(&repo) else { panic!("`{command}` was built") };
    assert!(home.builds().is_empty(), "a refused build was recorded");
    assert!(!home.store.root().join("artifacts").exists(), "a refused build published an artifact");
    error
}

#[test]
fn modes_are_normalised_by_the_owners_execute_bit() {
    let home = TestHome::new();
    let repo = app_with_command(
        "mkdir -p out/dir && cd out && echo a > private && chmod 600 private && echo b > tool && chmod 700 tool \
         && echo c > read-only && chmod 444 read-only && echo d > group-exec && chmod 654 group-exec \
         && echo e > setuid && chmod 4755 setuid && chmod 700 dir",
        "",
    );
    let id = home.built(&repo);
    assert_eq!(
        home.tree(&id),
        ["dir/", "group-exec 0644 2", "private 0644 2", "read-only 0644 2", "setuid 0755 2", "tool 0755 2"]
    );
    // Whatever the modes in the output, the store's files are sealed.
    for path in files_under(home.store.root()) {
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o222, 0, "{} is writable", path.display());
        assert_eq!(meta.mode() & 0o7000, 0, "{} keeps a setuid, setgid or sticky bit", path.display());
        assert_eq!(meta.mtime(), NORMALISED_MTIME.cast_signed(), "{}", path.display());
    }
}

#[test]
fn relative_symlinks_that_stay_inside_are_kept() {
    let home = TestHome::new();
    let repo = app_with_command(
        "mkdir -p out/lib/py out/bin && echo x > out/bin/tool && ln -s bin/tool out/current \
         && ln -s ../bin/tool out/lib/tool && ln -s ../../bin out/lib/py/bin && ln -s . out/here \
         && ln -s missing out/dangling",
        "",
    );
    let id = home.built(&repo);
    assert_eq!(
        home.tree(&id),
        [
            "bin/",
            "bin/tool 0644 2",
            "current -> bin/tool",
            "dangling -> missing",
            "here -> .",
            "lib/",
            "lib/py/",
            "lib/py/bin -> ../../bin",
            "lib/tool -> ../bin/tool",
        ]
    );
}

#[test]
fn symlinks_are_data_stored_as_they_are_and_those_leaving_app_are_host_references() {
    let home = TestHome::new();
    let repo = app_with_command(
        "mkdir -p out/etc out/sub out/lib out/venv/bin && ln -s /etc/passwd out/etc/passwd && \
         ln -s ../../secret out/sub/up && ln -s .. out/lib/up && ln -s lib/up/.. out/escape && \
         ln -s /usr/bin/python3 out/venv/bin/python && ln -s /app/lib out/inside && ln -s ../lib out/sub/lib",
        "",
    );
    let outcome = home.build(&repo).unwrap_or_else(|e| panic!("the build failed: {e}"));
    let id = outcome.record.build.artifact;
    assert_eq!(
        home.tree(&id),
        [
            "escape -> lib/up/..",
            "etc/",
            "etc/passwd -> /etc/passwd",
            "inside -> /app/lib",
            "lib/",
            "lib/up -> ..",
            "sub/",
            "sub/lib -> ../lib",
            "sub/up -> ../../secret",
            "venv/",
            "venv/bin/",
            "venv/bin/python -> /usr/bin/python3",
        ]
    );
    // Judged on the target's text: `lib/up/..` is the root by its text.
    assert_eq!(
        outcome.host_references,
        [
            ("etc/passwd".to_owned(), "/etc/passwd".to_owned()),
            ("sub/up".to_owned(), "../../secret".to_owned()),
            ("venv/bin/python".to_owned(), "/usr/bin/python3".to_owned()),
        ]
    );
}

#[test]
fn fifos_are_refused_with_their_path() {
    let error = refused("mkdir -p out/run && mkfifo out/run/pipe");
    assert!(
        matches!(&error, BuildError::Ingest(IngestError::Unsupported { path, kind: "fifo" }) if path == "run/pipe"),
        "{error:?}"
    );
    assert!(error.to_string().starts_with("'run/pipe' is a fifo"), "{error}");
}

#[test]
fn sockets_are_refused_with_their_path() {
    let error = refused(
        "mkdir -p out/run && python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"out/run/app.sock\")'",
    );
    assert!(
        matches!(&error, BuildError::Ingest(IngestError::Unsupported { path, kind: "socket" }) if path == "run/app.sock"),
        "{error:?}"
    );
    assert!(error.to_string().starts_with("'run/app.sock' is a socket"), "{error}");
}

#[test]
fn names_that_are_not_utf8_are_refused_with_their_path() {
    let error = refused("mkdir -p out/sub && touch \"out/sub/bad$(printf '\\377')name\"");
    assert!(
        matches!(&error, BuildError::Ingest(IngestError::NonUtf8Name { path }) if path == "sub/bad\u{fffd}name"),
        "{error:?}"
    );
    assert!(error.to_string().starts_with("'sub/bad\u{fffd}name' has a name that is not valid UTF-8"), "{error}");
}

#[test]
fn exclude_globs_without_a_slash_match_at_any_depth_and_others_from_the_root() {
    let home = TestHome::new();
    let repo = app_with_command(
        "mkdir -p out/sub/deep out/cache/y out/tmp out/sub/tmp out/sub/cache && cd out \
         && touch a.log sub/b.log sub/deep/c.log cache/x cache/y/z tmp/q sub/tmp/r sub/cache/w keep.txt sub/keep.log.txt",
        r#"exclude = ["*.log", "cache/**", "tmp"]"#,
    );
    let id = home.built(&repo);
    assert_eq!(
        home.tree(&id),
        [
            // `cache/**` leaves out what is in cache/, not cache/ itself (as
            // rsync does); `cache` would leave out both.
            "cache/",
            "keep.txt 0644 0",
            "sub/",
            "sub/cache/",
            "sub/cache/w 0644 0",
            "sub/deep/",
            "sub/keep.log.txt 0644 0",
        ]
    );
}

#[test]
fn the_output_directory_becomes_the_root_and_process_types_come_from_the_commit() {
    let home = TestHome::new();
    let repo = app(concat!(
        "[build]\n",
        "command = \"mkdir -p dist/static && echo '<h1>hi</h1>' > dist/index.html && echo 'body{}' > dist/static/site.css && echo junk > left-out.txt\"\n",
        "output = \"dist\"\n\n",
        "[run]\nport = 8000\n",
    ));
    let id = home.built(&repo);
    assert_eq!(home.tree(&id), ["index.html 0644 12", "static/", "static/site.css 0644 7"]);
    let artifact = Artifact::load(&home.store, &id).unwrap();
    let types = BTreeMap::from([("web".to_owned(), "./serve".to_owned()), ("worker".to_owned(), "./work".to_owned())]);
    assert_eq!(artifact.process_types, types, "the Procfile is read from the commit, not the output");
    assert_eq!(artifact.run.port, Some(8000));
}

#[test]
fn unchanged_directories_are_shared_and_a_rebuild_stores_only_what_changed() {
    let home = TestHome::new();
    // No build command: the checkout itself is the artifact.
    let repo = app("");
    for i in 0..40 {
        repo.write(&format!("lib/module{i:02}.py"), format!("# module {i}\n{}", "x = 1\n".repeat(100)));
    }
    repo.write("app/main.py", "print('v1')\n");
    repo.commit("v1");
    let first = home.build(&repo).unwrap();
    let changed = "print('version 2')\n";
    repo.write("app/main.py", changed);
    repo.commit("v2");
    let second = home.build(&repo).unwrap();
    let (first_id, second_id) = (first.record.build.artifact, second.record.build.artifact);

    assert_ne!(first_id, second_id);
    assert_eq!(home.tree_digest(&first_id, "lib"), home.tree_digest(&second_id, "lib"));
    assert_ne!(home.tree_digest(&first_id, "app"), home.tree_digest(&second_id, "app"));
    // New: the changed file, the listings that hold it (app/ and the root),
    // and the artifact record. Not lib/, nor its 40 files.
    let object_len = |kind, digest| home.store.get_object(kind, &digest).unwrap().len() as u64;
    let listings = object_len(ObjectKind::Manifest, home.tree_digest(&second_id, "app"))
        + object_len(ObjectKind::Manifest, home.tree_digest(&second_id, ""));
    let record = object_len(ObjectKind::Artifact, second_id);
    assert_eq!(second.new_manifest_bytes, listings + record);
    assert_eq!(second.record.build.new_bytes, changed.len() as u64 + listings + record);
    assert!(second.record.build.new_bytes < 1000, "{} new bytes", second.record.build.new_bytes);
    assert_eq!(second.record.build.bytes, first.record.build.bytes - 12 + changed.len() as u64);
    assert!(first.record.build.new_bytes > 24_000);
}

#[test]
fn the_same_commit_built_twice_is_the_same_artifact() {
    let home = TestHome::new();
    let repo = app_with_command(
        "mkdir -p out/bin && echo built > out/a && echo '#!/bin/sh' > out/bin/run && chmod +x out/bin/run",
        "",
    );
    let first = home.build(&repo).unwrap();
    assert!(!first.reused);

    let again = home.build(&repo).unwrap();
    assert!(again.reused, "an unchanged commit and recipe is reused");
    assert_eq!(again.record, first.record);

    let forced = home.build_with(&repo, |request| request.force = true).unwrap();
    assert!(!forced.reused);
    assert_eq!(forced.record.build.artifact, first.record.build.artifact);
    assert_ne!(forced.record.seq, first.record.seq);
    assert_eq!(forced.record.build.new_bytes, 0, "everything was in the store already");
    assert_eq!(home.builds().len(), 2);
    assert_eq!(home.builds()[0].build.app, APP);
    let scratch: Vec<_> = fs::read_dir(home.home.tmp_dir()).unwrap().collect();
    assert!(scratch.is_empty(), "builds left scratch space behind: {scratch:?}");
}

#[test]
fn check_reproducible_passes_a_deterministic_build() {
    let home = TestHome::new();
    let repo = app_with_command("mkdir -p out/sub && echo \"built at $SOURCE_DATE_EPOCH\" > out/sub/a", "");
    let outcome = home.build_with(&repo, |request| request.check_reproducible = true).unwrap();
    assert_eq!(home.tree(&outcome.record.build.artifact), ["sub/", "sub/a 0644 20"]);
    assert_eq!(home.builds().len(), 1);
}

#[test]
fn check_reproducible_fails_listing_the_paths_that_differ() {
    let home = TestHome::new();
    let repo = app_with_command(
        "mkdir -p out/sub && echo stable > out/sub/a && echo \"built $(date +%N)\" > out/sub/stamp",
        "",
    );
    let error = home.build_with(&repo, |request| request.check_reproducible = true).unwrap_err();
    assert!(matches!(&error, BuildError::NotReproducible { paths, .. } if paths == &["sub/stamp"]), "{error:?}");
    // What differs, not a guess at why: the first byte of the clock's
    // digits, after "built ".
    let text = error.to_string();
    let (head, what) = text.split_once("\n  sub/stamp: ").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(head, "the build is not reproducible: 1 path differs between two builds of the same commit:");
    let offset: u64 = what.rsplit_once("first difference at byte ").map(|(_, n)| n.parse().unwrap()).unwrap();
    assert!((6..16).contains(&offset), "{text}");
    assert!(home.builds().is_empty());
}

#[test]
fn check_reproducible_notices_an_empty_directory_in_one_build_only() {
    let home = TestHome::new();
    // The first build finds no marker and makes an empty directory; the
    // second finds the marker (outside the checkout, so without the
    // sandbox, which would keep the build from writing it) and does not.
    let marker = home.outside().join("built-once");
    let repo = app_with_command(
        &format!(
            "mkdir -p out && echo a > out/a && if [ ! -e '{0}' ]; then touch '{0}'; mkdir out/empty; fi",
            marker.display()
        ),
        "",
    );
    let error = home
        .build_with(&repo, |request| {
            request.check_reproducible = true;
            request.sandbox = false;
        })
        .unwrap_err();
    assert!(
        matches!(&error, BuildError::NotReproducible { paths, differences } if paths == &["empty/"] && differences == &["only in the first build"]),
        "{error:?}"
    );
}

#[test]
fn hard_links_inside_the_output_are_moved_and_both_names_listed() {
    // Without the sandbox: the build reports the inode outside itself.
    let home = TestHome::new();
    let inode_file = home.outside().join("inode");
    let repo = app_with_command(
        &format!(
            "mkdir -p out/x && echo shared > out/a && ln out/a out/x/b && stat -c %h:%i out/a > '{}'",
            inode_file.display()
        ),
        "",
    );
    let id = home.build_with(&repo, |request| request.sandbox = false).unwrap().record.build.artifact;
    assert_eq!(home.tree(&id), ["a 0644 7", "x/", "x/b 0644 7"]);
    let digest = home.file_digest(&id, "a");
    assert_eq!(home.file_digest(&id, "x/b"), digest);
    let recorded = fs::read_to_string(&inode_file).unwrap();
    let (links, inode) = recorded.trim().split_once(':').unwrap();
    assert_eq!(links, "2");
    let blob = fs::metadata(home.store.blob_path(&digest)).unwrap();
    assert_eq!(blob.ino().to_string(), inode, "the hard-linked file was copied into the store, not moved");
}

#[test]
fn files_linked_from_outside_the_output_are_copied_and_left_alone() {
    // Without the sandbox, which shows the build no host directory it
    // could link from writable.
    let home = TestHome::new();
    let outside = home.outside().join("shared.txt");
    fs::write(&outside, "outside\n").unwrap();
    let repo = app_with_command(&format!("mkdir out && ln '{}' out/shared.txt", outside.display()), "");
    let id = home.build_with(&repo, |request| request.sandbox = false).unwrap().record.build.artifact;
    let digest = home.file_digest(&id, "shared.txt");
    let blob_path = home.store.blob_path(&digest);
    let (blob, meta) = (fs::metadata(&blob_path).unwrap(), fs::metadata(&outside).unwrap());
    assert_ne!(blob.ino(), meta.ino(), "the store shares an inode with a file outside the build");
    assert_eq!(meta.permissions().mode() & 0o777, 0o644, "the build changed the mode of a file outside it");
    fs::write(&outside, "changed outside\n").unwrap();
    assert_eq!(fs::read_to_string(&blob_path).unwrap(), "outside\n");
    let report = graven::build::verify_artifact(&home.store, &id).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // The store's copy is sealed even though the original was not taken.
    assert_eq!(blob.permissions().mode() & 0o777, 0o444);
    assert!(home.store.has_blob(&digest, 8).unwrap());
}

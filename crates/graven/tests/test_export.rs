//! Exports: byte-identical archives with normalised headers, written
//! atomically.

use std::fs;
use std::io::Read as _;
use std::path::Path;
use std::process::Command;

use graven::Digest;
use graven::NORMALISED_MTIME;
use graven::export::{ExportError, Format, export_to_path};
use graven::store::ArtifactError;
use graven::store::StoreError;
use graven_testutils::TestRepo;

use crate::support::{TestHome, app_with_command, make_writable};

/// A directory name that makes paths longer than a tar header's 100 bytes.
fn long_dir() -> String {
    format!("{}/{}", "d".repeat(60), "e".repeat(60))
}

/// An app with files, an executable, directories (one empty), a symlink, and
/// a path and a link target longer than 100 bytes.
fn rich_app() -> TestRepo {
    let long = long_dir();
    app_with_command(
        &format!(
            "mkdir -p out/bin out/a out/empty out/{long} && printf '#!/bin/sh\\necho hi\\n' > out/bin/serve \
             && chmod 755 out/bin/serve && echo 'print(1)' > out/app.py && echo text > out/a.txt \
             && echo inner > out/a/inner && ln -s bin/serve out/current && echo deep > out/{long}/file.txt \
             && ln -s {long}/file.txt out/long-link"
        ),
        "",
    )
}

fn export(home: &TestHome, id: &Digest, format: Format, path: &Path) -> Vec<u8> {
    export_to_path(&home.store, id, format, path).unwrap_or_else(|e| panic!("export as {}: {e}", format.name()));
    fs::read(path).unwrap()
}

fn decompress(format: Format, bytes: &[u8]) -> Vec<u8> {
    match format {
        Format::Tar => bytes.to_vec(),
        Format::TarGz => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
            out
        }
        Format::TarZst => zstd::decode_all(bytes).unwrap(),
    }
}

#[test]
fn exports_are_byte_identical_across_runs_and_homes() {
    let repo = rich_app();
    let (home, other_home) = (TestHome::new(), TestHome::new());
    let id = home.built(&repo);
    assert_eq!(other_home.built(&repo), id, "one commit built in two homes gives two artifacts");
    let out = tempfile::tempdir().unwrap();
    let mut plain_tar = None;
    for (format, name) in Format::ALL {
        let first = export(&home, &id, format, &out.path().join(format!("first.{name}")));
        let second = export(&home, &id, format, &out.path().join(format!("second.{name}")));
        let elsewhere = export(&other_home, &id, format, &out.path().join(format!("elsewhere.{name}")));
        assert!(first == second, "two exports as {name} differ");
        assert!(first == elsewhere, "exports as {name} from two homes differ");
        let plain = decompress(format, &first);
        assert!(plain_tar.get_or_insert_with(|| plain.clone()) == &plain, "{name} does not hold the same tar");
    }
}

#[test]
fn tar_entries_are_in_manifest_order_with_normalised_headers() {
    let home = TestHome::new();
    let id = home.built(&rich_app());
    let out = tempfile::tempdir().unwrap();
    let bytes = export(&home, &id, Format::Tar, &out.path().join("app.tar"));
    assert_eq!(bytes.len() % 512, 0);

    let long = long_dir();
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut found = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let path = entry.path().unwrap().to_str().unwrap().to_owned();
        assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0), "{path}");
        assert_eq!(header.mtime().unwrap(), NORMALISED_MTIME, "{path}");
        assert_eq!(header.username().unwrap().unwrap_or(""), "", "{path}");
        assert_eq!(header.groupname().unwrap().unwrap_or(""), "", "{path}");
        let mode = header.mode().unwrap();
        let line = match header.entry_type() {
            tar::EntryType::Directory => format!("{path} dir {mode:04o}"),
            tar::EntryType::Symlink => {
                let target = entry.link_name().unwrap().unwrap().to_str().unwrap().to_owned();
                format!("{path} -> {target}")
            }
            tar::EntryType::Regular => {
                let mut contents = String::new();
                entry.read_to_string(&mut contents).unwrap();
                format!("{path} {mode:04o} {contents:?}")
            }
            other => panic!("{path} has entry type {other:?}"),
        };
        found.push(line);
    }
    let expected = [
        "a/ dir 0755".to_owned(),
        "a/inner 0644 \"inner\\n\"".to_owned(),
        "a.txt 0644 \"text\\n\"".to_owned(),
        "app.py 0644 \"print(1)\\n\"".to_owned(),
        "bin/ dir 0755".to_owned(),
        "bin/serve 0755 \"#!/bin/sh\\necho hi\\n\"".to_owned(),
        "current -> bin/serve".to_owned(),
        format!("{}/ dir 0755", "d".repeat(60)),
        format!("{long}/ dir 0755"),
        format!("{long}/file.txt 0644 \"deep\\n\""),
        "empty/ dir 0755".to_owned(),
        format!("long-link -> {long}/file.txt"),
    ];
    assert_eq!(found, expected);
    assert!(format!("{long}/file.txt").len() > 100);

    // GNU tar reads the long names and links back.
    let unpacked = out.path().join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    let status = Command::new("tar").arg("-xf").arg(out.path().join("app.tar")).arg("-C").arg(&unpacked).status();
    if let Ok(status) = status {
        assert!(status.success());
        assert_eq!(fs::read_to_string(unpacked.join(&long).join("file.txt")).unwrap(), "deep\n");
        assert_eq!(fs::read_to_string(unpacked.join("long-link")).unwrap(), "deep\n");
    }
}

#[test]
fn an_export_with_a_missing_blob_fails_and_leaves_no_file() {
    let home = TestHome::new();
    let id = home.built(&rich_app());
    let digest = home.file_digest(&id, "app.py");
    fs::remove_file(home.store.blob_path(&digest)).unwrap();
    let out = tempfile::tempdir().unwrap();
    for (format, name) in Format::ALL {
        let path = out.path().join(format!("app.{name}"));
        let error = export_to_path(&home.store, &id, format, &path).unwrap_err();
        assert!(
            matches!(&error, ExportError::Artifact(ArtifactError::Blob {
                path, source: StoreError::NotFound { kind: "blob", digest: d }, ..
            }) if *d == digest && path == "app.py"),
            "{error:?}"
        );
        assert_eq!(
            graven::error_chain(&error),
            format!("file 'app.py' of artifact {id} cannot be used: blob {digest} is not in the store")
        );
    }
    let left: Vec<_> = fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "failed exports left files behind: {left:?}");
}

#[test]
fn an_export_with_a_blob_of_the_wrong_size_fails_rather_than_write_a_corrupt_archive() {
    let home = TestHome::new();
    let id = home.built(&rich_app());
    let digest = home.file_digest(&id, "a/inner");
    let blob = home.store.blob_path(&digest);
    make_writable(&blob);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("app.tar");
    let listed = fs::metadata(&blob).unwrap().len();
    for (contents, what) in [
        ("in", format!("has 2 bytes, not the {listed} its listing says")),
        ("inner, and more\n", format!("has 16 bytes, not the {listed} its listing says")),
    ] {
        fs::write(&blob, contents).unwrap();
        let error = export_to_path(&home.store, &id, Format::Tar, &path).expect_err("exported a damaged blob");
        assert_eq!(
            graven::error_chain(&error),
            format!("file 'a/inner' of artifact {id} cannot be used: blob {digest} {what}")
        );
        assert!(!path.exists());
    }
}

#[test]
fn an_export_to_a_fifo_or_a_device_writes_into_it_and_never_replaces_it() {
    use std::os::unix::fs::FileTypeExt as _;
    let home = TestHome::new();
    let id = home.built(&rich_app());
    let out = tempfile::tempdir().unwrap();
    let expected = export(&home, &id, Format::Tar, &out.path().join("app.tar"));
    let fifo = out.path().join("pipe");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    export_to_path(&home.store, &id, Format::Tar, &fifo).unwrap();
    assert_eq!(reader.join().unwrap(), expected, "the fifo's reader got another archive");
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the fifo was replaced by a file");
    // /dev/null stays the device it is.
    export_to_path(&home.store, &id, Format::Tar, Path::new("/dev/null")).unwrap();
    assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device(), "/dev/null was replaced");
}

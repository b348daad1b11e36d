//! `graven export` and `graven verify`: finding a build by id, prefix or
//! commit, byte-identical archives, and damage in the store named by path.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use graven::Digest;
use graven::ledger::{Ledger as _, SqliteLedger};

use crate::common::{Graven, shell_app};

const APP: &str = "[build]\ncommand = \"mkdir -p bin && printf '#!/bin/sh\\\\necho hi\\\\n' > bin/serve && chmod +x bin/serve && echo '{}' > config.json\"\n";

/// A built shell app; returns the repository, graven and the artifact id.
fn built() -> (graven_testutils::TestRepo, Graven, String) {
    let repo = shell_app(APP);
    let graven = Graven::in_repo(&repo);
    let build = graven.build_json::<&str>([]);
    let artifact = build["artifact"].as_str().unwrap().to_owned();
    (repo, graven, artifact)
}

/// The store path of the blob holding `path` in the artifact.
fn blob_of(repo: &graven_testutils::TestRepo, contents: &[u8]) -> PathBuf {
    let hex = Digest::of(contents).hex();
    repo.path().join(".graven/store/blobs/sha256").join(&hex[..2]).join(&hex[2..])
}

#[test]
fn verify_an_intact_artifact() {
    let (_repo, graven, artifact) = built();
    let run = graven.run(["verify", &artifact]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        [DIGEST] is intact: 5 blobs, 195 B checked
        ----- stderr -----
        ");
}

#[test]
fn verify_names_a_corrupted_file() {
    let (repo, graven, artifact) = built();
    let blob = blob_of(&repo, b"{}\n");
    assert!(blob.exists(), "config.json is stored at {}", blob.display());
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Same size, other bytes: only the digest can tell.
    std::fs::write(&blob, "[]\n").unwrap();

    let run = graven.run(["verify", &artifact]);
    insta::assert_snapshot!(run, @r"
        exit code: 1
        ----- stdout -----
        corrupted config.json ([TEMP]/.graven/store/blobs/sha256/[DIGEST]): blob [DIGEST]
        ----- stderr -----
        error: artifact [DIGEST] is damaged: 1 problem found
        hint: rebuild commit [C1] with graven build --force to store the files again
        ");
    let run = graven.run(["verify", &artifact, "--json"]);
    assert_eq!(run.code, 1, "{run}");
    let json = run.json();
    assert_eq!((json["artifact"].as_str(), json["intact"].as_bool()), (Some(artifact.as_str()), Some(false)));
    assert_eq!(json["problems"][0]["problem"], "corrupted");
    assert_eq!(json["problems"][0]["paths"], serde_json::json!(["config.json"]));
    assert_eq!(json["problems"][0]["digest"].as_str(), Some(Digest::of(b"{}\n").to_string().as_str()));
}

#[test]
fn verify_checks_each_blob_against_its_listed_size() {
    let (repo, graven, artifact) = built();
    let blob = blob_of(&repo, b"{}\n");
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&blob, "{}\n\n").unwrap();
    let run = graven.run(["verify", &artifact]);
    insta::assert_snapshot!(run, @r"
        exit code: 1
        ----- stdout -----
        size      config.json ([TEMP]/.graven/store/blobs/sha256/[DIGEST]): blob [DIGEST] has 4 bytes, not the 3 its listing says
        ----- stderr -----
        error: artifact [DIGEST] is damaged: 1 problem found
        hint: rebuild commit [C1] with graven build --force to store the files again
        ");
    let json = graven.run(["verify", &artifact, "--json"]).json();
    assert_eq!(json["problems"][0]["problem"], "size");
    assert_eq!((json["problems"][0]["listed"].as_u64(), json["problems"][0]["found"].as_u64()), (Some(3), Some(4)));
}

#[test]
fn verify_names_a_missing_file() {
    let (repo, graven, artifact) = built();
    std::fs::remove_file(blob_of(&repo, b"#!/bin/sh\necho hi\n")).unwrap();
    let run = graven.run(["verify", &artifact]);
    insta::assert_snapshot!(run, @r"
        exit code: 1
        ----- stdout -----
        missing   bin/serve ([TEMP]/.graven/store/blobs/sha256/[DIGEST]): blob [DIGEST]
        ----- stderr -----
        error: artifact [DIGEST] is damaged: 1 problem found
        hint: rebuild commit [C1] with graven build --force to store the files again
        ");
}

#[test]
fn a_build_is_found_by_id_prefix_commit_branch_and_tag() {
    let (repo, graven, artifact) = built();
    let commit = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    repo.git(&["tag", "v1.0"]);
    let hex = artifact.strip_prefix("sha256:").unwrap();
    let references = [
        artifact.clone(),
        hex.to_owned(),
        format!("sha256:{}", &hex[..7]),
        hex[..7].to_owned(),
        commit.clone(),
        commit[..7].to_owned(),
        "HEAD".to_owned(),
        "main".to_owned(),
        "v1.0".to_owned(),
    ];
    for reference in references {
        let run = graven.run(["verify", &reference]);
        assert_eq!(run.code, 0, "verify {reference}:\n{run}");
        assert!(run.stdout.starts_with(&format!("sha256:{} is intact", &hex[..12])), "verify {reference}:\n{run}");
    }
}

#[test]
fn an_unknown_build_is_bad_input() {
    let (repo, graven, _artifact) = built();
    let run = graven.run(["verify", "deadbeef"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: no build of app 'shell' matches 'deadbeef'
        hint: `graven builds` lists the builds; give an artifact id, a prefix of 7 or more hex digits, or a commit
        ");
    let run = graven.run(["export", "no-such-branch", "--format", "tar", "-o", "out.tar"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: no build of app 'shell' matches 'no-such-branch'
        hint: `graven builds` lists the builds; give an artifact id, a prefix of 7 or more hex digits, or a commit
        ");
    assert!(!repo.path().join("out.tar").exists());

    repo.write("later.txt", "later\n");
    repo.commit("Later");
    let run = graven.run(["verify", "HEAD"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: commit [C2] ('HEAD') has not been built
        hint: build it first: graven build <rev>
        ");
}

#[test]
fn an_ambiguous_prefix_lists_the_candidates() {
    let (repo, graven, artifact) = built();
    // Two artifacts sharing 7 hex digits would take ~16,000 builds to come
    // by; record a second build whose artifact id shares 10 with the real one.
    let hex = artifact.strip_prefix("sha256:").unwrap();
    let twin: Digest = format!("{}{}", &hex[..10], "0".repeat(54)).parse().unwrap();
    let ledger = SqliteLedger::open(&repo.path().join(".graven/ledger.sqlite")).unwrap();
    let mut record = ledger.builds("shell").unwrap().remove(0).build;
    record.artifact = twin;
    record.commit = "0".repeat(40);
    ledger.record_build(&record).unwrap();
    let graven = graven.label(&hex[..12], "[REAL]").label(&twin.hex()[..12], "[TWIN]").label(&hex[..7], "[PREFIX]");

    let run = graven.run(["verify", &hex[..7]]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: '[PREFIX]' is ambiguous; it matches:
          sha256:[TWIN] (commit 0000000, built [TIME])
          sha256:[REAL] (commit [C1], built [TIME])
        hint: give more digits of the artifact id
        ");
    let run = graven.run(["verify", &hex[..11]]);
    assert_eq!(run.code, 0, "one more digit is enough:\n{run}");
}

#[test]
fn export_writes_byte_identical_archives() {
    let (repo, graven, artifact) = built();
    let run = graven.run(["export", &artifact[..14], "--format", "tar", "-o", "one.tar"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        ----- stderr -----
        exported [DIGEST] to one.tar — 6 entries, 6.7 kB
        ");
    for format in ["tar.gz", "tar.zst"] {
        let one = format!("one.{format}");
        let two = format!("two.{format}");
        assert_eq!(graven.run(["export", "HEAD", "--format", format, "-o", &one]).code, 0);
        assert_eq!(graven.run(["export", "main", "--format", format, "-o", &two]).code, 0);
        assert_eq!(
            std::fs::read(repo.path().join(&one)).unwrap(),
            std::fs::read(repo.path().join(&two)).unwrap(),
            "{format}"
        );
    }

    let listing = std::process::Command::new("tar")
        .args(["--list", "--verbose", "--numeric-owner", "--full-time", "--file", "one.tar"])
        .current_dir(repo.path())
        .env("TZ", "UTC")
        .output()
        .unwrap();
    insta::assert_snapshot!(String::from_utf8(listing.stdout).unwrap(), @r"
        -rw-r--r-- 0/0              10 1970-01-01 00:00:01 .gitignore
        -rw-r--r-- 0/0              13 1970-01-01 00:00:01 Procfile
        drwxr-xr-x 0/0               0 1970-01-01 00:00:01 bin/
        -rwxr-xr-x 0/0              18 1970-01-01 00:00:01 bin/serve
        -rw-r--r-- 0/0               3 1970-01-01 00:00:01 config.json
        -rw-r--r-- 0/0             151 1970-01-01 00:00:01 graven.toml
        ");
}

#[test]
fn build_force_repairs_blobs_and_listings_damaged_in_place() {
    let (repo, graven, artifact) = built();
    // Same size, other bytes: what an edit through a hard link leaves.
    let blob = blob_of(&repo, b"{}\n");
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&blob, "{ }").unwrap();
    let hex = artifact.strip_prefix("sha256:").unwrap();
    let record = repo.path().join(".graven/store/artifacts/sha256").join(&hex[..2]).join(&hex[2..]);
    let root: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let root = root["root"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_owned();
    let listing = repo.path().join(".graven/store/manifests/sha256").join(&root[..2]).join(&root[2..]);
    let mut bytes = std::fs::read(&listing).unwrap();
    bytes.reverse();
    std::fs::set_permissions(&listing, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&listing, bytes).unwrap();
    let damaged = graven.run(["verify", &artifact]);
    assert_eq!(damaged.code, 1, "{damaged}");

    // A plain build reuses the record; --force re-checks and stores again.
    let build = graven.build_json(["--force"]);
    assert_eq!(build["artifact"].as_str(), Some(artifact.as_str()));
    assert_eq!(std::fs::read(&blob).unwrap(), b"{}\n");
    let repaired = graven.run(["verify", &artifact]);
    assert_eq!(repaired.code, 0, "{repaired}");
}

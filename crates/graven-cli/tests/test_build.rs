//! `graven build` and `graven builds`: the happy paths, reuse, determinism,
//! dirty trees and what goes into an artifact.

use graven_testutils::TestRepo;

use crate::common::{Graven, shell_app};

/// The fields DESIGN.md promises in `build` JSON; scripts depend on them.
const BUILD_FIELDS: [&str; 10] = [
    "artifact",
    "commit",
    "dirty",
    "files",
    "bytes",
    "new_bytes",
    "reused",
    "duration_ms",
    "build_command_ms",
    "ingest_ms",
];

#[track_caller]
fn assert_build_shape(build: &serde_json::Value) {
    for field in BUILD_FIELDS {
        assert!(build.get(field).is_some(), "field '{field}' is missing from {build:#}");
    }
    let artifact = build["artifact"].as_str().expect("artifact is a string");
    assert!(artifact.starts_with("sha256:") && artifact.len() == 7 + 64, "{artifact}");
    let commit = build["commit"].as_str().expect("commit is a string");
    assert!(commit.len() == 40 && commit.bytes().all(|c| c.is_ascii_hexdigit()), "{commit}");
    assert!(build["dirty"].is_boolean() && build["reused"].is_boolean(), "{build:#}");
    for field in ["files", "bytes", "new_bytes", "duration_ms", "build_command_ms", "ingest_ms"] {
        assert!(build[field].is_u64(), "'{field}' is not a count in {build:#}");
    }
}

#[test]
fn build_the_example_app() {
    let repo = TestRepo::hello();
    let graven = Graven::in_repo(&repo).label_python().hide_sizes();
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        built [DIGEST] from [C1] — 16 files, [SIZE], [SIZE] new
        ----- stderr -----
        exporting [C1]
        running `python3 build.py`
          build | build.py: compiled app.py -> __pycache__/app.[PYTHON].pyc
          build | build.py: compiled buildinfo.py -> __pycache__/buildinfo.[PYTHON].pyc
          build | build.py: compiled release.py -> __pycache__/release.[PYTHON].pyc
          build | build.py: compiled worker.py -> __pycache__/worker.[PYTHON].pyc
          build | build.py: built hello at commit [C1] (build date 2026-01-01 00:00:00 UTC)
        storing 16 files, [SIZE]
        ");
    let builds = graven.builds();
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0]["commit"], repo.git(&["rev-parse", "HEAD"]).trim());
}

#[test]
fn builds_lists_builds_newest_first() {
    let repo = shell_app("[build]\ncommand = \"echo one > one.txt\"\n");
    let graven = Graven::in_repo(&repo);
    assert_eq!(graven.run(["build"]).code, 0);
    repo.write("two.txt", "two\n");
    repo.commit("Two");
    assert_eq!(graven.run(["build"]).code, 0);
    let run = graven.run(["builds"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        ARTIFACT             COMMIT   FILES  SIZE  BUILT     BY
        [DIGEST]  [C2]  5      92 B  just now  dev@example.com
        [DIGEST]  [C1]  4      88 B  just now  dev@example.com
        ----- stderr -----
        ");
}

#[test]
fn builds_json_keeps_the_design_field_names() {
    let repo = shell_app("[build]\ncommand = \"echo one > one.txt\"\n");
    let graven = Graven::in_repo(&repo);
    assert_eq!(graven.run(["build"]).code, 0);
    repo.write("two.txt", "two\n");
    let second = repo.commit("Two");
    assert_eq!(graven.run(["build"]).code, 0);

    let run = graven.run(["builds", "--json"]);
    insta::assert_snapshot!(run, @r#"
        exit code: 0
        ----- stdout -----
        [
          {
            "artifact": "[DIGEST]",
            "commit": "[C2]",
            "dirty": false,
            "sandboxed": true,
            "files": 5,
            "bytes": 92,
            "new_bytes": 859,
            "reused": false,
            "duration_ms": [MS],
            "build_command_ms": [MS],
            "ingest_ms": [MS],
            "app": "shell",
            "recipe": "[DIGEST]",
            "author": "dev@example.com",
            "host": "[HOST]",
            "started_at": "[TIME]",
            "finished_at": "[TIME]",
            "collected": false
          },
          {
            "artifact": "[DIGEST]",
            "commit": "[C1]",
            "dirty": false,
            "sandboxed": true,
            "files": 4,
            "bytes": 88,
            "new_bytes": 804,
            "reused": false,
            "duration_ms": [MS],
            "build_command_ms": [MS],
            "ingest_ms": [MS],
            "app": "shell",
            "recipe": "[DIGEST]",
            "author": "dev@example.com",
            "host": "[HOST]",
            "started_at": "[TIME]",
            "finished_at": "[TIME]",
            "collected": false
          }
        ]
        ----- stderr -----
        "#);
    let builds = run.json();
    let builds = builds.as_array().expect("an array");
    assert_eq!(builds.len(), 2);
    for build in builds {
        assert_build_shape(build);
        assert_eq!(build["reused"], false);
    }
    assert_eq!(builds[0]["commit"], second, "newest first");
}

#[test]
fn build_json_keeps_the_design_field_names() {
    let repo = shell_app("[build]\ncommand = \"echo one > one.txt\"\n");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build", "--json"]);
    insta::assert_snapshot!(run, @r#"
        exit code: 0
        ----- stdout -----
        {
          "artifact": "[DIGEST]",
          "commit": "[C1]",
          "dirty": false,
          "sandboxed": true,
          "files": 4,
          "bytes": 88,
          "new_bytes": 804,
          "new_manifest_bytes": 716,
          "reused": false,
          "duration_ms": [MS],
          "build_command_ms": [MS],
          "ingest_ms": [MS],
          "app": "shell",
          "recipe": "[DIGEST]",
          "author": "dev@example.com",
          "host": "[HOST]",
          "started_at": "[TIME]",
          "finished_at": "[TIME]",
          "host_references": []
        }
        ----- stderr -----
        exporting [C1]
        running `echo one > one.txt`
        storing 4 files, 88 B
        "#);
    let build = run.json();
    assert_build_shape(&build);
    assert_eq!(build["reused"], false);
    assert_eq!(build["dirty"], false);
    assert_eq!(graven.builds()[0]["artifact"], build["artifact"]);
}

#[test]
fn builds_with_no_builds_yet() {
    let repo = shell_app("");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["builds"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        ----- stderr -----
        app 'shell' has no builds yet; run `graven build` in its repository
        ");
    graven.assert_no_builds();
}

#[test]
fn a_second_build_reuses_the_artifact() {
    let repo = TestRepo::hello();
    let graven = Graven::in_repo(&repo).label_python().hide_sizes();
    let first = graven.build_json::<&str>([]);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        reused [DIGEST] from [C1]: built just now by dev@example.com; --force builds again
        ----- stderr -----
        ");

    let again = graven.build_json::<&str>([]);
    assert_eq!(again["reused"], true);
    assert_eq!(again["artifact"], first["artifact"]);
    assert_eq!(again["new_bytes"], 0);
    assert_eq!(graven.builds().len(), 1, "a reused build is not recorded again");
}

#[test]
fn force_builds_again_into_the_same_artifact() {
    let repo = TestRepo::hello();
    let graven = Graven::in_repo(&repo).label_python().hide_sizes();
    let first = graven.build_json::<&str>([]);
    let run = graven.run(["build", "--force"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        built [DIGEST] from [C1] — 16 files, [SIZE], [SIZE] new
        ----- stderr -----
        exporting [C1]
        running `python3 build.py`
          build | build.py: compiled app.py -> __pycache__/app.[PYTHON].pyc
          build | build.py: compiled buildinfo.py -> __pycache__/buildinfo.[PYTHON].pyc
          build | build.py: compiled release.py -> __pycache__/release.[PYTHON].pyc
          build | build.py: compiled worker.py -> __pycache__/worker.[PYTHON].pyc
          build | build.py: built hello at commit [C1] (build date 2026-01-01 00:00:00 UTC)
        storing 16 files, [SIZE]
        ");

    let builds = graven.builds();
    assert_eq!(builds.len(), 2, "--force records a new build");
    assert_eq!(builds[0]["artifact"], first["artifact"], "the example's build is deterministic");
    assert_eq!(builds[0]["reused"], false);
    assert_eq!(builds[0]["new_bytes"], 0, "every file was already stored");
}

#[test]
fn build_an_older_commit_by_rev() {
    let repo = shell_app("[build]\ncommand = \"echo $GRAVEN_COMMIT > commit.txt\"\n");
    let first = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    repo.git(&["tag", "v1"]);
    repo.write("later.txt", "later\n");
    repo.commit("Later");
    let graven = Graven::in_repo(&repo);

    let run = graven.run(["build", "HEAD~1"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        built [DIGEST] from [C1] — 4 files, 139 B, 859 B new
        ----- stderr -----
        exporting [C1]
        running `echo $GRAVEN_COMMIT > commit.txt`
        storing 4 files, 139 B
        ");
    let by_tag = graven.build_json(["v1"]);
    assert_eq!((&by_tag["commit"], &by_tag["reused"]), (&first.clone().into(), &true.into()));
    let by_hash = graven.build_json([&first[..10]]);
    assert_eq!((&by_hash["commit"], &by_hash["reused"]), (&first.clone().into(), &true.into()));

    let artifact = graven.unpack(&first);
    let built = std::fs::read_to_string(artifact.path().join("tree/commit.txt")).unwrap();
    assert_eq!(built.trim(), first, "the build ran on the older commit");
    assert!(!artifact.path().join("tree/later.txt").exists());
}

#[test]
fn a_dirty_tree_is_refused_listing_the_paths() {
    let repo = shell_app("");
    repo.write("app.sh", "echo hello\n");
    repo.commit("An app");
    repo.write("app.sh", "echo changed\n");
    for n in 1..=11 {
        repo.write(&format!("new/file-{n:02}.txt"), "new\n");
    }
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: the working tree has uncommitted changes:
          app.sh
          new/file-01.txt
          new/file-02.txt
          new/file-03.txt
          new/file-04.txt
          new/file-05.txt
          new/file-06.txt
          new/file-07.txt
          new/file-08.txt
          new/file-09.txt
          … and 2 more
        hint: commit or stash the changes, or add them to .gitignore; or build them anyway with --allow-dirty (the build is then marked dirty for good)
        ");
    graven.assert_no_builds();
}

#[test]
fn allow_dirty_builds_the_changes_and_marks_the_build_dirty() {
    let repo = shell_app("");
    repo.write("app.sh", "echo hello\n");
    repo.commit("An app");
    repo.write("app.sh", "echo changed\n");
    repo.write("untracked.txt", "new\n");
    let graven = Graven::in_repo(&repo);

    let run = graven.run(["build", "--allow-dirty"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        built [DIGEST] from [C2] (dirty) — 5 files, 62 B, 923 B new
        ----- stderr -----
        exporting working tree
        storing 5 files, 62 B
        ");
    let builds = graven.builds();
    assert_eq!(builds[0]["dirty"], true);
    let artifact = builds[0]["artifact"].as_str().unwrap().to_owned();
    let tree = graven.unpack(&artifact);
    assert_eq!(std::fs::read_to_string(tree.path().join("tree/app.sh")).unwrap(), "echo changed\n");
    assert_eq!(std::fs::read_to_string(tree.path().join("tree/untracked.txt")).unwrap(), "new\n");
    assert_eq!(repo.git(&["status", "--porcelain"]), " M app.sh\n?? untracked.txt\n", "the tree is untouched");

    let run = graven.run(["builds"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        ARTIFACT             COMMIT         FILES  SIZE  BUILT     BY
        [DIGEST]  [C2]+dirty  5      62 B  just now  dev@example.com
        ----- stderr -----
        ");

    // A dirty build is never reused for its commit.
    repo.git(&["stash", "--include-untracked", "--", "app.sh", "untracked.txt"]);
    let clean = graven.build_json::<&str>([]);
    assert_eq!((&clean["dirty"], &clean["reused"]), (&false.into(), &false.into()));
    assert_ne!(clean["artifact"], artifact);
}

#[test]
fn the_home_in_the_repo_never_makes_the_tree_dirty() {
    // The repository does not ignore .graven/: graven must leave it out on
    // its own, both from the dirty check and from a dirty build's snapshot.
    let repo = TestRepo::new();
    repo.write("Procfile", "web: ./serve\n");
    repo.commit("An app that does not ignore .graven/");
    let graven = Graven::in_repo(&repo);
    assert_eq!(graven.run(["build"]).code, 0);
    assert_eq!(repo.git(&["status", "--porcelain"]), "?? .graven/\n");
    let run = graven.run(["build", "--force"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        built [DIGEST] from [C1] — 1 file, 13 B, 0 B new
        ----- stderr -----
        exporting [C1]
        storing 1 file, 13 B
        ");

    repo.write("untracked.txt", "new\n");
    let dirty = graven.build_json(["--allow-dirty"]);
    assert_eq!(dirty["files"], 2, "Procfile and untracked.txt; nothing from .graven/");
}

#[test]
fn export_ignore_is_honoured_and_untracked_files_are_left_out() {
    let repo = shell_app("[build]\ncommand = \"find . -type f ! -name files.txt | LC_ALL=C sort > files.txt\"\n");
    repo.write(".gitattributes", "secret-notes.md export-ignore\ndocs/** export-ignore\n");
    repo.write("secret-notes.md", "not for the artifact\n");
    repo.write("docs/guide.md", "not for the artifact either\n");
    repo.write("app.sh", "echo hello\n");
    repo.write(".gitignore", "/.graven/\n/scratch.txt\n");
    repo.commit("Notes and docs");
    repo.write("scratch.txt", "ignored and untracked\n");
    let graven = Graven::in_repo(&repo);
    assert_eq!(graven.run(["build"]).code, 0);

    let tree = graven.unpack("HEAD");
    let files = std::fs::read_to_string(tree.path().join("tree/files.txt")).unwrap();
    insta::assert_snapshot!(files, @r"
        ./.gitattributes
        ./.gitignore
        ./Procfile
        ./app.sh
        ./graven.toml
        ");
}

#[test]
fn check_reproducible_names_the_paths_that_differ() {
    let repo = shell_app("[build]\ncommand = \"echo same > same.txt; date +%s%N > stamp.txt\"\n");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build", "--check-reproducible"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("building again to check that the build is reproducible"), "{run}");
    assert!(
        run.stderr.contains(
            "error: the build is not reproducible: 1 path differs between two builds of the same commit:\n  stamp.txt: "
        ),
        "{run}"
    );
    // What differs, not a guess at why: the clock's digits.
    assert!(run.stderr.contains("first difference at byte "), "{run}");
    assert!(run.stderr.contains("hint: look at the bytes named"), "{run}");
    graven.assert_no_builds();
}

#[test]
fn output_and_exclude_choose_what_becomes_the_artifact() {
    let repo = shell_app(
        "[build]\ncommand = \"mkdir -p dist/assets && echo '<h1>hi</h1>' > dist/index.html && echo x > dist/assets/app.js.map && echo y > dist/notes.md\"\noutput = \"dist/\"\nexclude = [\"*.map\", \"notes.md\"]\n",
    );
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        built [DIGEST] from [C1] — 1 file, 12 B, 430 B new
        ----- stderr -----
        exporting [C1]
        running `mkdir -p dist/assets && echo '<h1>hi</h1>' > dist/index.html && echo x > dist/assets/app.js.map && echo y > dist/notes.md`
        storing 1 file, 12 B
        ");
    let tree = graven.unpack("HEAD");
    let mut names: Vec<String> = walk(&tree.path().join("tree"));
    names.sort();
    assert_eq!(names, ["assets/", "index.html"]);
}

/// Every path under `root`, directories with a trailing `/`.
fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.push(format!("{name}/"));
            out.extend(walk(&entry.path()).into_iter().map(|child| format!("{name}/{child}")));
        } else {
            out.push(name);
        }
    }
    out
}

#[test]
fn builds_show_gives_the_record_and_the_build_log() {
    let repo = shell_app("[build]\ncommand = \"echo compiling; echo warning: careful >&2; echo done > out.txt\"\n");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let run = graven.run(["builds", "show", "HEAD"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.ends_with("build command output:\n  | compiling\n  | warning: careful\n"), "{run}");
    let json = graven.run(["builds", "show", "HEAD", "--json"]).json();
    assert_eq!(json["log"], "compiling\nwarning: careful\n");
    assert_eq!(json["collected"], false);
    assert_eq!(graven.run(["builds", "show", "nope"]).code, 2);
}

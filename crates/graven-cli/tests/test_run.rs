//! The run stage's ground: release trees laid out read-only from the store,
//! `graven exec` in a release's environment, and `graven verify --env` for
//! drift.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use crate::common::{Graven, shell_app};

/// A released shell app with a config; returns the tree's future path.
fn released() -> (graven_testutils::TestRepo, Graven, PathBuf) {
    let repo = shell_app(
        "[build]\ncommand = \"mkdir -p bin && printf '#!/bin/sh\\\\necho hi\\\\n' > bin/hi && chmod +x bin/hi\"\n",
    );
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    graven.run(["config", "set", "GREETING=hello", "--env", "production"]);
    let run = graven.run(["release", "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");
    let tree = repo.path().join(".graven/releases/shell/production/v1");
    (repo, graven, tree)
}

#[test]
fn exec_runs_in_the_read_only_tree_with_only_the_release_environment() {
    let (_repo, graven, tree) = released();
    let graven = graven.env("DATABASE_URL", "from-the-shell");
    let run = graven.run([
        "exec",
        "--env",
        "production",
        "--",
        "sh",
        "-c",
        "pwd; env | cut -d= -f1 | sort | tr '\\n' ' '; echo",
    ]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        /app
        GRAVEN_APP GRAVEN_ARTIFACT GRAVEN_COMMIT GRAVEN_ENV GRAVEN_PROCESS GRAVEN_RELEASE GREETING HOME PATH PWD TMPDIR
        ----- stderr -----
        ");
    for (path, mode) in [("Procfile", 0o444), ("bin", 0o555), ("bin/hi", 0o555), ("", 0o555)] {
        let meta = std::fs::symlink_metadata(tree.join(path)).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode, "{path}");
        assert_eq!(meta.mtime(), 1, "{path} has the normalised mtime");
    }
    assert!(std::fs::metadata(tree.join("Procfile")).unwrap().nlink() >= 2, "a hard link to the store's blob");
    let run = graven.run([
        "exec",
        "--env",
        "production",
        "--",
        "sh",
        "-c",
        "echo $GREETING $GRAVEN_RELEASE $GRAVEN_PROCESS; ./bin/hi",
    ]);
    assert_eq!(run.stdout, "hello v1 run.1\nhi\n");
}

#[test]
fn not_even_root_can_change_the_code_it_runs_or_the_store_behind_it() {
    let (_repo, graven, tree) = released();
    assert_eq!(graven.run(["exec", "--env", "production", "--", "true"]).code, 0, "lay the tree out");
    let procfile = tree.join("Procfile");
    let before = std::fs::read(&procfile).unwrap();
    let store = graven.cwd().join(".graven/store");
    for attack in [
        "echo x >> Procfile",
        "chmod 777 Procfile",
        "rm Procfile",
        "touch new-file",
        "mount -o remount,rw /app",
        &format!("chmod -R u+w '{0}' && echo x >> \"$(find '{0}/blobs' -type f | head -n 1)\"", store.display()),
        &format!("echo x >> '{}'", procfile.display()),
    ] {
        let run = graven.run(["exec", "--env", "production", "--", "sh", "-c", attack]);
        assert_ne!(run.code, 0, "`{attack}` succeeded: {run}");
        assert!(
            run.stderr.contains("Read-only file system") || run.stderr.contains("permission denied"),
            "`{attack}`: {run}"
        );
    }
    assert_eq!(std::fs::read(&procfile).unwrap(), before);
    let run = graven.run(["verify", "HEAD"]);
    assert_eq!(run.code, 0, "the store was changed: {run}");
    // Without the sandbox, as before it: the tree is where it lies.
    let run = graven.run(["exec", "--no-sandbox", "--env", "production", "--", "pwd"]);
    assert_eq!(run.stdout.trim(), tree.display().to_string(), "{run}");
}

#[test]
fn processes_have_a_writable_home_of_their_environment_kept_across_releases() {
    let (repo, graven, _tree) = released();
    let run = graven.run(["exec", "--env", "production", "--", "sh", "-c", "echo kept > \"$HOME/note\" && echo $HOME"]);
    assert_eq!(run.code, 0, "{run}");
    let home = repo.path().join(".graven/run/shell/production/home");
    assert_eq!(run.stdout.trim(), home.display().to_string());
    assert_eq!(std::fs::metadata(&home).unwrap().mode() & 0o777, 0o700);
    graven.run(["config", "set", "GREETING=changed", "--env", "production"]);
    let run = graven.run(["exec", "--env", "production", "--", "sh", "-c", "cat \"$HOME/note\"; echo $GRAVEN_RELEASE"]);
    assert_eq!(run.stdout, "kept\nv2\n", "{run}");
}

#[test]
fn exec_passes_the_exit_code_through_and_picks_a_release() {
    let (_repo, graven, _tree) = released();
    assert_eq!(graven.run(["exec", "--env", "production", "--", "sh", "-c", "exit 7"]).code, 7);
    graven.run(["config", "set", "GREETING=changed", "--env", "production"]);
    let run = graven.run(["exec", "--env", "production", "--release", "v1", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!(run.stdout, "hello\n");
    let run = graven.run(["exec", "--env", "production", "--", "sh", "-c", "echo $GREETING $GRAVEN_RELEASE"]);
    assert_eq!(run.stdout, "changed v2\n");
    insta::assert_snapshot!(graven.run(["exec", "--env", "production", "--", "no-such-program"]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: could not run no-such-program: No such file or directory (os error 2)
        hint: the command runs with the release's PATH; give a program that is on it, or its path
        ");
    insta::assert_snapshot!(graven.run(["exec", "--env", "staging", "--", "true"]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: environment 'staging' has no release yet
        hint: release a build first: graven release --env staging
        ");
}

#[test]
fn verify_env_reports_every_kind_of_drift() {
    let (_repo, graven, tree) = released();
    assert_eq!(graven.run(["exec", "--env", "production", "--", "true"]).code, 0);
    let run = graven.run(["verify", "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");

    // Behind graven's back: a file edited, a file removed, a file added.
    let chmod = |path: &PathBuf, mode: u32| {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    };
    chmod(&tree.join("Procfile"), 0o644);
    std::fs::write(tree.join("Procfile"), "web: ./evil\n").unwrap();
    chmod(&tree.join("bin"), 0o755);
    std::fs::remove_file(tree.join("bin/hi")).unwrap();
    chmod(&tree, 0o755);
    std::fs::write(tree.join("extra.txt"), "x").unwrap();
    chmod(&tree, 0o555);
    insta::assert_snapshot!(graven.run(["verify", "--env", "production"]), @r"
        exit code: 1
        ----- stdout -----
        mode     Procfile is 0644, not 0444
        changed  Procfile
        mode     bin is 0755, not 0555
        missing  bin/hi
        extra    extra.txt
        ----- stderr -----
        error: v1 of production has drifted from artifact [DIGEST]: 5 differences found
        hint: release files are hard links to the store's copies, so an edit in place may have changed the store too (graven verify [C1] tells); rebuild the commit with graven build --force if so, then remove [TEMP]/.graven/releases/shell/production/v1 so that it is laid out again
        ");
    let run = graven.run(["verify", "--env", "production", "--json"]);
    assert_eq!(run.code, 1, "{run}");
    let json = run.json();
    assert_eq!((json["drift"].as_bool(), json["release"]["version"].as_str()), (Some(true), Some("v1")));
    assert_eq!(json["tree"].as_str(), tree.to_str());
    assert_eq!(
        json["differences"],
        serde_json::json!([
            {"path": "Procfile", "problem": "mode", "found": "0644", "expected": "0444"},
            {"path": "Procfile", "problem": "changed"},
            {"path": "bin", "problem": "mode", "found": "0755", "expected": "0555"},
            {"path": "bin/hi", "problem": "missing"},
            {"path": "extra.txt", "problem": "extra"},
        ])
    );
}

#[test]
fn a_tree_is_never_laid_out_from_missing_blobs() {
    let (repo, graven, tree) = released();
    let blobs = repo.path().join(".graven/store/blobs");
    for shard in std::fs::read_dir(blobs.join("sha256")).unwrap() {
        for blob in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            std::fs::remove_file(blob.unwrap().path()).unwrap();
        }
    }
    let run = graven.run(["exec", "--env", "production", "--", "true"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.to_string().contains("is not in the store"), "{run}");
    assert!(!tree.exists(), "no half-made tree");
    let leftovers: Vec<_> = std::fs::read_dir(tree.parent().unwrap()).unwrap().collect();
    assert!(leftovers.is_empty(), "no temporary tree: {leftovers:?}");
}

#[test]
fn two_apps_sharing_a_home_have_their_own_trees() {
    let shared = tempfile::tempdir().unwrap();
    let mut pwds = Vec::new();
    for (name, file) in [("alpha", "a.txt"), ("beta", "b.txt")] {
        let repo = graven_testutils::TestRepo::new();
        repo.write("Procfile", "web: true\n");
        repo.write("graven.toml", format!("[app]\nname = \"{name}\"\n"));
        repo.write(file, name);
        repo.commit("An app");
        let graven = Graven::in_repo(&repo).env("GRAVEN_HOME", shared.path());
        graven.build_json::<&str>([]);
        let run = graven.run(["release", "--env", "production"]);
        assert_eq!(run.code, 0, "{run}");
        let run = graven.run(["exec", "--env", "production", "--", "sh", "-c", "pwd; ls"]);
        assert_eq!(run.code, 0, "{run}");
        pwds.push(run.stdout);
    }
    // Each at /app, and each its own tree there.
    assert_eq!(
        pwds,
        ["/app\nProcfile\na.txt\ngraven.toml\n".to_owned(), "/app\nProcfile\nb.txt\ngraven.toml\n".to_owned(),]
    );
}

//! `graven init`: a commented graven.toml, and graven's home ignored by git.

use graven_testutils::TestRepo;

use crate::common::Graven;

#[test]
fn init_writes_graven_toml_and_ignores_the_home() {
    let repo = TestRepo::new();
    repo.write("Procfile", "web: ./serve\nworker: ./work\nrelease: ./migrate\n");
    repo.write("Makefile", "all:\n\ttrue\n");
    repo.write(".gitignore", "/target");
    let graven = Graven::in_repo(&repo).label(&app_name(&repo), "[APP]");
    let run = graven.run(["init"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        wrote graven.toml for app '[APP]'
        added /.graven/ to .gitignore
        ----- stderr -----
        next: review graven.toml, commit it, and run graven build
        ");
    let toml = std::fs::read_to_string(repo.path().join("graven.toml")).unwrap();
    insta::assert_snapshot!(graven.relabel(&toml), @r#"
        # graven.toml: how graven builds and runs this app. Every setting is optional.

        [app]
        # The app's name in the ledger: a lowercase letter, then a-z, 0-9 and '-'.
        name = "[APP]"

        [build]
        # Run with `sh -c` in a clean export of the commit (no .git, nothing untracked),
        # with only PATH, HOME, LANG, TMPDIR, SOURCE_DATE_EPOCH (the commit time),
        # GRAVEN_COMMIT and what `env` and `pass_env` name: no runtime config.
        # Suggested because of Makefile; check it before you commit:
        command = "make"
        # The directory that becomes the artifact (default: the whole checkout).
        # output = "dist"
        # Paths left out of the artifact; a glob without '/' matches at any depth.
        # exclude = ["*.md", "tests/**"]
        # Variables for the build command, and variables let through from your shell.
        # env = { NODE_ENV = "production" }
        # pass_env = ["CI"]

        [run]
        # Process types from the Procfile: web, worker.
        # `release` runs once per release, before the new processes start.
        # An HTTP path that answers 2xx once a web process is ready.
        # health = "/healthz"
        "#);
    let ignore = std::fs::read_to_string(repo.path().join(".gitignore")).unwrap();
    insta::assert_snapshot!(ignore, @r"
        /target
        # graven's ledger and store
        /.graven/
        ");

    // What init wrote is what build reads.
    repo.commit("graven init");
    let build = graven.build_json::<&str>([]);
    assert_eq!(build["dirty"], false, ".graven/ is ignored");
}

#[test]
fn init_twice_is_refused() {
    let repo = TestRepo::new();
    repo.write("Procfile", "web: ./serve\n");
    let graven = Graven::in_repo(&repo);
    assert_eq!(graven.run(["--app", "shop", "init"]).code, 0);
    let toml = std::fs::read_to_string(repo.path().join("graven.toml")).unwrap();
    let ignore = std::fs::read_to_string(repo.path().join(".gitignore")).unwrap();

    let run = graven.run(["init"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: [TEMP]/graven.toml already exists
        hint: edit it, or remove it and run graven init again
        ");
    assert_eq!(std::fs::read_to_string(repo.path().join("graven.toml")).unwrap(), toml, "graven.toml is unchanged");
    assert_eq!(std::fs::read_to_string(repo.path().join(".gitignore")).unwrap(), ignore, "unchanged");
    assert_eq!(ignore.matches("/.graven/").count(), 1, "{ignore}");
}

#[test]
fn init_keeps_an_existing_ignore_entry_and_notes_a_missing_procfile() {
    let repo = TestRepo::new();
    repo.write(".gitignore", "node_modules/\n.graven/\n");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["--app", "shop", "init"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        wrote graven.toml for app 'shop'
        ----- stderr -----
        note: there is no Procfile yet; add one (like `web: python3 app.py`) before graven build
        next: review graven.toml, commit it, and run graven build
        ");
    let ignore = std::fs::read_to_string(repo.path().join(".gitignore")).unwrap();
    assert_eq!(ignore, "node_modules/\n.graven/\n");
}

#[test]
fn init_outside_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let graven = Graven::in_dir(dir.path());
    let run = graven.run(["init"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: [TEMP] is not inside a git repository, and no graven home was given
        hint: run graven inside your app's repository, or pass --home DIR (or set GRAVEN_HOME)
        ");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
}

/// The app name init derives from the repository's directory.
fn app_name(repo: &TestRepo) -> String {
    graven::app::app_name_from_directory(&repo.path().file_name().unwrap().to_string_lossy())
}

//! `graven build` on bad input and failed operations: each error names the
//! input and the fix, exits 2 for bad input and 1 for a failed operation,
//! and records nothing.

use graven_testutils::TestRepo;

use crate::common::{Graven, shell_app};

#[test]
fn not_a_git_repository() {
    let dir = tempfile::tempdir().unwrap();
    let graven = Graven::in_dir(dir.path());
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: [TEMP] is not inside a git repository, and no graven home was given
        hint: run graven inside your app's repository, or pass --home DIR (or set GRAVEN_HOME)
        ");
    let run = graven.run(["build", "--home", ".graven"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: this command needs a git repository, and the current directory is not inside one
        hint: run it inside your app's repository
        ");
    assert!(!dir.path().join(".graven").exists(), "nothing was created");
}

#[test]
fn a_repository_without_commits() {
    let repo = TestRepo::new();
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: the repository at [TEMP] has no commits yet
        hint: commit your app first: graven builds commits
        ");
    graven.assert_nothing_recorded();
}

#[test]
fn an_unknown_rev() {
    let repo = shell_app("");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build", "no-such-branch"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: 'no-such-branch' does not name a commit in this repository
        hint: give a commit, branch or tag that `git rev-parse` knows
        ");
    let run = graven.run(["build", "--", "--upload-pack=touch pwned"]);
    assert_eq!(run.code, 2, "{run}");
    assert!(!repo.path().join("pwned").exists());
    graven.assert_nothing_recorded();
}

#[test]
fn a_missing_procfile() {
    let repo = TestRepo::new();
    repo.write("app.sh", "echo hello\n");
    repo.write(".gitignore", "/.graven/\n");
    repo.commit("No Procfile");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: commit [C1] has no Procfile at the root of the repository
        hint: add a Procfile with one line per process type, like `web: python3 app.py`, and commit it
        ");
    graven.assert_nothing_recorded();
}

#[test]
fn a_malformed_procfile() {
    let repo = shell_app("");
    repo.write("Procfile", "# processes\nweb: ./serve\nWorker: ./work\n");
    repo.commit("A bad process name");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: Procfile line 3, column 1: process name 'Worker' has 'W': names use only a-z, 0-9, '_' and '-'
        hint: fix the Procfile and commit it
        ");
    graven.assert_nothing_recorded();
}

#[test]
fn a_malformed_graven_toml() {
    let repo = shell_app("[build]\ncommand = \"make\"\noutput = 3\n");
    // `graven builds` reads the app's name from graven.toml, so it too
    // refuses a malformed one: name the app instead.
    let graven = Graven::in_repo(&repo).env("GRAVEN_APP", "shell");
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: graven.toml line 6, column 10: invalid type: integer `3`, expected a string
        hint: fix graven.toml and commit it
        ");

    repo.write("graven.toml", "[build]\ncomand = \"make\"\n");
    repo.commit("A misspelt key");
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: graven.toml line 2, column 1: unknown field `comand`, expected one of `command`, `output`, `exclude`, `env`, `pass_env`, `network`, `cache`
        hint: fix graven.toml and commit it
        ");
    graven.assert_nothing_recorded();
}

#[test]
fn a_failing_build_command_shows_its_last_lines() {
    let repo = shell_app(
        "[build]\ncommand = \"for n in $(seq 1 30); do echo step $n; done; echo 'oops: no such thing' >&2; exit 3\"\n",
    );
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 1
        ----- stdout -----
        ----- stderr -----
        exporting [C1]
        running `for n in $(seq 1 30); do echo step $n; done; echo 'oops: no such thing' >&2; exit 3`
          build | step 1
          build | step 2
          build | step 3
          build | step 4
          build | step 5
          build | step 6
          build | step 7
          build | step 8
          build | step 9
          build | step 10
          build | step 11
          build | step 12
          build | step 13
          build | step 14
          build | step 15
          build | step 16
          build | step 17
          build | step 18
          build | step 19
          build | step 20
          build | step 21
          build | step 22
          build | step 23
          build | step 24
          build | step 25
          build | step 26
          build | step 27
          build | step 28
          build | step 29
          build | step 30
          build | oops: no such thing
        error: the build command `for n in $(seq 1 30); do echo step $n; done; echo 'oops: no such thing' >&2; exit 3` failed (exit code 3)
        its last 20 lines of output:
          | step 12
          | step 13
          | step 14
          | step 15
          | step 16
          | step 17
          | step 18
          | step 19
          | step 20
          | step 21
          | step 22
          | step 23
          | step 24
          | step 25
          | step 26
          | step 27
          | step 28
          | step 29
          | step 30
          | oops: no such thing
        hint: nothing was stored; fix the build and run graven build again
        ");
    graven.assert_nothing_recorded();
}

#[test]
fn a_missing_build_command() {
    let repo = shell_app("[build]\ncommand = \"compile-my-app --release\"\n");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 1
        ----- stdout -----
        ----- stderr -----
        exporting [C1]
        running `compile-my-app --release`
          build | sh: 1: compile-my-app: not found
        error: the build command `compile-my-app --release` failed (exit code 127: command not found)
        its last line of output:
          | sh: 1: compile-my-app: not found
        hint: the build runs with a scrubbed environment: only PATH, HOME, LANG, TMPDIR, SOURCE_DATE_EPOCH, GRAVEN_COMMIT and what [build] env and pass_env name
        hint: nothing was stored; fix the build and run graven build again
        ");
    graven.assert_nothing_recorded();
}

#[test]
fn a_missing_output_directory() {
    let repo = shell_app("[build]\ncommand = \"mkdir -p dsit && echo built > dsit/app\"\noutput = \"dist\"\n");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        exporting [C1]
        running `mkdir -p dsit && echo built > dsit/app`
        error: the build output directory 'dist' does not exist after the build
        hint: make the build command create it, or fix [build] output in graven.toml
        ");
    graven.assert_nothing_recorded();
}

#[test]
fn relative_symlinks_inside_the_output_are_kept() {
    let repo = shell_app(
        "[build]\ncommand = \"mkdir -p lib/v1 && echo 1 > lib/v1/a && ln -s v1 lib/current && ln -s lib/current/a a && ln -s ../lib lib/v1/loop\"\n",
    );
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    assert_eq!(run.code, 0, "{run}");
    let tree = graven.unpack("HEAD");
    assert_eq!(std::fs::read_link(tree.path().join("tree/a")).unwrap().to_str(), Some("lib/current/a"));
    assert_eq!(std::fs::read_to_string(tree.path().join("tree/a")).unwrap(), "1\n");
}

#[test]
fn absolute_and_escaping_symlinks_are_kept_as_host_references() {
    let repo = shell_app(
        "[build]\ncommand = \"mkdir -p lib && ln -s /etc/ssl/certs certs && ln -s ../../secrets lib/config\"\n",
    );
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("2 host references leading out of /app (like certs -> /etc/ssl/certs)"), "{run}");
    let tree = graven.unpack("HEAD");
    assert_eq!(std::fs::read_link(tree.path().join("tree/certs")).unwrap(), std::path::Path::new("/etc/ssl/certs"));
    let show = graven.run(["builds", "show", "HEAD", "--json"]).json();
    assert_eq!(
        show["host_references"],
        serde_json::json!([{"path": "certs", "target": "/etc/ssl/certs"}, {"path": "lib/config", "target": "../../secrets"}])
    );
}

#[test]
fn a_fifo_in_the_output() {
    let repo = shell_app("[build]\ncommand = \"mkdir -p run && mkfifo run/control\"\n");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        exporting [C1]
        running `mkdir -p run && mkfifo run/control`
        error: 'run/control' is a fifo: artifacts hold only files, directories and symlinks, so remove it in the build or add it to [build] exclude
        ");
    graven.assert_nothing_recorded();
}

#[test]
fn a_name_that_is_not_utf8() {
    let repo = shell_app("[build]\ncommand = \"mkdir -p data && touch \\\"data/$(printf 'bad\\\\377name')\\\"\"\n");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    insta::assert_snapshot!(run, @r#"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        exporting [C1]
        running `mkdir -p data && touch "data/$(printf 'bad\377name')"`
        error: 'data/bad�name' has a name that is not valid UTF-8: artifacts hold UTF-8 names only, so rename it in the build
        "#);
    graven.assert_nothing_recorded();
}

#[test]
fn excluded_entries_are_not_refused() {
    // [build] exclude is the way out the errors above suggest.
    let repo = shell_app(
        "[build]\ncommand = \"mkfifo control && ln -s /etc/ssl/certs certs\"\nexclude = [\"control\", \"certs\"]\n",
    );
    let graven = Graven::in_repo(&repo);
    let build = graven.build_json::<&str>([]);
    assert_eq!(build["files"], 3, "Procfile, .gitignore and graven.toml");
}

//! The README's first command: the quickstart builds, releases and runs the
//! example app in a new repository, which is left for the user.

use crate::common::Graven;

#[test]
fn the_quickstart_builds_releases_and_runs_the_example_app() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("hello");
    let graven = Graven::in_dir(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let run = graven.run([
        "quickstart".as_ref(),
        "--dir".as_ref(),
        repo.as_os_str(),
        "--port".as_ref(),
        port.as_ref(),
        "--no-serve".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{run}");
    for step in [
        "==> graven build",
        "==> graven release --env staging",
        "==> graven releases --env staging",
        "==> graven run --env staging",
        "Hello from graven from hello v1 (commit",
        "==> graven status --env staging",
        "in sync       yes",
    ] {
        assert!(run.to_string().contains(step), "the quickstart shows `{step}`:\n{run}");
    }

    // The repository is left in a state the user can go on from.
    let graven = Graven::in_dir(&repo);
    let releases = graven.run(["releases", "--env", "staging", "--json"]).json();
    assert_eq!(releases[0]["version"], "v1");
    let config = graven.run(["config", "--env", "staging", "--json"]).json();
    assert_eq!(config["vars"]["GREETING"], "Hello from graven");
    let run = graven.run(["verify", "HEAD"]);
    assert_eq!(run.code, 0, "{run}");
    let status =
        std::process::Command::new("git").arg("-C").arg(&repo).args(["status", "--porcelain"]).output().unwrap();
    assert!(status.stdout.is_empty(), "the repository is clean: {}", String::from_utf8_lossy(&status.stdout));
}

#[test]
fn the_quickstart_refuses_a_directory_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let graven = Graven::in_dir(dir.path());
    insta::assert_snapshot!(graven.run(["quickstart".as_ref(), "--dir".as_ref(), dir.path().as_os_str()]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: [TEMP] already exists and is not empty
        hint: give a new or empty directory with --dir
        ");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing was written");
}

#[test]
fn the_quickstart_checks_its_port_before_it_builds_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("quickstart");
    let graven = Graven::in_dir(parent.path());
    let run = graven.run(["quickstart".as_ref(), "--port".as_ref(), port.as_ref(), "--dir".as_ref(), dir.as_os_str()]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains(&format!("error: port {port} is not free")), "{run}");
    assert!(run.stderr.contains("--port and a free port"), "{run}");
    assert!(!dir.exists(), "nothing was made before the port was checked");
}

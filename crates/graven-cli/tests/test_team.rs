//! The team backends end to end: homes on one machine stand for CI, a
//! laptop and a server, sharing one PostgreSQL ledger and one S3 bucket
//! (moto's server on loopback), each running the real `graven`.

use std::time::{Duration, Instant};

use crate::common::{Graven, shell_app};

/// A fresh database on the test server: its URL without the password, and
/// the password. `None` outside the README's test command (which starts
/// the server), except under CI, where it fails.
fn team_database() -> Option<(String, String)> {
    let server = graven_testutils::postgres::server()?;
    Some(graven_testutils::postgres::without_password(&graven_testutils::postgres::fresh_database(&server)))
}

/// A fresh bucket on the S3 test server: its `s3://` URL, and the
/// `AWS_*` variables that reach it.
fn team_bucket() -> Option<(String, Vec<(String, String)>)> {
    let endpoint = graven_testutils::s3::server()?;
    let bucket = graven_testutils::s3::fresh_bucket(&endpoint);
    Some((format!("s3://{bucket}/hello"), graven_testutils::s3::env(&endpoint)))
}

/// `graven` in `repo` with `GRAVEN_STORE=url` and the `AWS_*` variables.
fn with_bucket(repo: &graven_testutils::TestRepo, url: &str, aws: &[(String, String)]) -> Graven {
    aws.iter().fold(Graven::in_repo(repo).env("GRAVEN_STORE", url), |graven, (key, value)| graven.env(key, value))
}

#[test]
fn ci_builds_a_person_releases_and_a_server_runs_from_one_postgres_ledger_and_one_bucket() {
    let Some((ledger, password)) = team_database() else { return };
    let Some((store_url, aws)) = team_bucket() else { return };
    let repo = shell_app("");
    repo.write("Procfile", "web: exec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n");
    repo.commit("A web process");
    let team = |home: &std::path::Path| {
        with_bucket(&repo, &store_url, &aws)
            .env("GRAVEN_HOME", home.as_os_str())
            .env("GRAVEN_LEDGER", &ledger)
            .env("PGPASSWORD", &password)
    };
    let (ci_home, laptop_home, server_home) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ci, laptop, server) = (team(ci_home.path()), team(laptop_home.path()), team(server_home.path()));

    // CI builds; a person releases from elsewhere; a server runs it, from
    // an empty local store.
    let build = ci.build_json::<&str>([]);
    assert!(build["upload"]["objects"].as_u64().unwrap() > 0, "nothing was sent: {build:#}");
    // A laptop that never built sees the build in the bucket, not collected.
    let builds = laptop.run(["builds", "--json"]).json();
    assert_eq!(builds[0]["collected"], false, "{builds:#}");
    let run = laptop.run(["release", "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut runner = server
        .command(["run", "--env", "production", "--port", &port])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let wait = |check: &dyn Fn(&serde_json::Value) -> bool| {
        let start = Instant::now();
        loop {
            let status = laptop.run(["status", "--env", "production", "--json"]).json();
            if check(&status) {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "never got there: {status:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let status = wait(&|s| s["in_sync"] == true);
    assert_eq!(status["runner"]["home"], server_home.path().display().to_string(), "the laptop sees the server");
    let body = std::process::Command::new("python3")
        .args(["-c", &format!("import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/Procfile').read().decode())")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&body.stdout).contains("http.server"), "the server does not serve the build");
    assert_eq!(server.run(["verify", "--env", "production"]).code, 0, "the server's tree is not the artifact");

    // A config change from the laptop reaches the server through NOTIFY.
    assert_eq!(laptop.run(["config", "set", "GREETING=hi", "--env", "production"]).code, 0);
    wait(&|s| s["in_sync"] == true && s["running"]["version"] == "v2");
    let releases = ci.run(["releases", "--env", "production", "--json"]).json();
    assert_eq!(releases.as_array().unwrap().len(), 2, "every home sees one history");
    assert_eq!(ci.run(["verify", "--ledger"]).code, 0);

    let pid = rustix::process::Pid::from_raw(i32::try_from(runner.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(runner.wait().unwrap().success());
}

#[test]
fn two_homes_releasing_at_once_get_gapless_numbers() {
    let Some((ledger, password)) = team_database() else { return };
    let repo = shell_app("");
    let store = tempfile::tempdir().unwrap();
    let homes: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let team: Vec<Graven> = homes
        .iter()
        .map(|home| {
            Graven::in_repo(&repo)
                .env("GRAVEN_HOME", home.path().as_os_str())
                .env("GRAVEN_LEDGER", &ledger)
                .env("GRAVEN_STORE", format!("file:{}", store.path().display()))
                .env("PGPASSWORD", &password)
        })
        .collect();
    team[0].build_json::<&str>([]);
    assert_eq!(team[0].run(["release", "--env", "production"]).code, 0);
    std::thread::scope(|scope| {
        for (n, graven) in team.iter().enumerate() {
            scope.spawn(move || {
                for k in 0..5 {
                    let run = graven.run(["config", "set", &format!("K{n}={k}"), "--env", "production"]);
                    assert_eq!(run.code, 0, "{run}");
                }
            });
        }
    });
    let releases = team[1].run(["releases", "--env", "production", "--json"]).json();
    let numbers: Vec<u64> = releases.as_array().unwrap().iter().rev().map(|r| r["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=11).collect::<Vec<_>>());
    assert_eq!(team[1].run(["verify", "--ledger"]).code, 0);
}

#[test]
fn a_ledger_that_cannot_be_reached_is_a_clear_error_without_the_password() {
    let Some((ledger, password)) = team_database() else { return };
    let repo = shell_app("");
    // The password from ~/.pgpass, as libpq reads it (HOME is the harness's
    // own temporary directory).
    let graven = Graven::in_repo(&repo).env("GRAVEN_LEDGER", &ledger);
    let run = graven.run(["releases", "--env", "production"]);
    assert_eq!(run.code, 1, "no password anywhere: {run}");
    std::fs::write(graven.user_home().join(".pgpass"), format!("*:*:*:postgres:{password}\n")).unwrap();
    let run = graven.run(["releases", "--env", "production"]);
    assert_eq!(run.code, 0, "the password from ~/.pgpass: {run}");
    let wrong = ledger.replacen("postgres@", "postgres:hunter2-wrong@", 1);
    let start = Instant::now();
    let run = Graven::in_repo(&repo).env("GRAVEN_LEDGER", &wrong).run(["releases", "--env", "production"]);
    assert!(start.elapsed() < Duration::from_secs(6));
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("password authentication failed"), "{run}");
    assert!(!run.to_string().contains("hunter2"), "the password was shown:\n{run}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = Instant::now();
    let run = Graven::in_repo(&repo)
        .env("GRAVEN_LEDGER", format!("postgres://ci:hunter2@127.0.0.1:{port}/graven"))
        .run(["releases", "--env", "production"]);
    assert!(start.elapsed() < Duration::from_secs(6));
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains(&format!("the ledger at postgres://ci@127.0.0.1:{port}/graven is unavailable")),
        "{run}"
    );
    assert!(!run.to_string().contains("hunter2"), "the password was shown:\n{run}");
}

#[test]
fn a_runner_keeps_serving_through_a_postgres_restart_and_then_rolls_out_a_newer_release() {
    if team_database().is_none() {
        return;
    }
    let own = graven_testutils::postgres::OwnPostgres::start().expect("PostgreSQL's server programs are installed");
    let repo = shell_app("");
    repo.write("Procfile", "web: exec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n");
    repo.commit("A web process");
    let store = tempfile::tempdir().unwrap();
    let graven = Graven::in_repo(&repo)
        .env("GRAVEN_LEDGER", own.url())
        .env("GRAVEN_STORE", format!("file:{}", store.path().display()));
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut runner = graven
        .command(["run", "--env", "production", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let wait = |what: &str, check: &dyn Fn(&serde_json::Value) -> bool| {
        let start = Instant::now();
        loop {
            let run = graven.run(["status", "--env", "production", "--json"]);
            if run.stdout.starts_with('{') && check(&run.json()) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{what}: {run}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let serves = || {
        use std::io::{Read as _, Write as _};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(stream, "GET / HTTP/1.0\r\n\r\n");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.0 200")
    };
    wait("v1 running", &|s| s["in_sync"] == true);

    // The database goes away under the runner: what runs keeps serving.
    own.pg_ctl("stop");
    std::thread::sleep(Duration::from_millis(500));
    assert!(serves(), "v1 stopped serving while the ledger was down");
    own.pg_ctl("start");

    // A release made after the restart is rolled out.
    assert_eq!(graven.run(["config", "set", "AFTER=restart", "--env", "production"]).code, 0);
    wait("v2 running after the restart", &|s| s["in_sync"] == true && s["running"]["version"] == "v2");
    assert!(serves());
    let pid = rustix::process::Pid::from_raw(i32::try_from(runner.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(runner.wait().unwrap().success());
}

#[test]
fn a_bucket_that_cannot_be_used_is_a_clear_error_within_seconds_that_changes_nothing() {
    let Some((store_url, aws)) = team_bucket() else { return };
    let repo = shell_app("");
    let secret = "graven-test-secret";
    let check = |graven: Graven, expected: &str| {
        let start = Instant::now();
        let run = graven.run(["build"]);
        assert!(start.elapsed() < Duration::from_secs(5), "took {:?}: {run}", start.elapsed());
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stderr.contains(expected), "{run}");
        assert!(!run.to_string().contains(secret), "the secret key was shown:\n{run}");
        graven.assert_no_builds();
    };
    let missing = store_url.replace("graven-test-", "no-such-bucket-");
    check(with_bucket(&repo, &missing, &aws), "does not exist: create it, or fix GRAVEN_STORE");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed = with_bucket(&repo, &store_url, &aws).env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
    check(closed, "cannot be reached: check AWS_ENDPOINT_URL");
    let plain = with_bucket(&repo, &store_url, &aws).env("AWS_ALLOW_HTTP", "false");
    check(plain, "set AWS_ALLOW_HTTP=true");

    // A server that checks credentials, and knows none of ours.
    let Some(strict) = graven_testutils::s3::OwnS3::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]) else { return };
    let denied = with_bucket(&repo, &store_url, &aws).env("AWS_ENDPOINT_URL", &strict.endpoint);
    check(denied, "refused the credentials: check AWS_ACCESS_KEY_ID");
}

#[test]
fn a_build_killed_while_sending_leaves_nothing_that_names_a_missing_object() {
    let Some((store_url, aws)) = team_bucket() else { return };
    let repo = shell_app("");
    let ci = with_bucket(&repo, &store_url, &aws);
    let mut child = ci.spawn_to_fail_point(&["build"], "publish-before-record");
    child.kill().unwrap();
    child.wait().unwrap();
    ci.assert_no_builds();
    let endpoint = graven_testutils::s3::server().unwrap();
    let bucket_name = store_url.trim_start_matches("s3://").split('/').next().unwrap();
    let bucket = graven_testutils::s3::Bucket::new(&endpoint, bucket_name);
    assert!(bucket.keys("hello/artifacts").is_empty(), "a record names what may not be there");
    assert!(!bucket.keys("hello/packs").is_empty(), "nothing was sent before the record");
    // Another machine cannot get it; building again sends only the record.
    let server_home = tempfile::tempdir().unwrap();
    let server = with_bucket(&repo, &store_url, &aws).env("GRAVEN_HOME", server_home.path().as_os_str());
    assert_eq!(server.run(["builds", "--json"]).json(), serde_json::json!([]));
    let build = ci.build_json::<&str>([]);
    assert_eq!(build["upload"]["objects"], 1, "{build:#}");
    assert_eq!(bucket.keys("hello/artifacts").len(), 1);
}

//! `graven run`: the supervisor, end to end, with real processes and real
//! HTTP on loopback. Each test starts a runner in the background and stops
//! it with SIGTERM.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use graven_testutils::TestRepo;

use crate::common::runner::{PATIENCE, Runner, free_port, get, shell_web, wait_for, wait_for_page, wait_for_status};
use crate::common::{Graven, shell_app};

/// The example app, built and released to production.
fn hello() -> (TestRepo, Graven) {
    let repo = TestRepo::hello();
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let run = graven.run(["release", "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");
    (repo, graven)
}

#[test]
fn switches_config_deploy_and_rollback_without_a_failed_request() {
    let (_repo, graven) = hello();
    let port = free_port();
    let mut runner = Runner::start(&graven, port, &[]);
    wait_for_page(port, "hello v1");

    // A client that never stops asking while the releases change.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, served, failed) = (Arc::clone(&stop), Arc::clone(&served), Arc::clone(&failed));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let counter = if get(port, "/?format=text").is_some() { &served } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    assert_eq!(graven.run(["config", "set", "GREETING=Hi", "--env", "production"]).code, 0);
    wait_for_page(port, "Hi from hello v2");
    assert_eq!(graven.run(["rollback", "--env", "production"]).code, 0);
    wait_for_page(port, "Hello from hello v3");
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests ({} served)", served.load(Ordering::Relaxed));
    assert!(served.load(Ordering::Relaxed) > 10);

    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    assert_eq!(status["running"]["version"], "v3");
    let web = status["processes"].as_array().unwrap().iter().find(|p| p["name"] == "web.1").unwrap().clone();
    assert_eq!(web["state"], "up");
    let pid = web["pid"].as_u64().unwrap();

    assert!(runner.terminate().success(), "graven run exits 0 on SIGTERM");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "no process outlives the runner");
    assert!(get(port, "/healthz").is_none(), "the port is closed");
}

#[test]
fn a_failing_release_phase_or_crashing_web_keeps_the_old_release_serving() {
    let (_repo, graven) = hello();
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_page(port, "hello v1");

    // The example's release phase fails with HELLO_FAIL_RELEASE=1.
    assert_eq!(graven.run(["config", "set", "HELLO_FAIL_RELEASE=1", "--env", "production"]).code, 0);
    let status = wait_for_status(&graven, |s| !s["last_failure"].is_null());
    assert_eq!(status["last_failure"]["number"], 2);
    let reason = status["last_failure"]["reason"].as_str().unwrap();
    assert!(reason.contains("release phase"), "{reason}");
    assert_eq!(status["running"]["version"], "v1");
    assert_eq!(status["in_sync"], false);
    wait_for_page(port, "Hello from hello v1");
    assert_eq!(graven.run(["status", "--env", "production"]).code, 1, "status gates scripts");

    // The next release rolls out again.
    assert_eq!(graven.run(["config", "unset", "HELLO_FAIL_RELEASE", "--env", "production"]).code, 0);
    wait_for_page(port, "hello v3");
    wait_for_status(&graven, |s| s["in_sync"] == true);
    assert_eq!(graven.run(["status", "--env", "production"]).code, 0);
}

#[test]
fn a_web_process_that_exits_or_never_listens_is_not_switched_to() {
    let (_repo, graven) = shell_web("health_timeout = 2");
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true);

    assert_eq!(graven.run(["config", "set", "CRASH=1", "--env", "production"]).code, 0);
    let status = wait_for_status(&graven, |s| s["last_failure"]["number"] == 2);
    assert!(status["last_failure"]["reason"].as_str().unwrap().contains("web.1 exited"), "{status:#}");
    assert!(get(port, "/").is_some(), "v1 still serves");

    assert_eq!(graven.run(["config", "set", "HANG=1", "CRASH=", "--env", "production"]).code, 0);
    let status = wait_for_status(&graven, |s| s["last_failure"]["number"] == 3);
    assert!(status["last_failure"]["reason"].as_str().unwrap().contains("within 2 s"), "{status:#}");
    assert!(get(port, "/").is_some(), "v1 still serves");
    assert_eq!(status["running"]["version"], "v1");
}

#[test]
fn a_worker_that_crashes_at_start_fails_its_rollout_and_one_that_crashes_later_is_restarted_with_backoff() {
    let (_repo, graven) = shell_web("settle = 1");
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true);

    // Crashing at once: the rollout sees it, and v1 keeps serving.
    assert_eq!(graven.run(["config", "set", "CRASH_WORKER=0", "--env", "production"]).code, 0);
    let status = wait_for_status(&graven, |s| s["last_failure"]["number"] == 2);
    let reason = status["last_failure"]["reason"].as_str().unwrap();
    // Before the web process was healthy, or while settling: either way
    // before the switch.
    assert!(reason.contains("worker.1 exited"), "{status:#}");
    assert_eq!(status["last_failure"]["cause"], "release", "{status:#}");
    assert_eq!(status["running"]["number"], 1);
    let run = graven.run(["status", "--env", "production"]);
    assert_ne!(run.code, 0, "a failed rollout is not a healthy status: {run}");

    // Crashing after it settled: restarted, with a growing delay.
    assert_eq!(graven.run(["config", "set", "CRASH_WORKER=3", "--env", "production"]).code, 0);
    let status = wait_for_status(&graven, |s| {
        s["running"]["number"] == 3
            && s["processes"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "worker.1" && p["restarts"].as_u64() >= Some(2)))
    });
    let worker = status["processes"].as_array().unwrap().iter().find(|p| p["name"] == "worker.1").unwrap();
    assert!(["restarting", "up"].contains(&worker["state"].as_str().unwrap()), "{worker:#}");
}

/// The `PORT` a process was started with.
fn port_of(pid: u64) -> u16 {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|&byte| byte == 0)
        .find_map(|entry| std::str::from_utf8(entry.strip_prefix(b"PORT=")?).ok()?.parse().ok())
        .expect("a web process has PORT")
}

#[test]
fn a_web_process_that_exits_gets_no_request_until_it_is_back_on_a_port_of_its_own() {
    let (_repo, graven) = shell_web("");
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    let web = |status: &serde_json::Value| {
        status["processes"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == "web.1")).cloned()
    };
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    wait_for(port, "/Procfile", "web:");
    let pid = web(&status).unwrap()["pid"].as_u64().unwrap();
    let old_port = port_of(pid);

    // web.1 dies, and another process takes its port before it is restarted.
    let group = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process_group(group, rustix::process::Signal::KILL).unwrap();
    let start = Instant::now();
    let squatter = loop {
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, old_port)) {
            break listener;
        }
        assert!(start.elapsed() < PATIENCE, "port {old_port} was never freed");
        std::thread::sleep(Duration::from_millis(5));
    };
    squatter.set_nonblocking(true).unwrap();
    wait_for_status(&graven, |s| web(s).is_some_and(|p| p["restarts"] == 1));

    // Until the restart listens (on a new port) the proxy answers 503;
    // then the app again. Not a connection reaches the other process.
    wait_for(port, "/Procfile", "web:");
    let status = wait_for_status(&graven, |s| web(s).is_some_and(|p| p["state"] == "up"));
    assert_ne!(port_of(web(&status).unwrap()["pid"].as_u64().unwrap()), old_port);
    assert!(
        squatter.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a request went to the port web.1 had"
    );
    assert_eq!(status["running"]["number"], 1, "a restart, not a rollout: {status:#}");
}

#[test]
fn the_running_release_is_still_supervised_while_a_rollout_waits() {
    let (_repo, graven) = shell_web("health_timeout = 20");
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    let worker_pid = |status: &serde_json::Value| {
        status["processes"].as_array().unwrap().iter().find(|p| p["name"] == "worker.1").unwrap()["pid"].as_u64()
    };
    let old_worker = worker_pid(&status).unwrap();

    // v2's web never listens: the rollout waits up to 20 s. Meanwhile v1's
    // worker dies, and is restarted without waiting for the rollout.
    assert_eq!(graven.run(["config", "set", "HANG=1", "--env", "production"]).code, 0);
    std::thread::sleep(Duration::from_millis(500));
    let pid = rustix::process::Pid::from_raw(i32::try_from(old_worker).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let status = wait_for_status(&graven, |s| {
        s["processes"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "worker.1" && p["restarts"] == 1 && p["state"] == "up"))
    });
    assert_eq!(status["running"]["number"], 1, "{status:#}");
    assert!(status["last_failure"].is_null(), "v2's rollout is still waiting: {status:#}");
    assert_ne!(worker_pid(&status), Some(old_worker));
    assert!(get(port, "/").is_some(), "v1 serves");
}

#[test]
fn the_new_release_is_reported_while_the_old_one_drains() {
    let (_repo, graven) = shell_web("stop_timeout = 20");
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    let old_web =
        status["processes"].as_array().unwrap().iter().find(|p| p["name"] == "web.1").unwrap()["pid"].as_u64().unwrap();

    // A request in flight on v1's web: v1's web is only stopped once it
    // is answered, or after stop_timeout.
    let slow = std::thread::spawn(move || get(port, "/slow?s=8"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(get(port, "/").is_some(), "v1 serves");
    assert_eq!(graven.run(["config", "set", "A=1", "--env", "production"]).code, 0);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["number"] == 2);
    assert!(
        std::path::Path::new(&format!("/proc/{old_web}")).exists(),
        "v2 was reported running while v1's web still drained: {status:#}"
    );
    assert!(get(port, "/").is_some(), "v2 serves");
    assert_eq!(slow.join().unwrap().as_deref(), Some("slow\n"), "the request in flight was answered by v1");
}

#[test]
fn on_sigterm_the_port_closes_at_once_and_open_connections_drain() {
    let (_repo, graven) = shell_web("stop_timeout = 20");
    let port = free_port();
    let mut runner = Runner::start(&graven, port, &[]);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    let web =
        status["processes"].as_array().unwrap().iter().find(|p| p["name"] == "web.1").unwrap()["pid"].as_u64().unwrap();
    let slow = std::thread::spawn(move || get(port, "/slow?s=2"));
    std::thread::sleep(Duration::from_millis(500));

    let pid = rustix::process::Pid::from_raw(i32::try_from(runner.child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let start = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
        assert!(start.elapsed() < PATIENCE, "the port stayed open");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(runner.child.try_wait().unwrap().is_none(), "the runner waits for the request in flight");
    assert!(std::path::Path::new(&format!("/proc/{web}")).exists(), "web.1 answers what is in flight");
    assert_eq!(slow.join().unwrap().as_deref(), Some("slow\n"));
    assert!(runner.terminate().success());
}

#[test]
fn a_process_that_writes_its_code_gets_erofs_and_the_release_keeps_running_without_drift() {
    let (repo, graven) = shell_web("");
    repo.write(
        "Procfile",
        "web: (echo x >> Procfile; rm graven.toml) 2> \"$TMPDIR/errors\"; exec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n",
    );
    repo.commit("A web process that tries to change its code");
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let port = free_port();
    let mut runner = Runner::start(&graven, port, &[]);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    assert_eq!(status["runner"]["read_only_app"], true, "{status:#}");
    assert_eq!(status["drift"], false, "{status:#}");
    let errors = std::fs::read_to_string(repo.path().join(".graven/run/shell/production/tmp/v2/web.1/errors")).unwrap();
    assert_eq!(errors.matches("Read-only file system").count(), 2, "{errors}");
    assert!(get(port, "/Procfile").is_some(), "the release does not serve");
    assert_eq!(graven.run(["verify", "HEAD"]).code, 0, "the store changed");
    let text = graven.run(["status", "--env", "production"]);
    assert!(text.stdout.contains("read-only at /app for every process"), "{text}");
    assert!(runner.terminate().success());

    // Without the sandbox the runner says so.
    let _runner = Runner::start(&graven, port, &["--no-sandbox"]);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true && s["runner"]["read_only_app"] == false);
    assert_eq!(status["runner"]["read_only_app"], false);
    let text = graven.run(["status", "--env", "production"]);
    assert!(text.stdout.contains("writable: the runner runs without the read-only /app"), "{text}");
}

#[test]
fn each_release_has_its_own_tmpdirs_which_go_when_its_processes_do() {
    let (repo, graven) = shell_web("stop_timeout = 20");
    repo.write("Procfile", "web: echo \"$GRAVEN_RELEASE\" > \"$TMPDIR/mark\" && exec python3 server.py\n");
    repo.commit("A web process that leaves a mark in its TMPDIR");
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true);
    let tmp = repo.path().join(".graven/run/shell/production/tmp");
    assert_eq!(std::fs::read_to_string(tmp.join("v2/web.1/mark")).unwrap(), "v2\n");

    // v3 starts while v2's web answers a request in flight: both marks stay.
    let slow = std::thread::spawn(move || get(port, "/slow?s=8"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(graven.run(["config", "set", "A=1", "--env", "production"]).code, 0);
    wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["number"] == 3);
    assert_eq!(std::fs::read_to_string(tmp.join("v2/web.1/mark")).unwrap(), "v2\n");
    assert_eq!(std::fs::read_to_string(tmp.join("v3/web.1/mark")).unwrap(), "v3\n");

    // Once v2's web is stopped, its TMPDIR goes.
    assert_eq!(slow.join().unwrap().as_deref(), Some("slow\n"));
    let start = Instant::now();
    while tmp.join("v2").exists() {
        assert!(start.elapsed() < PATIENCE, "v2's TMPDIRs were never removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(tmp.join("v3/web.1/mark").exists());
}

#[test]
fn one_runner_per_environment_and_a_busy_port_is_refused() {
    let (_repo, graven) = shell_web("");
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true);
    let run = graven.run(["run", "--env", "production", "--port", &free_port().to_string()]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.to_string().contains("a runner is already running for this app and environment (pid "), "{run}");

    let busy = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let run = graven.run(["run", "--env", "staging", "--port", &busy_port]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.to_string().contains(&format!("could not listen on port {busy_port}")), "{run}");
}

#[test]
fn a_runner_killed_outright_leaves_nothing_running_after_a_restart() {
    let (_repo, graven) = shell_web("");
    let port = free_port();
    let mut runner = Runner::start(&graven, port, &[]);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    let pids: Vec<u64> = status["processes"].as_array().unwrap().iter().filter_map(|p| p["pid"].as_u64()).collect();
    assert_eq!(pids.len(), 2, "web and worker: {status:#}");
    runner.child.kill().unwrap();
    runner.child.wait().unwrap();
    assert!(pids.iter().all(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()), "orphans, for now");

    let _again = Runner::start(&graven, port, &[]);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["version"] == "v1");
    let start = Instant::now();
    while pids.iter().any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()) {
        assert!(start.elapsed() < PATIENCE, "the previous run's processes were not stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(get(port, "/").is_some(), "{status:#}");
}

#[test]
fn a_release_whose_blobs_are_gone_is_not_switched_to_and_old_trees_are_pruned() {
    let (repo, graven) = shell_web("");
    let port = free_port();
    let runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true);

    // A new build, released, whose only new file is then lost from the
    // store before the runner looks (it is stopped meanwhile): the release
    // stage refuses an artifact with a missing blob.
    repo.write("new.txt", "only in the second build\n");
    repo.commit("A new file");
    graven.build_json::<&str>([]);
    let runner_pid = rustix::process::Pid::from_raw(i32::try_from(runner.child.id()).unwrap()).unwrap();
    rustix::process::kill_process(runner_pid, rustix::process::Signal::STOP).unwrap();
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let digest = "sha256:".to_owned() + &sha256_hex(b"only in the second build\n");
    let blob = repo.path().join(".graven/store/blobs/sha256").join(&digest[7..9]).join(&digest[9..]);
    std::fs::remove_file(&blob).unwrap();
    rustix::process::kill_process(runner_pid, rustix::process::Signal::CONT).unwrap();
    let status = wait_for_status(&graven, |s| s["last_failure"]["number"] == 2);
    assert!(status["last_failure"]["reason"].as_str().unwrap().contains("is not in the store"), "{status:#}");
    assert_eq!(status["running"]["version"], "v1");
    assert!(get(port, "/").is_some(), "v1 still serves");

    // Rebuilding stores the lost file again; many config releases later,
    // only the newest trees stay on disk.
    graven.build_json(["--force"]);
    for n in 0..7 {
        assert_eq!(graven.run(["config", "set", &format!("N={n}"), "--env", "production"]).code, 0);
        wait_for_status(&graven, |s| s["in_sync"] == true);
    }
    let trees = std::fs::read_dir(repo.path().join(".graven/releases/shell/production")).unwrap().count();
    assert!(trees <= 5, "{trees} trees left");
}

fn sha256_hex(bytes: &[u8]) -> String {
    let output = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

#[test]
fn a_server_needs_only_the_home_not_the_repository() {
    let (repo, graven) = shell_web("");
    // The server: a copy of the home, and no repository anywhere.
    let server = tempfile::tempdir().unwrap();
    let home = server.path().join("graven-home");
    let status =
        std::process::Command::new("cp").arg("-a").arg(repo.path().join(".graven")).arg(&home).status().unwrap();
    assert!(status.success());
    drop(graven);
    drop(repo);
    let graven = Graven::in_dir(server.path()).env("GRAVEN_HOME", &home).env("GRAVEN_APP", "shell");
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    assert_eq!(status["running"]["version"], "v1");
    assert!(get(port, "/").is_some());
    assert_eq!(graven.run(["config", "set", "X=1", "--env", "production"]).code, 0);
    wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["version"] == "v2");
}

#[test]
fn scale_sets_the_environments_formation_which_runners_apply_live_and_keep() {
    let (_repo, graven) = shell_web("");
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    let names = |status: &serde_json::Value| -> Vec<String> {
        status["processes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
    };
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    assert_eq!(names(&status), ["web.1", "worker.1"], "one of each type by default");

    let run = graven.run(["scale", "web=2", "worker=0", "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("scaled shell in production to web=2 worker=0"), "{run}");
    let status = wait_for_status(&graven, |s| {
        s["in_sync"] == true && s["processes"].as_array().unwrap().len() == 2 && s["processes"][1]["name"] == "web.2"
    });
    assert_eq!(names(&status), ["web.1", "web.2"]);
    assert_eq!(status["running"]["version"], "v1", "scaling makes no release");
    assert!(get(port, "/").is_some(), "it serves");
    let shown = graven.run(["scale", "--env", "production", "--json"]).json();
    assert_eq!(shown["formation"], serde_json::json!({"web": 2, "worker": 0}));

    // Types not named keep their count; a new release keeps the formation.
    assert_eq!(graven.run(["scale", "worker=1", "--env", "production"]).code, 0);
    assert_eq!(graven.run(["config", "set", "A=1", "--env", "production"]).code, 0);
    let status = wait_for_status(&graven, |s| {
        s["in_sync"] == true && s["running"]["version"] == "v2" && s["processes"].as_array().unwrap().len() == 3
    });
    assert_eq!(names(&status), ["web.1", "web.2", "worker.1"]);

    // Each process's lines say which release's process printed them.
    assert!(get(port, "/").is_some(), "v2 serves");
    let start = Instant::now();
    let logs = loop {
        let logs = graven.run(["logs", "--env", "production", "-n", "500", "web"]);
        if logs.stdout.contains(" v2 | ") || start.elapsed() > PATIENCE {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(logs.stdout.contains(" v1 | ") && logs.stdout.contains(" v2 | "), "{logs}");
    let labelled = |line: &str| line.contains(" web.1 v") || line.contains(" web.2 v");
    assert!(logs.stdout.lines().all(labelled), "the filter still takes the type, lines say the release: {logs}");

    for (args, expected) in [
        (&["scale", "web=many", "--env", "production"][..], "'web=many' is not TYPE=N"),
        (&["scale", "release=1", "--env", "production"], "'release=1' is not TYPE=N"),
        (&["scale", "web=1", "--env", "nowhere"], "environment 'nowhere' does not exist"),
    ] {
        let run = graven.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run}");
        assert!(run.stderr.contains(expected), "{args:?}: {run}");
    }
}

#[test]
fn status_lists_every_runner_of_a_shared_ledger_and_flags_one_behind() {
    // Two homes on one machine stand for two servers: each runs the
    // environment from its own home, both from one ledger and one store.
    let (repo, graven) = shell_web("");
    let shared = repo.path().join(".graven");
    let server_home = tempfile::tempdir().unwrap();
    let server = Graven::in_repo(&repo)
        .env("GRAVEN_HOME", server_home.path().as_os_str())
        .env("GRAVEN_LEDGER", format!("sqlite:{}", shared.join("ledger.sqlite").display()))
        .env("GRAVEN_STORE", format!("file:{}", shared.join("store").display()));
    let (port_a, port_b) = (free_port(), free_port());
    let _a = Runner::start(&graven, port_a, &[]);
    let b = Runner::start(&server, port_b, &[]);
    let both = |s: &serde_json::Value, version: &str| {
        s["runners"].as_array().is_some_and(|runners| {
            runners.len() == 2 && runners.iter().all(|r| r["in_sync"] == true && r["release"] == version)
        })
    };
    let status = wait_for_status(&graven, |s| s["in_sync"] == true && both(s, "v1"));
    let homes: Vec<&str> = status["runners"].as_array().unwrap().iter().map(|r| r["home"].as_str().unwrap()).collect();
    assert!(homes.contains(&server_home.path().to_str().unwrap()), "{homes:?}");
    assert_eq!(graven.run(["status", "--env", "production"]).code, 0);

    // The server's runner is frozen while v2 is released: it falls behind,
    // and status says which runner, and exits 1, until it catches up.
    let pid = rustix::process::Pid::from_raw(i32::try_from(b.child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    assert_eq!(graven.run(["config", "set", "A=1", "--env", "production"]).code, 0);
    wait_for_status(&graven, |s| s["running"]["version"] == "v2");
    let run = graven.run(["status", "--env", "production"]);
    assert_eq!(run.code, 1, "{run}");
    let behind =
        format!("the runner on {} (home {}) runs v1, not v2", crate::common::host(), server_home.path().display());
    assert!(run.stderr.contains(&behind), "{run}");
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    wait_for_status(&graven, |s| both(s, "v2"));
    assert_eq!(graven.run(["status", "--env", "production"]).code, 0);
}

#[test]
fn status_without_an_environment_is_a_line_per_environment() {
    let (_repo, graven) = shell_web("");
    assert_eq!(graven.run(["promote", "production", "staging"]).code, 0);
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true);

    // Production runs its newest release; nothing runs staging.
    let run = graven.run(["status"]);
    assert_eq!(run.code, 1, "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("ENV") && lines[0].contains("IN SYNC"), "{run}");
    assert!(lines.iter().any(|l| l.starts_with("production") && l.contains(" yes ")), "{run}");
    assert!(lines.iter().any(|l| l.starts_with("staging") && l.contains(" no ") && l.contains("not running")), "{run}");
    assert!(run.stderr.contains("not every environment of shell is in sync and healthy: staging"), "{run}");
    let json = graven.run(["status", "--json"]).json();
    let by_env: Vec<(&str, bool)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["env"].as_str().unwrap(), e["in_sync"].as_bool().unwrap()))
        .collect();
    assert_eq!(by_env, [("production", true), ("staging", false)]);
}

#[test]
fn wait_blocks_until_every_runner_serves_the_release_or_fails_it() {
    let (_repo, graven) = shell_web("health_timeout = 2");
    // No runner: --wait says so, after its timeout, and exits 1.
    let start = Instant::now();
    let run = graven.run(["config", "set", "A=1", "--env", "production", "--wait", "--wait-timeout", "1"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(run.stderr.contains("no runner of production is running: nothing rolled v2 out within 1 s"), "{run}");
    assert!(run.stderr.contains("hint: start one: graven run --env production"), "{run}");

    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true);
    let host = crate::common::host();

    // A release every runner serves: exit 0 once it does, each host said.
    let run = graven.run(["config", "set", "A=2", "--env", "production", "--wait"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains(&format!("{host} (")) && run.stdout.contains("): serves v3"), "{run}");
    let status = graven.run(["status", "--env", "production", "--json"]).json();
    assert_eq!(status["running"]["version"], "v3", "--wait returned once v3 served");

    // A release whose web process crashes: exit 1, with the reason.
    let run = graven.run(["config", "set", "CRASH=1", "--env", "production", "--wait"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("): failed v4: ") && run.stdout.contains("web.1 exited"), "{run}");
    assert!(run.stderr.contains("v4 of production is not served everywhere"), "{run}");

    // --json keeps stdout JSON: the outcome goes to stderr.
    let run = graven.run(["rollback", "v3", "--env", "production", "--wait", "--json"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.json()["version"], "v5");
    assert!(run.stderr.contains("): serves v5"), "{run}");
}

/// Whether this test runs as root, which running as another user needs;
/// says so when it does not.
fn as_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipped: running processes as another user needs root");
    }
    root
}

#[test]
fn with_user_every_process_runs_as_that_user_with_its_own_home_and_no_way_to_the_store() {
    if !as_root() {
        return;
    }
    let repo = shell_app("");
    // The machine's own Python: a user's toolchain under /root is out of
    // nobody's reach.
    repo.write(
        "Procfile",
        "web: id -un > \"$HOME/whoami\"; (touch /app/x; ls \"$STORE\"; touch \"$TMPDIR/mine\") 2> \"$TMPDIR/errors\"; \
         cp \"$TMPDIR/errors\" \"$HOME/errors\"; ls \"$TMPDIR\" > \"$HOME/tmp\"; exec /usr/bin/python3 -m http.server \"$PORT\" --bind 127.0.0.1\n\
         release: id -un > \"$HOME/release-phase\"\n",
    );
    repo.commit("A web process that looks around");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let store = repo.path().join(".graven/store").display().to_string();
    assert_eq!(graven.run(["config", "set", "--env", "production", &format!("STORE={store}")]).code, 0);
    let port = free_port();
    let mut runner = Runner::start(&graven, port, &["--user", "nobody"]);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    assert_eq!(status["runner"]["user"], "nobody", "{status:#}");
    assert!(get(port, "/Procfile").is_some(), "the release does not serve");
    let home = repo.path().join(".graven/run/shell/production/home");
    assert_eq!(std::fs::read_to_string(home.join("whoami")).unwrap(), "nobody\n");
    assert_eq!(std::fs::read_to_string(home.join("release-phase")).unwrap(), "nobody\n");
    assert_eq!(std::fs::read_to_string(home.join("tmp")).unwrap(), "errors\nmine\n", "its TMPDIR is its own");
    let errors = std::fs::read_to_string(home.join("errors")).unwrap();
    assert!(errors.contains("/app/x': Read-only file system"), "{errors}");
    assert!(errors.contains(&format!("{store}': No such file or directory")), "the store is out of sight: {errors}");
    let text = graven.run(["status", "--env", "production"]);
    assert!(text.stdout.contains("read-only at /app for every process, run as nobody"), "{text}");
    assert!(runner.terminate().success());
    assert_eq!(graven.run(["verify", "HEAD"]).code, 0);
}

#[test]
fn run_user_in_graven_toml_is_whom_exec_and_the_runner_run_as_and_a_missing_user_is_refused() {
    if !as_root() {
        return;
    }
    let (repo, graven) = shell_web("user = \"nobody\"");
    let run = graven.run(["exec", "--env", "production", "--", "id", "-un"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout, "nobody\n");
    let root = graven.run(["exec", "--env", "production", "--user", "root", "--", "id", "-un"]);
    assert_eq!(root.stdout, "root\n", "--user wins over [run] user: {root}");

    for command in [
        &["run", "--env", "production", "--user", "no-such-user"][..],
        &["exec", "--env", "production", "--user", "no-such-user", "--", "true"],
    ] {
        let run = graven.run(command);
        assert_eq!(run.code, 2, "{run}");
        assert!(run.stderr.contains("--user: there is no user 'no-such-user' on this machine"), "{run}");
        assert!(run.stderr.contains("useradd --system --no-create-home no-such-user"), "{run}");
    }
    let status = graven.run(["status", "--env", "production", "--json"]).json();
    assert_eq!(status["runners"], serde_json::json!([]), "nothing started: {status:#}");

    // A release whose [run] user this machine lacks is not switched to.
    repo.write("graven.toml", "[app]\nname = \"shell\"\n\n[run]\nuser = \"no-such-user\"\n");
    repo.commit("An unknown user");
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    let status = wait_for_status(&graven, |s| !s["last_failure"].is_null());
    let failure = status["last_failure"]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(failure.contains("[run] user: there is no user 'no-such-user'"), "{status:#}");
}

#[test]
fn run_as_root_without_a_user_warns_once() {
    if !as_root() {
        return;
    }
    let (_repo, graven) = shell_web("");
    let log = tempfile::NamedTempFile::new().unwrap();
    let port = free_port().to_string();
    let child = graven
        .command(["run", "--env", "production", "--port", &port])
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut runner = Runner { child };
    wait_for_status(&graven, |s| s["in_sync"] == true);
    assert!(runner.terminate().success());
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert_eq!(stderr.matches("warning: graven runs as root").count(), 1, "{stderr}");
    assert!(stderr.contains("name one, like --user www-data"), "{stderr}");
}

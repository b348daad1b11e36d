//! The rollout's states, end to end: a runner killed with SIGKILL in each
//! of them leaves, once restarted, exactly the desired release's processes
//! running; a newer release supersedes a rollout under way; a final
//! failure waits for `graven restart`, a passing one is tried again; and
//! `--wait` on `scale` and `restart`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use graven_testutils::TestRepo;

use crate::common::runner::{PATIENCE, Runner, SERVER_PY, free_port, get, wait_for_status};
use crate::common::{FlakyBwrap, Graven, shell_app};

/// A shell app with a release phase (one second long), a web process
/// serving `SERVER_PY` and a worker; released as v1, then v2 with `MARK`
/// set to `mark`, which every process of it has in its environment.
fn marked_app(mark: &str) -> (TestRepo, Graven) {
    let repo = shell_app("[run]\nsettle = 1\nstop_timeout = 5\n");
    repo.write("server.py", SERVER_PY);
    repo.write(
        "Procfile",
        "release: sleep 1\n\
         web: if [ -n \"$HANG\" ]; then exec sleep 600; else exec python3 server.py; fi\n\
         worker: exec sleep 600\n",
    );
    repo.commit("A web process, a worker and a release phase");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let run = graven.run(["config", "set", &format!("MARK={mark}"), "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");
    (repo, graven)
}

/// A live process of the app: its group, release and process name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Marked {
    pgid: i32,
    release: String,
    process: String,
}

/// Every live process whose environment has `MARK=mark`.
fn marked(mark: &str) -> Vec<Marked> {
    let wanted = format!("MARK={mark}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let vars: Vec<&[u8]> = environ.split(|&byte| byte == 0).collect();
        if !vars.contains(&wanted.as_bytes()) {
            continue;
        }
        let var = |name: &str| {
            let prefix = format!("{name}=");
            vars.iter()
                .find_map(|var| var.strip_prefix(prefix.as_bytes()))
                .map(|value| String::from_utf8_lossy(value).into_owned())
                .unwrap_or_default()
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        if fields[0] == "Z" {
            continue;
        }
        found.push(Marked {
            pgid: fields[2].parse().unwrap(),
            release: var("GRAVEN_RELEASE"),
            process: var("GRAVEN_PROCESS"),
        });
    }
    found.sort();
    found.dedup();
    found
}

/// Waits until the app's processes are exactly one group each of
/// `release`'s `web.1` and `worker.1`, and nothing else.
#[track_caller]
fn assert_only(mark: &str, release: &str) {
    let start = Instant::now();
    loop {
        let found = marked(mark);
        let mut groups: BTreeMap<(String, String), BTreeSet<i32>> = BTreeMap::new();
        for process in &found {
            groups.entry((process.release.clone(), process.process.clone())).or_default().insert(process.pgid);
        }
        let expected: BTreeMap<(String, String), usize> =
            ["web.1", "worker.1"].map(|name| ((release.to_owned(), name.to_owned()), 1)).into();
        let seen: BTreeMap<(String, String), usize> = groups.into_iter().map(|(key, set)| (key, set.len())).collect();
        if seen == expected {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "not exactly {release}'s processes, one group each: {found:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the runner with SIGKILL at fail point `rollout-v3-<point>` of
/// v3's rollout (v2 running), starts another, and checks that exactly v3's
/// processes run once it is in sync.
fn killed_at(point: &str) {
    let mark = format!("killed-at-{point}-{}", std::process::id());
    let (_repo, graven) = marked_app(&mark);
    let port = free_port();
    let port_text = port.to_string();
    let armed =
        graven.spawn_armed(&["run", "--env", "production", "--port", &port_text], &format!("rollout-v3-{point}"));
    wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["version"] == "v2");
    assert_only(&mark, "v2");
    assert_eq!(graven.run(["config", "set", "A=1", "--env", "production"]).code, 0);
    let mut killed = armed.reached();
    killed.kill().unwrap();
    killed.wait().unwrap();

    let _again = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["version"] == "v3");
    assert_only(&mark, "v3");
    assert!(get(port, "/").is_some(), "v3 serves");
}

#[test]
fn a_runner_killed_while_preparing_leaves_exactly_the_desired_release_running() {
    killed_at("preparing");
}

#[test]
fn a_runner_killed_in_the_release_phase_leaves_exactly_the_desired_release_running() {
    killed_at("release-phase");
}

#[test]
fn a_runner_killed_with_its_release_phase_held_before_its_record_leaves_none_of_it() {
    killed_at("held-release-phase");
}

#[test]
fn a_runner_killed_with_processes_held_before_their_record_leaves_none_of_them() {
    killed_at("held-processes");
}

#[test]
fn a_runner_killed_while_starting_leaves_exactly_the_desired_release_running() {
    killed_at("starting");
}

#[test]
fn a_runner_killed_during_the_health_checks_leaves_exactly_the_desired_release_running() {
    killed_at("health");
}

#[test]
fn a_runner_killed_while_settling_leaves_exactly_the_desired_release_running() {
    killed_at("settling");
}

#[test]
fn a_runner_killed_just_after_the_switch_leaves_exactly_the_desired_release_running() {
    killed_at("switched");
}

#[test]
fn a_runner_killed_while_the_old_release_drains_leaves_exactly_the_desired_release_running() {
    killed_at("draining");
}

#[test]
fn a_newer_release_supersedes_a_rollout_under_way_whose_processes_are_stopped() {
    let mark = format!("superseded-{}", std::process::id());
    let (_repo, graven) = marked_app(&mark);
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["version"] == "v2");

    // v3's web never listens: its rollout waits for health (30 s)...
    assert_eq!(graven.run(["config", "set", "HANG=1", "--env", "production"]).code, 0);
    let status = wait_for_status(&graven, |s| s["rollout"]["version"] == "v3" && s["rollout"]["stage"] == "health");
    assert_eq!(status["running"]["version"], "v2", "{status:#}");
    // ...until v4 supersedes it: v4 serves long before v3's timeout, and
    // v3's processes are gone.
    let asked = Instant::now();
    assert_eq!(graven.run(["config", "unset", "HANG", "--env", "production"]).code, 0);
    wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["version"] == "v4");
    assert!(asked.elapsed() < Duration::from_secs(25), "v4 waited for v3's health timeout");
    assert_only(&mark, "v4");
    let logs = graven.run(["logs", "--env", "production", "graven"]);
    assert!(logs.stdout.contains("v4 supersedes the rollout of v3, which is cancelled"), "{logs}");
}

#[test]
fn diff_names_the_release_phases_that_ran_not_those_superseded_first() {
    let mark = format!("diff-{}", std::process::id());
    let (_repo, graven) = marked_app(&mark);
    let port = free_port();
    let mut runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["version"] == "v2");
    assert!(runner.terminate().success());
    // With no runner, v3 is released and superseded by v4 at once: the
    // runner started next rolls out v4 only, and v3's release phase never
    // runs.
    assert_eq!(graven.run(["config", "set", "A=1", "--env", "production"]).code, 0);
    assert_eq!(graven.run(["config", "set", "B=2", "--env", "production"]).code, 0);
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["version"] == "v4");
    let diff = graven.run(["diff", "v1", "v4", "--env", "production"]);
    assert!(
        diff.stdout.contains(
            "release phase: ran in v2, v4; not run for v3, which no runner rolled out (superseded, or not yet)\n"
        ),
        "{diff}"
    );
    let json = graven.run(["diff", "v2", "v4", "--env", "production", "--json"]).json();
    assert_eq!(json["release_phase_ran_in"], serde_json::json!([4]), "{json:#}");
    assert_eq!(json["release_phase_not_run"], serde_json::json!([3]), "{json:#}");
}

#[test]
fn a_release_that_failed_for_good_waits_for_restart_which_rolls_it_out_again() {
    let (repo, graven) = marked_app(&format!("restart-{}", std::process::id()));
    let flag = repo.path().join("web-fails");
    std::fs::write(&flag, "").unwrap();
    // The web process fails while the flag exists: a cause outside the
    // release, as a database that is down would be.
    repo.write(
        "Procfile",
        format!("web: if [ -e {} ]; then exit 3; fi; exec python3 server.py\nworker: exec sleep 600\n", flag.display()),
    );
    repo.commit("The web process needs the flag gone");
    let run = graven.run(["restart", "--env", "production"]);
    assert_eq!(run.code, 0, "a restart with no runner is only recorded: {run}");
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true);
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let status = wait_for_status(&graven, |s| s["last_failure"]["version"] == "v3");
    assert_eq!(status["last_failure"]["cause"], "release", "{status:#}");
    assert_eq!(status["running"]["version"], "v2");

    // The flag goes, and nothing happens by itself: the failure was final.
    std::fs::remove_file(&flag).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let status = graven.run(["status", "--env", "production", "--json"]).json();
    assert_eq!(status["running"]["version"], "v2", "{status:#}");
    let text = graven.run(["status", "--env", "production"]);
    assert!(text.to_string().contains("try v3 again with graven restart --env production"), "{text}");

    let restart = graven.run(["restart", "--env", "production", "--wait", "--wait-timeout", "60"]);
    assert_eq!(restart.code, 0, "{restart}");
    assert!(restart.stdout.contains("asked every runner of shell production to restart v3"), "{restart}");
    assert!(restart.stdout.contains("serves v3, restarted"), "{restart}");
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    assert_eq!(status["running"]["version"], "v3");
    assert!(get(port, "/").is_some());

    // Restarting what runs starts fresh processes, without downtime.
    let pid = |s: &serde_json::Value| {
        s["processes"].as_array().unwrap().iter().find(|p| p["name"] == "web.1").unwrap()["pid"].clone()
    };
    let before = pid(&status);
    let restart = graven.run(["restart", "--env", "production", "--wait", "--json"]);
    assert_eq!(restart.code, 0, "{restart}");
    assert_eq!(restart.json()["release"], "v3");
    let status = wait_for_status(&graven, |s| s["in_sync"] == true);
    assert_ne!(pid(&status), before, "a new web.1");
}

#[test]
fn restart_of_an_environment_without_a_release_is_refused() {
    let repo = shell_app("");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["restart", "--env", "production"]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("environment 'production' does not exist"), "{run}");
    let run = graven.run(["scale", "--env", "production", "--wait"]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("--wait waits for a change"), "{run}");
}

#[test]
fn scale_wait_returns_once_every_runner_runs_the_counts() {
    let mark = format!("scale-{}", std::process::id());
    let (_repo, graven) = marked_app(&mark);
    let port = free_port();
    let _runner = Runner::start(&graven, port, &[]);
    wait_for_status(&graven, |s| s["in_sync"] == true);
    let run = graven.run(["scale", "web=2", "worker=0", "--env", "production", "--wait"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("runs web=2 worker=0"), "{run}");
    let status = graven.run(["status", "--env", "production", "--json"]).json();
    let names: Vec<&str> =
        status["processes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web.1", "web.2"], "at once, when --wait returns: {status:#}");
}

#[test]
fn a_rollout_short_of_file_descriptors_is_a_passing_failure_tried_again() {
    let mark = format!("emfile-{}", std::process::id());
    let (_repo, graven) = marked_app(&mark);
    let port = free_port();
    // 64 descriptors, hard limit too, so the runner cannot raise it: one
    // process and its pipes fit, thirty do not.
    let command = graven.command(["run", "--env", "production", "--port", &port.to_string()]);
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(std::ffi::OsStr::to_owned).collect();
    let mut limited = std::process::Command::new("/bin/sh");
    limited.arg("-c").arg("ulimit -n 64 && exec \"$@\"").arg("sh").arg(program).args(args);
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => limited.env(key, value),
            None => limited.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        limited.current_dir(dir);
    }
    let child = limited.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut runner = Runner { child };
    wait_for_status(&graven, |s| s["in_sync"] == true);

    assert_eq!(graven.run(["scale", "web=30", "--env", "production"]).code, 0);
    let status = wait_for_status(&graven, |s| {
        s["last_failure"]["cause"] == "passing" && s["rollout"]["attempt"].as_u64() >= Some(2)
    });
    let reason = status["last_failure"]["reason"].as_str().unwrap();
    assert!(reason.contains("Too many open files"), "{status:#}");
    assert!(status["last_failure"]["retry_at"].is_string(), "{status:#}");
    assert_eq!(status["running"]["version"], "v2", "{status:#}");
    assert!(get(port, "/").is_some(), "v2 still serves");
    // `--wait` keeps waiting through passing failures, and says so at the end.
    let wait = graven.run(["scale", "web=30", "--env", "production", "--wait", "--wait-timeout", "2"]);
    assert_eq!(wait.code, 1, "{wait}");
    assert!(wait.stdout.contains("has not rolled web=30 out after 2 s"), "{wait}");
    drop(command);
    runner.terminate();
}

#[test]
fn processes_whose_sandbox_could_not_be_made_start_again_and_the_rollout_goes_on() {
    let mark = format!("unmade-{}", std::process::id());
    let (_repo, graven) = marked_app(&mark);
    let bwrap = FlakyBwrap::new();
    let graven = graven.env("PATH", bwrap.path());
    let port = free_port();
    // v2's release phase (`sleep 1`) fails once: a passing failure.
    bwrap.fail(1, "sleep 1");
    let (_runner, said) = Runner::start_saying(&graven, port);
    let said_so_far = || std::fs::read_to_string(said.path()).unwrap();
    wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["version"] == "v2");
    assert_only(&mark, "v2");
    let text = said_so_far();
    assert!(
        text.contains("rollout of v2 failed: the release phase: bwrap could not make its sandbox (the machine's mounts changed while it copied them; its output says how), and its command did not start"),
        "{text}"
    );
    assert!(text.contains("that is a passing cause: v2 is tried again in 1 s"), "{text}");

    // The web process, the next time v2 rolls out: the same.
    bwrap.fail(1, "server.py");
    let restart = graven.run(["restart", "--env", "production", "--wait", "--wait-timeout", "60"]);
    assert_eq!(restart.code, 0, "{restart}");
    assert_only(&mark, "v2");
    let text = said_so_far();
    assert!(text.contains("rollout of v2 failed: web.1: bwrap could not make its sandbox"), "{text}");
    assert!(get(port, "/").is_some(), "v2 serves");

    // A worker that exits is started again; its sandbox fails twice, and
    // it is started again within a fraction of a second each time.
    let worker = |found: Vec<Marked>| found.into_iter().find(|p| p.process == "worker.1").map(|p| p.pgid);
    let before = worker(marked(&mark)).expect("a worker runs");
    bwrap.fail(2, "sleep 600");
    let calls = bwrap.calls();
    rustix::process::kill_process_group(rustix::process::Pid::from_raw(before).unwrap(), rustix::process::Signal::KILL)
        .unwrap();
    let status = wait_for_status(&graven, |s| {
        s["processes"].as_array().unwrap().iter().any(|p| p["name"] == "worker.1" && p["restarts"] == 3)
            && s["processes"].as_array().unwrap().iter().all(|p| p["state"] == "up")
    });
    assert_only(&mark, "v2");
    assert_ne!(worker(marked(&mark)), Some(before), "{status:#}");
    assert_eq!(bwrap.calls(), calls + 3, "one exit, two sandboxes that failed, one that worked");
    let text = said_so_far();
    for wait in ["50 ms", "100 ms"] {
        assert!(
            text.contains(&format!("worker.1: bwrap could not make its sandbox (the machine's mounts changed while it copied them; its output says how), and its command did not start; starting it again in {wait}")),
            "{text}"
        );
    }
}

#[test]
fn a_web_process_whose_port_another_process_took_is_tried_again_on_another_port() {
    let repo = shell_app("[run]\nsettle = 1\n");
    repo.write("server.py", SERVER_PY);
    // The first time, a process of its own session (out of the group the
    // runner stops) takes the port first, and the web process fails.
    repo.write(
        "Procfile",
        "web: if [ ! -e \"$HOME/took\" ]; then touch \"$HOME/took\"; \
         setsid python3 -c 'import os, socket, time; s = socket.socket(); s.bind((\"127.0.0.1\", int(os.environ[\"PORT\"]))); s.listen(); time.sleep(10)' \
         </dev/null >/dev/null 2>&1 & sleep 0.5; exit 1; fi; exec python3 server.py\n",
    );
    repo.commit("A web process whose port is taken the first time");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let port = free_port();
    let (_runner, said) = Runner::start_saying(&graven, port);
    let status = wait_for_status(&graven, |s| s["in_sync"] == true && s["running"]["version"] == "v1");
    assert!(get(port, "/").is_some(), "v1 serves: {status:#}");
    let text = std::fs::read_to_string(said.path()).unwrap();
    assert!(text.contains("and another process listens on its port"), "{text}");
    assert!(text.contains("that is a passing cause: v1 is tried again in 1 s"), "{text}");
}

#[test]
fn stopping_hundreds_of_process_types_that_ignore_sigterm_leaves_none_behind() {
    const TYPES: usize = 300;
    let mark = format!("many-{}", std::process::id());
    let repo = shell_app("[run]\nsettle = 0\nstop_timeout = 1\n");
    let procfile: Vec<String> = (1..=TYPES).map(|n| format!("t{n}: trap '' TERM; exec sleep 600")).collect();
    let procfile = procfile.join("\n") + "\n";
    repo.write("Procfile", &procfile);
    repo.commit("Many process types, deaf to SIGTERM");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    assert_eq!(graven.run(["config", "set", &format!("MARK={mark}"), "--env", "production"]).code, 0);
    let mut runner = Runner::start(&graven, free_port(), &[]);
    let status = wait_for_status(&graven, |s| {
        s["in_sync"] == true && s["processes"].as_array().is_some_and(|ps| ps.iter().all(|p| p["state"] == "up"))
    });
    assert_eq!(status["processes"].as_array().unwrap().len(), TYPES);
    // A process caught in the middle of its exec shows no environment: look
    // until every group has been seen.
    let start = Instant::now();
    loop {
        let groups: BTreeSet<i32> = marked(&mark).iter().map(|process| process.pgid).collect();
        if groups.len() == TYPES {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{} groups, not one per process ({TYPES})", groups.len());
        std::thread::sleep(Duration::from_millis(100));
    }

    let exit = runner.terminate();
    assert!(exit.success(), "{exit}");
    let left = marked(&mark);
    assert!(left.is_empty(), "{} processes left behind, e.g. {:?}", left.len(), left.first());
    let status = graven.run(["status", "--env", "production", "--json"]).json();
    assert_eq!(status["runner"]["state"], "stopped", "{status:#}");
}

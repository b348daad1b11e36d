//! The build sandbox: the build command runs at /app in namespaces made by
//! bubblewrap, sees the machine read-only, and leaves no path of the
//! machine in what it builds.

use std::net::TcpListener;

use crate::common::{FlakyBwrap, Graven, shell_app};

/// A repository whose build runs `command` and whose output is `out/`.
fn app(command: &str, extra: &str) -> graven_testutils::TestRepo {
    shell_app(&format!("[build]\ncommand = '''{command}'''\noutput = \"out\"\n{extra}"))
}

#[test]
fn a_build_that_writes_outside_app_fails_read_only_and_stores_nothing() {
    // Not under /tmp, which the sandbox replaces with its own.
    let outside = tempfile::tempdir_in("/var/tmp").unwrap();
    let leak = outside.path().join("leak");
    let repo = app(&format!("mkdir -p out && echo built > out/a && touch '{}'", leak.display()), "");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("Read-only file system"), "{run}");
    assert!(!leak.exists(), "the build wrote outside /app");
    graven.assert_nothing_recorded();
    // Nor can it write the user's home or the repository (here under the
    // host's /tmp, which it cannot even see).
    for target in [std::env::var("HOME").unwrap(), repo.path().display().to_string()] {
        let repo = app(&format!("mkdir -p out && touch '{target}/leak-from-build'"), "");
        let run = Graven::in_repo(&repo).run(["build"]);
        assert_eq!(run.code, 1, "{run}");
        assert!(!std::path::Path::new(&target).join("leak-from-build").exists());
    }
}

#[test]
fn one_commit_built_in_two_clones_at_different_paths_is_one_artifact() {
    // The build records every path it can see of itself, and compiles
    // Python, which embeds the source's path in each .pyc.
    let repo = app(
        "mkdir -p out && echo \"$HOME $TMPDIR $PWD $(pwd -P)\" > out/where && mkdir -p \"$HOME/x\" && \
         echo 'print(1)' > out/app.py && python3 -m compileall -q out && \
         python3 -c 'import os, sys, tempfile; print(os.getcwd(), sys.prefix, tempfile.gettempdir())' > out/python",
        "",
    );
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let clone = tempfile::Builder::new().prefix("graven-clone-").tempdir().unwrap();
            let path = clone.path().join("deep/er/app");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let output =
                std::process::Command::new("git").arg("clone").arg("-q").arg(repo.path()).arg(&path).output().unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            let graven = Graven::in_dir(&path);
            let build = graven.build_json::<&str>([]);
            assert_eq!(build["sandboxed"], true, "{build:#}");
            build["artifact"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids[0], ids[1], "two clones built two artifacts");
    let tree = Graven::in_repo(&repo);
    tree.build_json::<&str>([]);
    let unpacked = tree.unpack("HEAD");
    let where_ = std::fs::read_to_string(unpacked.path().join("tree/where")).unwrap();
    assert_eq!(where_.trim(), "/tmp/home /tmp /app /app");
}

#[test]
fn network_false_gives_the_build_no_network() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!(
        "mkdir -p out && python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2)' && echo reached > out/net"
    );
    let online = app(&connect, "");
    let run = Graven::in_repo(&online).run(["build"]);
    assert_eq!(run.code, 0, "the network is on by default: {run}");
    let offline = app(&connect, "network = false\n");
    let run = Graven::in_repo(&offline).run(["build"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("ConnectionRefusedError") || run.stderr.contains("Network is unreachable"), "{run}");
}

#[test]
fn without_bwrap_the_build_stops_naming_the_package_and_no_sandbox_marks_it_for_good() {
    let repo = app("mkdir -p out && echo a > out/a", "");
    // A PATH with git and nothing else: no bwrap.
    let bin = tempfile::tempdir().unwrap();
    let git =
        String::from_utf8(std::process::Command::new("sh").args(["-c", "command -v git"]).output().unwrap().stdout)
            .unwrap();
    std::os::unix::fs::symlink(git.trim(), bin.path().join("git")).unwrap();
    let graven = Graven::in_repo(&repo);
    let run = graven.command(["build"]).env("PATH", bin.path()).output().unwrap();
    let run = graven.finish(&run);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("the sandbox needs bubblewrap, and `bwrap` is not on PATH"), "{run}");
    assert!(run.stderr.contains("apt-get install bubblewrap"), "{run}");
    assert!(run.stderr.contains("--no-sandbox"), "{run}");
    graven.assert_nothing_recorded();

    // Built without: marked, shown, and not reused for a sandboxed build.
    let unsandboxed = graven.build_json(["--no-sandbox"]);
    assert_eq!(unsandboxed["sandboxed"], false);
    let builds = graven.run(["builds"]);
    assert!(builds.stdout.contains("(unsandboxed)"), "{builds}");
    let sandboxed = graven.build_json::<&str>([]);
    assert_eq!(sandboxed["reused"], false, "an unsandboxed build was reused for a sandboxed one");
    assert_eq!(sandboxed["sandboxed"], true);
}

#[test]
fn a_virtualenv_at_app_is_built_the_same_everywhere_and_runs_from_app() {
    // A venv made where it will run, its interpreter a host reference, a
    // module in its site-packages, everything compiled.
    let repo = shell_app(
        "[build]\ncommand = '''python3 -m venv --without-pip /app/.venv && \
         site=$(/app/.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])') && \
         echo 'HI = \"hi from the venv\"' > \"$site/greet.py\" && /app/.venv/bin/python -m compileall -q /app'''\n",
    );
    repo.write("Procfile", "web: .venv/bin/python -c 'import greet, sys; print(greet.HI, sys.prefix)'\n");
    repo.commit("A venv");
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let clone = tempfile::Builder::new().prefix("graven-clone-").tempdir().unwrap();
            let path = clone.path().join("app");
            let output =
                std::process::Command::new("git").arg("clone").arg("-q").arg(repo.path()).arg(&path).output().unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            let build = Graven::in_dir(&path).build_json::<&str>([]);
            let references = build["host_references"].as_array().unwrap().clone();
            assert!(
                references.iter().any(|r| r["path"].as_str().is_some_and(|p| p.starts_with(".venv/bin/python"))),
                "the venv's interpreter is not a host reference: {build:#}"
            );
            build["artifact"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids[0], ids[1], "two clones built two artifacts");

    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    assert!(run.stdout.contains("host reference"), "{run}");
    let show = graven.run(["builds", "show", "HEAD"]);
    assert!(show.stdout.contains("host references: 1 symlink leading out of /app"), "{show}");
    assert!(show.stdout.contains("  .venv/bin/python3 -> /"), "{show}");
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let run = graven.run([
        "exec",
        "--env",
        "production",
        "--",
        ".venv/bin/python",
        "-c",
        "import greet, sys; print(greet.HI, sys.prefix)",
    ]);
    assert_eq!((run.code, run.stdout.trim()), (0, "hi from the venv /app/.venv"), "{run}");
}

#[test]
fn files_embedding_a_build_path_that_will_not_exist_at_run_time_are_named() {
    // `[build] output` a subdirectory: built at /app/dist, run at /app.
    let repo = app("mkdir -p out/bin && echo \"#!$PWD/out/bin/python\" > out/bin/tool && echo plain > out/plain", "");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stderr.contains("warning: 1 file holds /app/out, a path of the build that will not exist when it runs"),
        "{run}"
    );
    assert!(run.stderr.contains("\n  bin/tool\n"), "{run}");
    assert!(!run.stderr.contains("  plain"), "{run}");
    // Without the sandbox, the checkout's path on this machine.
    let run = graven.run(["build", "--no-sandbox"]);
    assert!(run.stderr.contains("warning: 1 file holds /"), "{run}");
    assert!(run.stderr.contains("/checkout-a, a path of the build"), "{run}");
    // The whole checkout as the output, in the sandbox: /app is /app.
    let whole = shell_app("[build]\ncommand = \"echo \\\"#!$PWD/bin/python\\\" > tool\"\n");
    let run = Graven::in_repo(&whole).run(["build"]);
    assert!(!run.stderr.contains("warning"), "{run}");
}

#[test]
fn build_caches_outlive_builds_stay_out_of_artifacts_and_no_cache_and_gc_leave_them_out() {
    // The command says whether it found its cache warm, and fills it; what
    // it puts in out/ does not depend on the cache.
    let repo = app(
        "mkdir -p out && echo same > out/a && \
         if [ -f ~/.cache/dl/stamp ]; then echo warm; else echo cold; echo fetched > ~/.cache/dl/stamp; fi && \
         echo x >> /tmp/t/count",
        "cache = [\"~/.cache/dl\", \"/tmp/t\"]\n",
    );
    let graven = Graven::in_repo(&repo);
    let kept = repo.path().join(".graven/cache/shell");
    let first = graven.run(["build"]);
    assert_eq!(first.code, 0, "{first}");
    assert!(first.stderr.contains("build | cold"), "{first}");
    assert_eq!(std::fs::read_to_string(kept.join("home/.cache/dl/stamp")).unwrap(), "fetched\n");

    repo.write("b", "b\n");
    repo.commit("Another commit");
    let second = graven.run(["build"]);
    assert_eq!(second.code, 0, "{second}");
    assert!(second.stderr.contains("build | warm"), "{second}");
    assert_eq!(std::fs::read_to_string(kept.join("tmp/t/count")).unwrap(), "x\nx\n");
    let unpacked = graven.unpack("HEAD");
    let names: Vec<String> = std::fs::read_dir(unpacked.path().join("tree"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["a"], "only the output is in the artifact");
    // A cache never changes what a deterministic build makes.
    let builds = graven.builds();
    assert_eq!(builds[0]["artifact"], builds[1]["artifact"]);

    repo.write("c", "c\n");
    repo.commit("A third commit");
    let without = graven.run(["build", "--no-cache"]);
    assert_eq!(without.code, 0, "{without}");
    assert!(without.stderr.contains("build | cold"), "--no-cache gives empty directories: {without}");
    assert_eq!(std::fs::read_to_string(kept.join("tmp/t/count")).unwrap(), "x\nx\n", "and leaves the caches alone");

    // gc keeps them unless told.
    assert_eq!(graven.run(["gc"]).code, 0);
    assert!(kept.join("home/.cache/dl/stamp").exists());
    let dry = graven.run(["gc", "--caches", "--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "{dry}");
    assert_eq!(dry.json()["caches"]["apps"], serde_json::json!(["shell"]));
    assert!(kept.join("home/.cache/dl/stamp").exists());
    let gc = graven.run(["gc", "--caches"]);
    assert_eq!(gc.code, 0, "{gc}");
    assert!(gc.stdout.contains("deleted the build caches of shell: 12 B freed"), "{gc}");
    assert!(!kept.exists());
    repo.write("d", "d\n");
    repo.commit("A fourth commit");
    let after = graven.run(["build"]);
    assert!(after.stderr.contains("build | cold"), "{after}");
}

#[test]
fn a_cache_outside_the_builds_home_and_tmp_is_refused_before_anything_runs() {
    for (cache, why) in [
        ("~/../escape", "has '..' in it"),
        (".graven/store", "is not under the build's HOME or /tmp"),
        ("/app/node_modules", "is not under the build's HOME or /tmp"),
        ("~", "names the whole HOME"),
    ] {
        let repo = app("mkdir -p out && touch /app/ran", &format!("cache = [\"{cache}\"]\n"));
        let graven = Graven::in_repo(&repo);
        let run = graven.run(["build"]);
        assert_eq!(run.code, 2, "{run}");
        assert!(run.stderr.contains(&format!("[build] cache '{cache}' {why}")), "{run}");
        assert!(run.stderr.contains("hint: fix graven.toml"), "{run}");
        assert!(!repo.path().join(".graven/cache").exists());
        repo.write("graven.toml", "[app]\nname = \"shell\"\n");
        repo.commit("Fixed");
        graven.assert_nothing_recorded();
    }
}

#[test]
fn two_builds_of_different_commits_at_once_take_turns_with_the_cache() {
    let repo = app(
        "mkdir -p out && echo \"start $(cat id)\" >> ~/.npm/log && sleep 1 && echo \"end $(cat id)\" >> ~/.npm/log && \
         cp id out/id",
        "cache = [\"~/.npm\"]\n",
    );
    repo.write("id", "one\n");
    let one = repo.commit("One");
    repo.write("id", "two\n");
    let two = repo.commit("Two");
    let graven = Graven::in_repo(&repo);
    let children: Vec<_> = [&one, &two]
        .iter()
        .map(|commit| {
            graven
                .command(["build", commit.as_str()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<_> = children.into_iter().map(|child| graven.finish(&child.wait_with_output().unwrap())).collect();
    for run in &runs {
        assert_eq!(run.code, 0, "{run}");
    }
    assert!(
        runs.iter().any(|run| run.stderr.contains("waiting for another build of shell")),
        "{}\n{}",
        runs[0],
        runs[1]
    );
    let log = std::fs::read_to_string(repo.path().join(".graven/cache/shell/home/.npm/log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    // Each build's start is followed by its own end: never interleaved.
    for pair in lines.chunks(2) {
        assert_eq!(pair[0].strip_prefix("start "), pair[1].strip_prefix("end "), "{log}");
    }
    assert_eq!(graven.builds().len(), 2);
}

#[test]
fn bytecode_compiled_during_the_build_is_still_valid_when_the_release_runs() {
    // `import` writes a timestamp .pyc (as Django's collectstatic does for
    // every module it loads); compileall, with SOURCE_DATE_EPOCH set, a
    // hash-checked one.
    let repo = shell_app("[build]\ncommand = \"python3 -c 'import imported' && python3 -m compileall -q .\"\n");
    repo.write("imported.py", "X = 1\n");
    repo.write("compiled.py", "Y = 2\n");
    repo.commit("Two modules");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let run = graven.run(["exec", "--env", "production", "--", "python3", "-v", "-c", "import imported, compiled"]);
    assert_eq!(run.code, 0, "{run}");
    for module in ["imported", "compiled"] {
        let valid = format!("/app/__pycache__/{module}.cpython-");
        assert!(
            run.stderr
                .lines()
                .any(|line| line.contains(&valid) && line.ends_with(&format!("matches /app/{module}.py"))),
            "{module}.pyc from the build is not used:\n{run}"
        );
    }
    assert_eq!(graven.run(["verify", "HEAD"]).code, 0);
}

#[test]
fn the_build_sees_none_of_the_machines_run_directory_and_reaches_no_daemon_there() {
    // A service's socket, as /run/docker.sock or dbus's would be.
    let socket = std::path::PathBuf::from(format!("/run/graven-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let _listener = std::os::unix::net::UnixListener::bind(&socket)
        .expect("this test listens under /run: run the tests as root (the README's test command does)");
    let _remove = RemoveOnDrop(socket.clone());
    let repo = app(
        &format!(
            "mkdir -p out && ls -A /run /var/run > out/run && \
             python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect(\"{}\")' 2> out/connect; echo $? >> out/connect",
            socket.display()
        ),
        "",
    );
    let graven = Graven::in_repo(&repo);
    let build = graven.build_json::<&str>([]);
    assert_eq!(build["sandboxed"], true, "{build:#}");
    let unpacked = graven.unpack("HEAD");
    let run = std::fs::read_to_string(unpacked.path().join("tree/run")).unwrap();
    assert!(!run.contains("graven-test-"), "the build saw the machine's /run:\n{run}");
    let connect = std::fs::read_to_string(unpacked.path().join("tree/connect")).unwrap();
    assert!(connect.contains("FileNotFoundError") && connect.trim_end().ends_with('1'), "{connect}");
    // The network still resolves names as the machine does.
    let resolver = app("mkdir -p out && cat /etc/resolv.conf > out/resolv.conf", "");
    let graven = Graven::in_repo(&resolver);
    graven.build_json::<&str>([]);
    let unpacked = graven.unpack("HEAD");
    assert_eq!(
        std::fs::read_to_string(unpacked.path().join("tree/resolv.conf")).unwrap(),
        std::fs::read_to_string("/etc/resolv.conf").unwrap()
    );
}

/// Removes a file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_sandbox_whose_mounts_moved_is_made_again_and_a_command_that_failed_is_not_run_again() {
    let repo = app("mkdir -p out && echo a > out/a", "");
    let bwrap = FlakyBwrap::new();
    bwrap.fail(2, "");
    let graven = Graven::in_repo(&repo).env("PATH", bwrap.path());
    let run = graven.run(["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(bwrap.calls(), 3, "{run}");
    assert_eq!(run.stderr.matches("note: bwrap could not make the sandbox (Can't bind mount").count(), 2, "{run}");
    assert!(run.stderr.contains("the command did not start, and starts again in a new one"), "{run}");
    assert_eq!(graven.builds().len(), 1);

    // A command that fails by itself, with bwrap's exit code, runs once.
    let failing = app("echo started; exit 1", "");
    let bwrap = FlakyBwrap::new();
    let graven = Graven::in_repo(&failing).env("PATH", bwrap.path());
    let run = graven.run(["build"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(bwrap.calls(), 1, "a build command that ran and failed was run again: {run}");
    assert!(run.stderr.contains("the build command `echo started; exit 1` failed (exit code 1)"), "{run}");
    graven.assert_nothing_recorded();
}

#[test]
fn a_sandbox_that_cannot_be_made_time_after_time_fails_the_build_saying_so() {
    let repo = app("mkdir -p out && echo a > out/a", "");
    let bwrap = FlakyBwrap::new();
    bwrap.fail(u32::MAX, "");
    let graven = Graven::in_repo(&repo).env("PATH", bwrap.path());
    let run = graven.run(["build"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(bwrap.calls(), graven::sandbox::SETUP_TRIES as usize, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "error: bwrap could not make the sandbox's mounts, {} times: Can't bind mount /oldroot/ on /newroot/",
            graven::sandbox::SETUP_TRIES
        )),
        "{run}"
    );
    assert!(run.stderr.contains("run the same command again"), "{run}");
    graven.assert_nothing_recorded();
}

/// A directory under `/var/tmp` (which builds see), bound on itself and
/// shared, so that mounts made and removed under it reach every sandbox's
/// copy of it as they do under a machine's `/run` when containers come and
/// go: 200 tmpfs filesystems that stay (each one bwrap remounts widens its
/// window), and a thread that mounts and unmounts 4 more until dropped.
struct ChurningMounts {
    root: tempfile::TempDir,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    churn: Option<std::thread::JoinHandle<()>>,
}

impl ChurningMounts {
    fn start() -> Self {
        let root = tempfile::tempdir_in("/var/tmp").unwrap();
        let mount =
            |args: &[&std::ffi::OsStr]| std::process::Command::new("mount").args(args).status().unwrap().success();
        assert!(
            mount(&["--bind".as_ref(), root.path().as_os_str(), root.path().as_os_str()]),
            "this test mounts filesystems: run the tests as root (the README's test command does)"
        );
        assert!(mount(&["--make-shared".as_ref(), root.path().as_os_str()]));
        for i in 0..200 {
            let dir = root.path().join(format!("s{i}"));
            std::fs::create_dir(&dir).unwrap();
            assert!(mount(&["-t".as_ref(), "tmpfs".as_ref(), "none".as_ref(), dir.as_os_str()]));
        }
        let dirs: Vec<std::path::PathBuf> = (0..4).map(|i| root.path().join(format!("c{i}"))).collect();
        for dir in &dirs {
            std::fs::create_dir(dir).unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for dir in &dirs {
                        std::process::Command::new("mount").args(["-t", "tmpfs", "none"]).arg(dir).status().unwrap();
                    }
                    for dir in &dirs {
                        std::process::Command::new("umount").arg(dir).status().unwrap();
                    }
                }
            })
        };
        Self { root, stop, churn: Some(churn) }
    }
}

impl Drop for ChurningMounts {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(churn) = self.churn.take() {
            let _ = churn.join();
        }
        let _ = std::process::Command::new("umount").arg("-R").arg(self.root.path()).status();
    }
}

#[test]
fn builds_succeed_while_the_machines_mounts_come_and_go() {
    let churn = ChurningMounts::start();
    let repo = app("mkdir -p out && echo a > out/a", "");
    let graven = Graven::in_repo(&repo);
    let mut retried = 0;
    for _ in 0..8 {
        let run = graven.run(["build", "--force"]);
        assert_eq!(run.code, 0, "{run}");
        retried += run.stderr.matches("note: bwrap could not make the sandbox").count();
    }
    drop(churn);
    // As root, each build's bwrap starts in a private copy of the machine's
    // mounts, which the churn cannot reach: no sandbox had to be made again
    // (in the copy bwrap shares, a quarter of them failed here, and more
    // on a loaded machine).
    assert_eq!(retried, 0, "as root, a build's sandbox is made from mounts that do not move");
}

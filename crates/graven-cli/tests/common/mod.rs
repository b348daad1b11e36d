//! Runs the real `graven` binary the way a user would, in a controlled
//! environment, and shows what it did as text that snapshots compare.
//!
//! - The environment is cleared: only `PATH` comes from the caller; `HOME` is
//!   an empty temp directory (so no git or user config leaks in) and
//!   `GRAVEN_AUTHOR` is fixed. Tests add variables with [`Graven::env`].
//! - Output is made stable: the repository's path becomes `[TEMP]`, `HOME`
//!   becomes `[HOME]`, the repository's commits become `[C1]`, `[C2]`, … in
//!   the order they were made, and (through insta filters bound while a
//!   [`Graven`] lives) digests become `[DIGEST]`, times `[TIME]`, durations
//!   `[MS]` and the host name `[HOST]`.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use graven_testutils::TestRepo;
use tempfile::TempDir;

pub(crate) mod runner;

/// The author every build is recorded with.
const AUTHOR: &str = "dev@example.com";

/// How long a test waits for a spawned graven to reach a fail point.
const FAIL_POINT_TIMEOUT: Duration = Duration::from_secs(60);

/// The `graven` binary, run in one directory with a controlled environment.
pub(crate) struct Graven {
    cwd: PathBuf,
    home: TempDir,
    env: Vec<(String, OsString)>,
    /// Literal text → label, applied longest first.
    labels: Vec<(String, String)>,
    /// The repository whose commits are labelled, if any.
    repo: Option<PathBuf>,
    /// insta filters, bound while this lives; dropped newest first.
    filters: Vec<insta::internals::SettingsBindDropGuard>,
}

impl Drop for Graven {
    fn drop(&mut self) {
        while let Some(guard) = self.filters.pop() {
            drop(guard);
        }
    }
}

impl Graven {
    /// graven run at the root of `repo`.
    pub(crate) fn in_repo(repo: &TestRepo) -> Self {
        let mut graven = Self::in_dir(repo.path());
        graven.repo = Some(repo.path().to_owned());
        graven
    }

    /// graven run in `dir`, which becomes `[TEMP]` in output.
    pub(crate) fn in_dir(dir: &Path) -> Self {
        let home = tempfile::Builder::new().prefix("graven-home-").tempdir().expect("create a temp HOME");
        let mut labels = Vec::new();
        for (path, label) in [(dir, "[TEMP]"), (home.path(), "[HOME]")] {
            labels.push((path.display().to_string(), label.to_owned()));
            if let Ok(canonical) = path.canonicalize() {
                labels.push((canonical.display().to_string(), label.to_owned()));
            }
        }
        Self {
            cwd: dir.to_owned(),
            home,
            env: Vec::new(),
            labels,
            repo: None,
            filters: vec![filters().bind_to_scope()],
        }
    }

    /// The directory graven runs in.
    /// The `HOME` graven runs with: an empty temporary directory.
    pub(crate) fn user_home(&self) -> &Path {
        self.home.path()
    }

    pub(crate) fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Sets a variable in graven's environment.
    #[must_use]
    pub(crate) fn env(mut self, name: &str, value: impl Into<OsString>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Shows `text` as `label` in output.
    #[must_use]
    pub(crate) fn label(mut self, text: &str, label: &str) -> Self {
        self.labels.push((text.to_owned(), label.to_owned()));
        self
    }

    /// Shows sizes (`25.2 kB`, `"bytes": 25198`) as `[SIZE]`, for the example
    /// app, whose compiled files' sizes depend on the version of python3.
    #[must_use]
    pub(crate) fn hide_sizes(mut self) -> Self {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"\b\d[\d,]*(\.\d)? (B|kB|MB|GB)\b", "[SIZE]");
        settings.add_filter(r#""(bytes|new_bytes|new_manifest_bytes)": \d+"#, r#""$1": [SIZE]"#);
        self.filters.push(settings.bind_to_scope());
        self
    }

    /// Shows the cache tag of python3 (`cpython-311`) as `[PYTHON]`, for the
    /// example app, whose build prints the names of the files it compiles.
    #[must_use]
    pub(crate) fn label_python(self) -> Self {
        let output = Command::new("python3")
            .args(["-c", "import sys; print(sys.implementation.cache_tag)"])
            .output()
            .expect("run python3");
        let tag = String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned();
        self.label(&tag, "[PYTHON]")
    }

    /// A `graven` command with the controlled environment, not yet started.
    pub(crate) fn command<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_graven"));
        command
            .args(args)
            .current_dir(&self.cwd)
            .env_clear()
            .env("HOME", self.home.path())
            .env("GRAVEN_AUTHOR", AUTHOR)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::null());
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// A `graven` command run through `wrapper` (`prlimit …`, say), with the
    /// same controlled environment.
    pub(crate) fn command_via<S: AsRef<std::ffi::OsStr>>(
        &self,
        wrapper: &[&str],
        args: impl IntoIterator<Item = S>,
    ) -> Command {
        let inner = self.command(args);
        let mut command = Command::new(wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(inner.get_program())
            .args(inner.get_args())
            .current_dir(&self.cwd)
            .env_clear()
            .stdin(Stdio::null());
        for (name, value) in inner.get_envs() {
            if let Some(value) = value {
                command.env(name, value);
            }
        }
        command
    }

    /// Runs graven to completion.
    pub(crate) fn run<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Run {
        let output = self.command(args).output().expect("run graven");
        self.finish(&output)
    }

    /// Shows a finished run.
    pub(crate) fn finish(&self, output: &std::process::Output) -> Run {
        let code = output.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let text = format!("exit code: {code}\n----- stdout -----\n{stdout}----- stderr -----\n{stderr}");
        // Trailing spaces (clap leaves some on blank help lines) would not
        // survive an editor in an inline snapshot.
        let text: Vec<&str> = text.lines().map(str::trim_end).collect();
        Run { code, stdout, stderr: stderr.clone(), text: self.relabel(&text.join("\n")) }
    }

    /// `text` with every label applied.
    pub(crate) fn relabel(&self, text: &str) -> String {
        let mut labels = self.labels.clone();
        if let Some(repo) = &self.repo {
            let commits = git(repo, &["rev-list", "--reverse", "--all"]);
            for (n, commit) in commits.lines().enumerate() {
                labels.push((commit.to_owned(), format!("[C{}]", n + 1)));
                labels.push((commit[..7].to_owned(), format!("[C{}]", n + 1)));
            }
        }
        labels.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
        let mut text = text.to_owned();
        for (from, to) in labels {
            text = text.replace(&from, &to);
        }
        text
    }

    /// `graven builds --json`, parsed; panics unless it succeeds.
    pub(crate) fn builds(&self) -> Vec<serde_json::Value> {
        let run = self.run(["builds", "--json"]);
        assert_eq!(run.code, 0, "graven builds --json failed:\n{run}");
        serde_json::from_str(&run.stdout).expect("builds --json prints JSON")
    }

    /// Asserts that no build is recorded.
    #[track_caller]
    pub(crate) fn assert_no_builds(&self) {
        let run = self.run(["builds", "--json"]);
        assert_eq!((run.code, run.stdout.trim()), (0, "[]"), "expected no builds:\n{run}");
    }

    /// Asserts that a failed build left nothing behind: no build recorded,
    /// no artifact record stored, no scratch space left in the home.
    #[track_caller]
    pub(crate) fn assert_nothing_recorded(&self) {
        self.assert_no_builds();
        let home = self.cwd.join(".graven");
        let artifacts = files_under(&home.join("store/artifacts"));
        assert!(artifacts.is_empty(), "artifact records were stored: {artifacts:?}");
        let scratch: Vec<_> = std::fs::read_dir(home.join("tmp")).map(Iterator::collect).unwrap_or_default();
        assert!(scratch.is_empty(), "scratch space is left: {scratch:?}");
    }

    /// `graven build --json`, parsed; panics unless it succeeds.
    pub(crate) fn build_json<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> serde_json::Value {
        let run = self.run(
            ["build", "--json"].into_iter().map(OsString::from).chain(args.into_iter().map(|a| a.as_ref().to_owned())),
        );
        assert_eq!(run.code, 0, "graven build failed:\n{run}");
        serde_json::from_str(&run.stdout).expect("build --json prints JSON")
    }

    /// Asserts that `graven verify` passes on every listed build.
    #[track_caller]
    pub(crate) fn assert_all_verify(&self) {
        for build in self.builds() {
            let artifact = build["artifact"].as_str().expect("artifact is a string");
            let run = self.run(["verify", artifact]);
            assert_eq!(run.code, 0, "verify {artifact} failed:\n{run}");
        }
    }

    /// Asserts that `graven verify` passes on the listed builds at these
    /// positions (newest first).
    #[track_caller]
    pub(crate) fn assert_all_verify_of(&self, positions: &[usize]) {
        let builds = self.builds();
        for &position in positions {
            let artifact = builds[position]["artifact"].as_str().expect("artifact is a string");
            let run = self.run(["verify", artifact]);
            assert_eq!(run.code, 0, "verify {artifact} failed:\n{run}");
        }
    }

    /// Starts graven with fail point `name` armed and waits until it stops
    /// there; returns the stopped process, for the test to kill.
    pub(crate) fn spawn_to_fail_point(&self, args: &[&str], name: &str) -> Child {
        self.spawn_armed(args, name).reached()
    }

    /// Starts graven with fail point `name` armed, for the test to make it
    /// get there (see [`Armed::reached`]).
    pub(crate) fn spawn_armed(&self, args: &[&str], name: &str) -> Armed {
        let mut child = self
            .command(args)
            .env("GRAVEN_FAIL_POINT", name)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start graven");
        let stderr = child.stderr.take().expect("stderr is piped");
        let expected = format!("graven: fail point {name} reached");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                seen.push_str(&line);
                seen.push('\n');
                // Keep draining after the line, so that graven never blocks
                // on a full pipe.
                if line == expected {
                    let _ = sender.send(Ok(()));
                }
            }
            let _ = sender.send(Err(seen));
        });
        Armed { child: Some(child), receiver, name: name.to_owned() }
    }

    /// Exports `build` as a tar and unpacks it into a new directory.
    pub(crate) fn unpack(&self, build: &str) -> TempDir {
        let dir = tempfile::tempdir().expect("create a temp directory");
        let archive = dir.path().join("artifact.tar");
        let run = self.run([
            OsString::from("export"),
            build.into(),
            "--format".into(),
            "tar".into(),
            "-o".into(),
            archive.clone().into(),
        ]);
        assert_eq!(run.code, 0, "export failed:\n{run}");
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).expect("create a directory");
        let status = Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&tree).status().expect("run tar");
        assert!(status.success(), "tar -x failed");
        std::fs::remove_file(&archive).expect("remove the archive");
        dir
    }
}

/// One finished run of graven: exit code, stdout and stderr.
pub(crate) struct Run {
    /// The exit code (-1 if killed by a signal).
    pub(crate) code: i32,
    /// stdout, as printed.
    pub(crate) stdout: String,
    /// stderr, as printed.
    pub(crate) stderr: String,
    /// All three, labelled, for snapshots.
    text: String,
}

impl Run {
    /// stdout parsed as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The insta filters for what changes from run to run.
fn filters() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"sha256:[0-9a-f]{7,64}", "[DIGEST]");
    settings.add_filter(r"sha256/[0-9a-f]{2}/[0-9a-f]{62}", "sha256/[DIGEST]");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]");
    settings.add_filter(r#""(duration_ms|build_command_ms|ingest_ms)": \d+"#, r#""$1": [MS]"#);
    settings.add_filter(r#""host": "[^"]*""#, r#""host": "[HOST]""#);
    settings
}

/// A repository with a small shell app `shell`: a Procfile, a `.gitignore`
/// for graven's home, and a `graven.toml` of `[app] name = "shell"` followed
/// by `graven_toml`; committed.
pub(crate) fn shell_app(graven_toml: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("Procfile", "web: ./serve\n");
    repo.write(".gitignore", "/.graven/\n");
    repo.write("graven.toml", format!("[app]\nname = \"shell\"\n\n{graven_toml}"));
    repo.commit("A shell app");
    repo
}

/// Every file (not directory) under `dir`, if it exists.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.expect("read a directory entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Runs git in `dir`; panics if it fails; returns its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git").arg("-C").arg(dir).args(args).output().expect("run git");
    assert!(output.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// This machine's host name, as graven records it.
pub(crate) fn host() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// A graven process with a fail point armed.
pub(crate) struct Armed {
    /// `None` once handed over by [`Armed::reached`].
    child: Option<Child>,
    receiver: mpsc::Receiver<Result<(), String>>,
    name: String,
}

impl Drop for Armed {
    /// Killed, should the test fail before it got there.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Armed {
    /// Waits until graven stops at the fail point; returns it, for the test
    /// to kill.
    pub(crate) fn reached(mut self) -> Child {
        let name = self.name.clone();
        match self.receiver.recv_timeout(FAIL_POINT_TIMEOUT) {
            Ok(Ok(())) => self.child.take().expect("handed over once"),
            Ok(Err(stderr)) => {
                let status = self.child.take().expect("handed over once").wait().expect("wait for graven");
                panic!("graven ended ({status}) before fail point {name}; its stderr:\n{stderr}")
            }
            // Killed as it is dropped.
            Err(timeout) => panic!("graven did not reach fail point {name} within {FAIL_POINT_TIMEOUT:?} ({timeout})"),
        }
    }
}

/// A `bwrap` first on [`FlakyBwrap::path`]: the real one, but for the
/// sandboxes it is told to fail. Those it fails as bwrap does when a mount
/// moves under it, before the command starts. Only processes (builds, a
/// release's) count, not the probe that checks bwrap works.
pub(crate) struct FlakyBwrap {
    dir: TempDir,
}

impl FlakyBwrap {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("make a temp dir");
        let real =
            String::from_utf8(Command::new("sh").args(["-c", "command -v bwrap"]).output().expect("run sh").stdout)
                .expect("a UTF-8 path");
        let real = real.trim();
        assert!(!real.is_empty(), "the tests need bwrap");
        let state = dir.path().display();
        let script = format!(
            "#!/bin/sh\n\
             case \" $* \" in *' --json-status-fd '*)\n  \
               echo . >> '{state}/calls'\n  \
               left=$(cat '{state}/left' 2>/dev/null || echo 0)\n  \
               case \"$*\" in *\"$(cat '{state}/matching' 2>/dev/null)\"*) ;; *) left=0;; esac\n  \
               if [ \"$left\" -gt 0 ]; then\n    \
                 echo $((left - 1)) > '{state}/left'\n    \
                 echo 'bwrap: Can'\\''t bind mount /oldroot/ on /newroot/: Unable to apply mount flags: remount \"/newroot/run/netns/cni-1\": Invalid argument' >&2\n    \
                 exit 1\n  \
               fi;;\n\
             esac\n\
             exec '{real}' \"$@\"\n"
        );
        let bwrap = dir.path().join("bwrap");
        std::fs::write(&bwrap, script).expect("write bwrap");
        std::fs::set_permissions(&bwrap, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod bwrap");
        Self { dir }
    }

    /// Fails the next `times` sandboxes whose bwrap arguments hold
    /// `matching` (a command, say; "" is any).
    pub(crate) fn fail(&self, times: u32, matching: &str) {
        std::fs::write(self.dir.path().join("matching"), matching).expect("write matching");
        std::fs::write(self.dir.path().join("left"), times.to_string()).expect("write left");
    }

    /// How many sandboxes it was asked for, failed ones included.
    pub(crate) fn calls(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("calls")).map_or(0, |calls| calls.lines().count())
    }

    /// A PATH with it first, then the caller's.
    pub(crate) fn path(&self) -> OsString {
        let mut path = OsString::from(self.dir.path());
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        path
    }
}

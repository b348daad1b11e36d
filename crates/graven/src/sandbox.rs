//! Namespaces for the build and for every process of a release, made by
//! bubblewrap (`bwrap`, the sandbox Flatpak uses: one small program, in
//! every distribution, that only sets up namespaces and mounts and then
//! execs the command; graven has no namespace code of its own).
//!
//! - **Build** (`Sandbox::build_command`): the clean export of the commit
//!   is at [`APP`], writable, and is the working directory; the host's
//!   filesystem is visible read-only, so toolchains in `/usr`, `/opt` or a
//!   user's home work; `/tmp` is private and empty, with `HOME` a fresh
//!   directory in it. `/run`, where the machine's running services keep
//!   their sockets and state, is private and empty too (but for the
//!   resolver's file, when `/etc/resolv.conf` leads there and the build has
//!   the network): a build reaches no daemon. No host path or pid reaches
//!   the build: `HOME`, `TMPDIR` and `PWD` are the same on every machine.
//!   The network is shared unless the recipe turns it off. As root, bwrap
//!   starts in a private copy of the machine's mounts (util-linux's
//!   `unshare`), so that containers coming and going cannot fail the build.
//! - **Run** (`Sandbox::run_command`): the machine as it is, except that
//!   the release's tree is mounted read-only at [`APP`] (the working
//!   directory), and graven's home (the store, every tree) read-only too;
//!   the capability to mount is dropped, so not even root can undo that.
//!   A write, `chmod` or `unlink` under `/app` fails with EROFS.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, PipeReader, Read as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the build's checkout is inside the sandbox, and where a release's
/// tree is when it runs.
pub const APP: &str = "/app";

/// The build command's `HOME` inside the sandbox.
pub const HOME: &str = "/tmp/home";

/// The build command's `TMPDIR` inside the sandbox.
pub const TMPDIR: &str = "/tmp";

/// Why a sandbox cannot be made here.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `bwrap` is not installed.
    #[error("the sandbox needs bubblewrap, and `bwrap` is not on PATH")]
    Missing,
    /// `bwrap` is there but cannot make namespaces.
    #[error("the sandbox cannot be made here: bwrap says: {why}")]
    Unavailable {
        /// What bwrap printed.
        why: String,
    },
    /// bwrap could make namespaces, but not this process's mounts, at
    /// every one of [`SETUP_TRIES`].
    #[error("bwrap could not make the sandbox's mounts, {tries} times: {why}")]
    Setup {
        /// How many times it was tried.
        tries: u32,
        /// What bwrap printed the last time.
        why: String,
    },
}

/// How many times a process whose sandbox could not be made is started in
/// all. bwrap reads the machine's mount table, then remounts each mount it
/// copied: a mount that goes away in between (a container's network
/// namespace or overlay, as podman and docker make and remove them) fails
/// that remount with EINVAL and the process with it, though the next try
/// sees the table as it then is. A build graven runs as root never meets
/// it: its bwrap starts in a private copy of the machine's mounts, which
/// nothing else changes.
pub const SETUP_TRIES: u32 = 5;

/// How long to wait before making a sandbox again, times the tries so far:
/// long enough for the mounts that moved to settle.
pub(crate) const SETUP_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// What bwrap reports of one process it started, on one end of a socket
/// pair whose other end was the process's stdin: the command's exit code,
/// written only once bwrap has started the command. A process that ended
/// without one ended while its sandbox was being made.
#[derive(Debug)]
pub(crate) struct SetupReport {
    socket: UnixStream,
    /// Whether bwrap started the command, once read.
    started: Option<bool>,
}

impl SetupReport {
    /// A socket pair: the report, and the end to give the process as its
    /// stdin (see [`EXEC_REPORTING`]).
    pub(crate) fn pair() -> io::Result<(Self, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        Ok((Self { socket: ours, started: None }, theirs))
    }

    /// Our end of the socket, to write to the process's stdin meanwhile.
    pub(crate) fn stream(&self) -> &UnixStream {
        &self.socket
    }

    /// Once the process has ended with `status`: whether it ended because
    /// bwrap could not make its sandbox, before the command started.
    pub(crate) fn sandbox_failed(&mut self, status: std::process::ExitStatus) -> bool {
        // bwrap's own failures end it with 1.
        status.code() == Some(1) && !self.command_started()
    }

    /// Whether bwrap started the command. What it wrote is in the socket
    /// once the process has ended; nothing is waited for, as what the
    /// command left running never had the socket.
    fn command_started(&mut self) -> bool {
        let socket = &self.socket;
        *self.started.get_or_insert_with(|| {
            let mut report = Vec::new();
            if socket.set_nonblocking(true).is_ok() {
                let _ = (&*socket).read_to_end(&mut report);
            }
            String::from_utf8_lossy(&report).contains("\"exit-code\"")
        })
    }
}

/// Starts bwrap (`"$0"`) with its report on fd 3, as the last command of a
/// `/bin/sh -c` script. std gives a child only stdin, stdout and stderr:
/// the report's socket comes in as stdin and moves to 3, and stdin is
/// `/dev/null` again. bwrap closes fd 3 before it starts the command, and
/// sets `PWD`, which sh may have added, itself.
pub(crate) const EXEC_REPORTING: &str = r#"exec "$0" --json-status-fd 3 "$@" 3<&0 </dev/null"#;

/// Bubblewrap, found and known to work for this user.
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: PathBuf,
    /// The machine's top-level entries, read once: every process start
    /// mounts them, and `/` does not change under a runner.
    root: std::sync::Arc<[RootEntry]>,
    /// `unshare`, when graven runs as root: a build's bwrap starts in a
    /// private copy of the machine's mounts, which no mount made or removed
    /// meanwhile reaches, so that the copy bwrap reads is the copy it
    /// remounts (see [`SETUP_TRIES`]). Only for builds, which end: a
    /// release's processes run for weeks, and a private copy would keep
    /// alive every filesystem the machine unmounts in that time.
    private_mounts: Option<PathBuf>,
}

impl Sandbox {
    /// `bwrap` on the caller's `PATH`, not yet known to work: for a
    /// command that starts one process, where checking first would double
    /// the cost; bwrap then says itself why it cannot make namespaces.
    pub fn find() -> Result<Self, SandboxError> {
        let bwrap = find_on_path("bwrap").ok_or(SandboxError::Missing)?;
        let private_mounts = rustix::process::geteuid().is_root().then(|| find_on_path("unshare")).flatten();
        Ok(Self { bwrap, root: root_entries().into(), private_mounts })
    }

    /// The sandbox of this machine, checked by making one: `bwrap` on the
    /// caller's `PATH`, able to make namespaces for this user.
    pub fn new() -> Result<Self, SandboxError> {
        let sandbox = Self::find()?;
        // At an empty /app: the probe has no checkout, and the machine's
        // `/` there would be every mount of the machine twice.
        let empty = tempfile::tempdir().map_err(|error| SandboxError::Unavailable { why: error.to_string() })?;
        let mut probe = sandbox.in_private_mounts(sandbox.build_base(empty.path(), true));
        probe.args(["--", "/bin/true"]);
        // Tried again as a build is (see SETUP_TRIES): a machine that
        // forbids namespaces forbids them every time.
        let mut tries = 1;
        loop {
            match probe.output() {
                Ok(output) if output.status.success() => return Ok(sandbox),
                Ok(_) if tries < SETUP_TRIES => {
                    std::thread::sleep(SETUP_PAUSE * tries);
                    tries += 1;
                }
                Ok(output) => {
                    let why = bwrap_says(&output.stderr);
                    return Err(if mounts_moved(&why) {
                        SandboxError::Setup { tries, why }
                    } else {
                        SandboxError::Unavailable { why }
                    });
                }
                Err(error) => return Err(SandboxError::Unavailable { why: error.to_string() }),
            }
        }
    }

    /// `bwrap`, a build command made by [`Sandbox::build_command`], as
    /// `/bin/sh` starts it with exactly `env`, stdin `/dev/null`, stdout
    /// and stderr on one pipe (as [`crate::shell::piped`] gives them), and
    /// bwrap's report of whether it started the command.
    pub(crate) fn reporting(
        &self,
        bwrap: &Command,
        env: &BTreeMap<String, OsString>,
    ) -> io::Result<(Command, PipeReader, SetupReport)> {
        let (report, stdin) = SetupReport::pair()?;
        let mut sh = Command::new("/bin/sh");
        sh.args(["-c", EXEC_REPORTING]).arg(bwrap.get_program()).args(bwrap.get_args());
        let (mut sh, output) = crate::shell::piped(self.in_private_mounts(sh), env)?;
        sh.stdin(std::os::fd::OwnedFd::from(stdin));
        Ok((sh, output, report))
    }

    /// `sh -c script` in the build sandbox, with `checkout` at [`APP`] and
    /// each cache `(kept at, path in the sandbox)` mounted read-write (an
    /// empty directory if kept nowhere), ready to be given its environment
    /// and spawned.
    pub(crate) fn build_command(
        &self,
        script: &str,
        checkout: &Path,
        network: bool,
        caches: &[(Option<PathBuf>, String)],
    ) -> Command {
        let mut command = self.build_base(checkout, network);
        for (kept, in_sandbox) in caches {
            match kept {
                Some(kept) => command.arg("--bind").arg(kept).arg(in_sandbox),
                None => command.arg("--dir").arg(in_sandbox),
            };
        }
        sh(&mut command, script);
        command
    }

    /// `command` (its program and arguments so far), started in a private
    /// copy of the machine's mounts when graven may make one (see
    /// [`Sandbox::private_mounts`]): `unshare` execs it, so that it is the
    /// process started, with its pid.
    fn in_private_mounts(&self, command: Command) -> Command {
        let Some(unshare) = &self.private_mounts else { return command };
        let mut private = Command::new(unshare);
        private.args(["--mount", "--propagation", "private", "--"]).arg(command.get_program()).args(command.get_args());
        private
    }

    fn build_base(&self, checkout: &Path, network: bool) -> Command {
        let mut bwrap = Command::new(&self.bwrap);
        bwrap.args(["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]);
        bwrap.args(["--unshare-cgroup-try", "--hostname", "graven-build"]);
        if !network {
            bwrap.arg("--unshare-net");
        }
        // On an empty root, so that /app and /tmp can be made: the host's
        // top-level entries, read-only, but for those made fresh.
        self.host_root(&mut bwrap, "--ro-bind", &["proc", "dev", "tmp", "app", "sys", "run"]);
        bwrap.args(["--ro-bind", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        bwrap.args(["--tmpfs", "/run"]);
        if network && let Some(resolver) = resolver_in_run() {
            bwrap.arg("--ro-bind").arg(&resolver).arg(&resolver);
        }
        bwrap.args(["--dir", HOME]);
        bwrap.arg("--bind").arg(checkout).arg(APP);
        bwrap.args(["--chdir", APP]);
        bwrap
    }

    /// `sh -c script` with `tree` read-only at [`APP`] (its working
    /// directory) and every path of `protect` read-only where it is: the
    /// machine otherwise as the caller sees it; as `user`, if given.
    pub(crate) fn run_command(
        &self,
        script: &str,
        tree: &Path,
        protect: &[&Path],
        user: Option<&AsUser<'_>>,
    ) -> Command {
        let mut bwrap = self.run_base(tree, protect, user);
        bwrap.args(["/bin/sh", "-c", script, "sh"]);
        bwrap
    }

    /// Like [`Sandbox::run_command`], for `program` with `args` rather
    /// than a script.
    pub(crate) fn run_program(
        &self,
        program: &std::ffi::OsStr,
        args: &[OsString],
        tree: &Path,
        protect: &[&Path],
        user: Option<&AsUser<'_>>,
    ) -> Command {
        let mut bwrap = self.run_base(tree, protect, user);
        bwrap.arg(program).args(args);
        bwrap
    }

    /// bwrap's options, then `--` and, for a user, the `setpriv` that
    /// becomes it: what follows is the command.
    fn run_base(&self, tree: &Path, protect: &[&Path], user: Option<&AsUser<'_>>) -> Command {
        let mut bwrap = Command::new(&self.bwrap);
        self.host_root(&mut bwrap, "--dev-bind", &["app"]);
        for path in protect {
            bwrap.arg("--ro-bind").arg(path).arg(path);
        }
        if let Some(user) = user {
            // The user's own directories lie in graven's home, which only
            // root may enter: each directory on the way that the user
            // cannot pass is an empty one for it (what is in it was out of
            // its reach anyway), with its own directories mounted in.
            let mut hidden: Vec<&Path> = Vec::new();
            for dir in user.writable {
                if let Some(wall) = first_closed(dir, user.user)
                    && !hidden.iter().any(|h| wall.starts_with(h))
                {
                    hidden.retain(|h| !h.starts_with(wall));
                    hidden.push(wall);
                }
            }
            for wall in &hidden {
                bwrap.args(["--perms", "0711", "--tmpfs"]).arg(wall);
            }
            for dir in user.writable {
                // The way down to it, passable (bwrap would make it 0700).
                if let Some(wall) = hidden.iter().find(|wall| dir.starts_with(wall)) {
                    let mut way: Vec<&Path> = dir.ancestors().skip(1).take_while(|a| a != wall).collect();
                    way.reverse();
                    for step in way {
                        bwrap.args(["--perms", "0711", "--dir"]).arg(step);
                    }
                }
                bwrap.arg("--bind").arg(dir).arg(dir);
            }
        }
        bwrap.arg("--ro-bind").arg(tree).arg(APP);
        // Without it no mount can be undone, root's included; every other
        // capability the caller has stays (a port under 1024, say).
        bwrap.args(["--cap-drop", "CAP_SYS_ADMIN", "--chdir", APP, "--"]);
        if let Some(user) = user {
            bwrap.args(user.user.setpriv_args());
        }
        bwrap
    }
}

/// A user to run a process as, with the directories of its own it must
/// reach and write (its `HOME`, its `TMPDIR`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsUser<'a> {
    pub(crate) user: &'a crate::user::RunAs,
    pub(crate) writable: &'a [&'a Path],
}

/// The first directory on the way to `dir` (`dir`'s ancestors, from the
/// top) that `user` cannot pass through.
fn first_closed<'p>(dir: &'p Path, user: &crate::user::RunAs) -> Option<&'p Path> {
    let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
    ancestors.reverse();
    ancestors
        .into_iter()
        .filter(|a| a.parent().is_some())
        .find(|a| std::fs::metadata(a).is_ok_and(|meta| !user.may_enter(&meta)))
}

/// Appends `-- /bin/sh -c script sh`: named `sh` in its own messages
/// (`sh: 1: make: not found`), since the argument after the script is its
/// `$0`.
fn sh(bwrap: &mut Command, script: &str) {
    bwrap.args(["--", "/bin/sh", "-c", script, "sh"]);
}

/// Whether bwrap's words (see [`bwrap_says`]) say that a mount it copied
/// went away before it could bind or remount it (`EINVAL`, `ENOENT`),
/// which the next try may not meet; not that it may not mount at all
/// (`EPERM`, `EACCES`), or make namespaces, which every try meets.
fn mounts_moved(why: &str) -> bool {
    why.contains("mount") && (why.contains("Invalid argument") || why.contains("No such file or directory"))
}

/// What bwrap printed when it failed (`output`), without its name: one line.
pub(crate) fn bwrap_says(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().map(|line| line.trim().trim_start_matches("bwrap: ")).collect();
    lines.join("; ")
}

/// Where `/etc/resolv.conf` leads, if that is under `/run` (systemd-resolved's
/// `stub-resolv.conf`, say), which a build does not otherwise see.
fn resolver_in_run() -> Option<PathBuf> {
    let resolver = std::fs::canonicalize("/etc/resolv.conf").ok()?;
    resolver.starts_with("/run").then_some(resolver)
}

/// One entry of the machine's `/`: its name, and its target if it is a
/// symlink (merged `/usr`'s `/bin -> usr/bin`).
#[derive(Debug)]
struct RootEntry {
    name: OsString,
    link: Option<PathBuf>,
}

/// The entries of `/`, sorted by name.
fn root_entries() -> Vec<RootEntry> {
    let Ok(entries) = std::fs::read_dir("/") else { return Vec::new() };
    let mut root: Vec<RootEntry> = entries
        .flatten()
        .map(|entry| RootEntry { link: std::fs::read_link(entry.path()).ok(), name: entry.file_name() })
        .collect();
    root.sort_by(|a, b| a.name.cmp(&b.name));
    root
}

impl Sandbox {
    /// Mounts an empty root, then the host's top-level entries but `skip`
    /// on it with `bind` (`--ro-bind`, `--dev-bind`); symlinks stay links.
    fn host_root(&self, bwrap: &mut Command, bind: &str, skip: &[&str]) {
        bwrap.args(["--tmpfs", "/"]);
        for entry in self.root.iter() {
            if entry.name.to_str().is_some_and(|name| skip.contains(&name)) {
                continue;
            }
            let host = Path::new("/").join(&entry.name);
            match &entry.link {
                Some(target) => bwrap.arg("--symlink").arg(target).arg(&host),
                None => bwrap.arg(bind).arg(&host).arg(&host),
            };
        }
    }
}

/// The first `name` on the caller's `PATH` that is a file.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::mounts_moved;

    #[test]
    fn a_mount_gone_from_under_bwrap_is_told_from_a_policy_that_forbids_the_sandbox() {
        // Gone between bwrap reading the mount table and remounting it.
        assert!(mounts_moved("Can't remount readonly on /newroot/run/netns/cni-1: Invalid argument"));
        assert!(mounts_moved(
            "Can't bind mount /oldroot/run/containers/x on /newroot/run/containers/x: No such file or directory"
        ));
        // Forbidden, every time.
        assert!(!mounts_moved(
            "No permissions to creating new namespace, likely because the kernel does not allow non-privileged user namespaces"
        ));
        assert!(!mounts_moved("setting up uid map: Permission denied"));
        assert!(!mounts_moved("Failed to make / slave: Permission denied"));
        assert!(!mounts_moved("Can't mount proc on /newroot/proc: Operation not permitted"));
        assert!(!mounts_moved("execvp /bin/true: No such file or directory"));
    }
}

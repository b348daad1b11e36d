//! The build's sandbox: the build command runs in Linux namespaces made by
//! bubblewrap (`bwrap`, the sandbox Flatpak uses: one small setuid-free
//! program, in every distribution, that only sets up namespaces and mounts
//! and then execs the command; graven writes no namespace code of its own).
//!
//! Inside, the clean export of the commit is at [`APP`], writable, and is
//! the working directory; the host's filesystem is visible read-only, so
//! toolchains in `/usr`, `/opt` or a user's home work; `/tmp` is private and
//! empty, and `HOME` is a fresh directory in it. Nothing else is writable,
//! and no host path or pid reaches the build: `HOME`, `TMPDIR` and `PWD`
//! have the same values on every machine. The network is shared unless the
//! recipe turns it off.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the build's checkout is inside the sandbox, and where a release's
/// tree is when it runs.
pub const APP: &str = "/app";

/// The build command's `HOME` inside the sandbox.
pub const HOME: &str = "/tmp/home";

/// The build command's `TMPDIR` inside the sandbox.
pub const TMPDIR: &str = "/tmp";

/// Host directories never shown to the build: made fresh inside
/// (`/proc`, `/dev`, `/tmp`), or the sandbox's own (`/app`).
const NOT_SHARED: [&str; 5] = ["proc", "dev", "tmp", "app", "sys"];

/// Why a build cannot be sandboxed here.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `bwrap` is not installed.
    #[error("the build sandbox needs bubblewrap, and `bwrap` is not on PATH")]
    Missing,
    /// `bwrap` is there but cannot make namespaces.
    #[error("the build sandbox cannot be made here: bwrap says: {why}")]
    Unavailable {
        /// What bwrap printed.
        why: String,
    },
}

/// A sandbox that builds can run in.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    bwrap: PathBuf,
    network: bool,
}

impl Sandbox {
    /// The sandbox of this machine, checked by making one: `bwrap` on the
    /// caller's `PATH`, able to make namespaces for this user.
    pub(crate) fn new(network: bool) -> Result<Self, SandboxError> {
        let bwrap = find_on_path("bwrap").ok_or(SandboxError::Missing)?;
        let sandbox = Self { bwrap, network };
        let probe = sandbox.base_command(Path::new("/")).args(["--", "/bin/true"]).output();
        match probe {
            Ok(output) if output.status.success() => Ok(sandbox),
            Ok(output) => Err(SandboxError::Unavailable {
                why: String::from_utf8_lossy(&output.stderr).trim().trim_start_matches("bwrap: ").to_owned(),
            }),
            Err(error) => Err(SandboxError::Unavailable { why: error.to_string() }),
        }
    }

    /// `bwrap` with the sandbox's mounts, `checkout` at [`APP`]; the program
    /// to run follows.
    fn base_command(&self, checkout: &Path) -> Command {
        let mut bwrap = Command::new(&self.bwrap);
        bwrap.args(["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]);
        bwrap.args(["--unshare-cgroup-try", "--hostname", "graven-build"]);
        if !self.network {
            bwrap.arg("--unshare-net");
        }
        // The host's top-level entries, read-only, on an empty root: a new
        // root, rather than the host's, so that /app and /tmp can be made.
        bwrap.args(["--tmpfs", "/"]);
        if let Ok(entries) = std::fs::read_dir("/") {
            let mut names: Vec<OsString> = entries.flatten().map(|entry| entry.file_name()).collect();
            names.sort();
            for name in names {
                if name.to_str().is_some_and(|name| NOT_SHARED.contains(&name)) {
                    continue;
                }
                let host = Path::new("/").join(&name);
                match std::fs::read_link(&host) {
                    // merged /usr: /bin -> usr/bin stays a link.
                    Ok(target) => bwrap.arg("--symlink").arg(target).arg(&host),
                    Err(_) => bwrap.arg("--ro-bind").arg(&host).arg(&host),
                };
            }
        }
        bwrap.args(["--ro-bind", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        bwrap.args(["--dir", HOME]);
        bwrap.arg("--bind").arg(checkout).arg(APP);
        bwrap.args(["--chdir", APP]);
        bwrap
    }

    /// `sh -c script` in the sandbox, with `checkout` at [`APP`], ready to
    /// be given its environment and spawned.
    pub(crate) fn command(&self, script: &str, checkout: &Path) -> Command {
        let mut command = self.base_command(checkout);
        // Named `sh` in its own messages (`sh: 1: make: not found`): the
        // argument after the script is its $0.
        command.args(["--", "/bin/sh", "-c", script, "sh"]);
        command
    }
}

/// The first `name` on the caller's `PATH` that is a file.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

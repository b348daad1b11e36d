//! The user a release's processes run as (`[run] user`, `--user`).
//!
//! graven, as root, makes each process's namespaces (see
//! [`crate::sandbox`]), then `setpriv` (util-linux, on every Linux) drops
//! to the user, its groups, and no capabilities, just before the process
//! starts. Names are resolved by `id`, through the machine's name service
//! (`/etc/passwd`, LDAP…), as every other program on it does.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A user processes run as, found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The name, as given.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    setpriv: PathBuf,
}

/// Why processes cannot run as a user.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No such user on this machine.
    #[error("there is no user '{name}' on this machine")]
    NoSuchUser {
        /// The name.
        name: String,
    },
    /// graven is not root, and the user is not graven's own.
    #[error("running processes as '{name}' needs graven to run as root; it runs as uid {uid}")]
    NotRoot {
        /// The name.
        name: String,
        /// graven's uid.
        uid: u32,
    },
    /// `setpriv` or `id` is missing.
    #[error("running processes as '{name}' needs {program} (util-linux and coreutils), which is not on PATH")]
    Missing {
        /// The name.
        name: String,
        /// The program.
        program: &'static str,
    },
}

impl RunAs {
    /// Finds user `name` (or a numeric uid) on this machine. graven's own
    /// user needs no change, and no root.
    pub fn lookup(name: &str) -> Result<Self, UserError> {
        let id = |flag: &str| -> Result<Option<u32>, UserError> {
            let output = Command::new("id")
                .args([flag, "--", name])
                .output()
                .map_err(|_| UserError::Missing { name: name.to_owned(), program: "id" })?;
            Ok(output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().parse().ok()).flatten())
        };
        let no_such = || UserError::NoSuchUser { name: name.to_owned() };
        let uid = id("-u")?.ok_or_else(no_such)?;
        let gid = id("-g")?.ok_or_else(no_such)?;
        let own = rustix::process::geteuid().as_raw();
        if uid == own {
            return Ok(Self { name: name.to_owned(), uid, gid, setpriv: PathBuf::new() });
        }
        if own != 0 {
            return Err(UserError::NotRoot { name: name.to_owned(), uid: own });
        }
        let setpriv = crate::sandbox::find_on_path("setpriv")
            .ok_or(UserError::Missing { name: name.to_owned(), program: "setpriv" })?;
        Ok(Self { name: name.to_owned(), uid, gid, setpriv })
    }

    /// Whom a release's processes run as: `chosen` (`--user`) if given,
    /// else the user its `[run] user` names, else graven's own (`None`).
    pub fn of_release(chosen: Option<&Self>, named: Option<&str>) -> Result<Option<Self>, UserError> {
        match (chosen, named) {
            (Some(user), _) => Ok(Some(user.clone())),
            (None, Some(name)) => Self::lookup(name).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Whether this is the user graven runs as: nothing to change.
    pub fn is_self(&self) -> bool {
        self.uid == rustix::process::geteuid().as_raw()
    }

    /// The words that run the rest of a command line as this user: its uid,
    /// its groups, no capabilities.
    pub(crate) fn setpriv_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            self.setpriv.clone().into(),
            format!("--reuid={}", self.uid).into(),
            format!("--regid={}", self.gid).into(),
            "--init-groups".into(),
            "--inh-caps=-all".into(),
            "--".into(),
        ]
    }

    /// Makes `dir` (created by graven, as root) the user's, and what is in
    /// it if it was someone else's: a HOME that root's processes used
    /// before.
    pub fn give(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::symlink_metadata(dir)?;
        if meta.uid() == self.uid && meta.gid() == self.gid {
            return Ok(());
        }
        self.chown_tree(dir)
    }

    fn chown_tree(&self, path: &Path) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                self.chown_tree(&entry?.path())?;
            }
        }
        let (uid, gid) = (rustix::fs::Uid::from_raw(self.uid), rustix::fs::Gid::from_raw(self.gid));
        rustix::fs::chownat(rustix::fs::CWD, path, Some(uid), Some(gid), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// Whether this user may pass through directory `meta` (search it).
    pub(crate) fn may_enter(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let mode = meta.mode();
        if meta.uid() == self.uid {
            mode & 0o100 != 0
        } else if meta.gid() == self.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }
}

//! The graven home: the directory that holds the embedded ledger, the local
//! store and scratch space (`.graven/` at the repository root by default).
//! Owns the layout of that directory; nothing about what goes in the files.

use std::path::{Path, PathBuf};

/// The default home, relative to the repository root.
pub const DEFAULT_HOME: &str = ".graven";

/// A graven home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `root`; nothing is created until [`Home::create`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the home's directories if they are missing.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.tmp_dir())
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The embedded ledger's database file.
    pub fn ledger_path(&self) -> PathBuf {
        self.root.join("ledger.sqlite")
    }

    /// The local store's directory.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Scratch space for builds. On the same filesystem as the store, so that
    /// build outputs can be moved into it rather than copied.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where release trees of `app`'s environment `env` are materialised,
    /// one read-only directory per release (`v42/`). Per app, since one home
    /// can serve several: their v1s are different trees.
    pub fn releases_dir(&self, app: &str, env: &str) -> PathBuf {
        self.root.join("releases").join(app).join(env)
    }

    /// The runner's directory for `app`'s environment `env`: its lock, the
    /// process groups it started, its processes' TMPDIRs and its log files
    /// (`graven.log`, rotated to `graven.log.1` …).
    pub fn run_dir(&self, app: &str, env: &str) -> PathBuf {
        self.root.join("run").join(app).join(env)
    }
}

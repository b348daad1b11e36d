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

    /// Creates the home's directories if they are missing, private (0700):
    /// the home holds config values, secret ones included. A home that
    /// other users could read is tightened to 0700; returns the mode it had
    /// then, so that the caller can say so (once: afterwards it is private).
    pub fn create(&self) -> std::io::Result<Option<u32>> {
        crate::fs_tree::create_private_dir_all(&self.tmp_dir())?;
        crate::fs_tree::tighten(&self.root, crate::fs_tree::PRIVATE_DIR)
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

    /// Where every release tree of every app and environment lives.
    pub fn releases_root(&self) -> PathBuf {
        self.root.join("releases")
    }

    /// Where release trees of `app`'s environment `env` are materialised,
    /// one read-only directory per release (`v42/`). Per app, since one home
    /// can serve several: their v1s are different trees.
    pub fn releases_dir(&self, app: &str, env: &str) -> PathBuf {
        self.releases_root().join(app).join(env)
    }

    /// The runner's directory for `app`'s environment `env`: its lock, the
    /// process groups it started, its processes' TMPDIRs and its log files
    /// (`graven.log`, rotated to `graven.log.1` …).
    pub fn run_dir(&self, app: &str, env: &str) -> PathBuf {
        self.root.join("run").join(app).join(env)
    }

    /// Where the build caches of every app are kept (`[build] cache`).
    pub fn caches_root(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// The build caches of `app`, one directory per `[build] cache` entry
    /// (`home/.cache/pip`), and the lock builds take while they use them.
    pub fn build_cache_dir(&self, app: &str) -> PathBuf {
        self.caches_root().join(app)
    }

    /// This machine's copies of a shared store's pack indexes. Beside the
    /// build caches, under a name no app can have.
    pub fn pack_index_dir(&self) -> PathBuf {
        self.caches_root().join(".pack-indexes")
    }

    /// The layers of images made from artifacts, kept for the next export
    /// or push (see [`crate::image`]). Beside the build caches, under a
    /// name no app can have.
    pub fn image_cache_dir(&self) -> PathBuf {
        self.caches_root().join(".image-layers")
    }

    /// The `HOME` of `app`'s processes in environment `env`: writable,
    /// outside every release tree, kept from release to release.
    pub fn process_home(&self, app: &str, env: &str) -> PathBuf {
        self.run_dir(app, env).join("home")
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_home_is_private_and_a_loose_one_is_tightened_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        assert_eq!(home.create().unwrap(), None, "a new home needs no tightening");
        assert_eq!(mode(home.root()), 0o700);
        assert_eq!(mode(&home.tmp_dir()), 0o700);

        std::fs::set_permissions(home.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(home.create().unwrap(), Some(0o755), "a loose home is tightened and says what it was");
        assert_eq!(mode(home.root()), 0o700);
        assert_eq!(home.create().unwrap(), None, "and said once");
    }
}

//! Scratch space for one build, under the home's `tmp/`: the checkouts, and
//! the build command's own `HOME` and `TMPDIR`. Removed when the build ends,
//! whatever the outcome; a build killed outright leaves it behind, and the
//! next build removes it.

use std::fs;
use std::path::{Path, PathBuf};

use super::BuildError;

const PREFIX: &str = "build-";

/// One build's scratch directory.
pub(crate) struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates `build-<pid>-<n>` under `parent`.
    pub(crate) fn create(parent: &Path) -> Result<Self, BuildError> {
        let error = |path: &Path| {
            let path = path.to_owned();
            move |source| BuildError::WorkDir { path, source }
        };
        fs::create_dir_all(parent).map_err(error(parent))?;
        let pid = std::process::id();
        for n in 0.. {
            let path = parent.join(format!("{PREFIX}{pid}-{n}"));
            match fs::create_dir(&path) {
                Ok(()) => {
                    let work = Self { path };
                    for dir in [work.home(), work.tmp()] {
                        fs::create_dir(&dir).map_err(error(&dir))?;
                    }
                    return Ok(work);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(error(&path)(e)),
            }
        }
        unreachable!("some name is free")
    }

    /// The directory itself.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The build command's `HOME`.
    pub(crate) fn home(&self) -> PathBuf {
        self.path.join("home")
    }

    /// The build command's `TMPDIR`.
    pub(crate) fn tmp(&self) -> PathBuf {
        self.path.join("tmp")
    }

    /// A new, empty checkout directory named `name`.
    pub(crate) fn checkout(&self, name: &str) -> Result<PathBuf, BuildError> {
        let path = self.path.join(format!("checkout-{name}"));
        fs::create_dir(&path).map_err(|source| BuildError::WorkDir { path: path.clone(), source })?;
        Ok(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        crate::fs_tree::remove_tree(&self.path);
    }
}

/// Removes scratch directories of builds whose process is gone.
pub(crate) fn remove_abandoned(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            crate::fs_tree::remove_tree(&entry.path());
        }
    }
}

//! Build caches (`[build] cache`): directories of the build sandbox's
//! `HOME` or `/tmp` that outlive the build, kept per app in the home.
//!
//! ```text
//! cache/<app>/.lock                 held by the build using them
//! cache/<app>/home/.cache/pip       ~/.cache/pip in the sandbox
//! cache/<app>/tmp/go-build          /tmp/go-build in the sandbox
//! ```
//!
//! They are mounted outside `/app`, so nothing in them can reach an
//! artifact. One build of an app uses its caches at a time: package
//! managers differ in how well they share a cache between processes, and a
//! second build that waits is better than one that reads half a download.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use super::{BuildError, BuildEvent, BuildObserver};
use crate::app::CachePath;
use crate::home::Home;

const LOCK: &str = ".lock";

/// An app's caches, held for one build: where each is kept, and where the
/// sandbox mounts it. Dropping it lets the next build have them.
pub(crate) struct Caches {
    _lock: File,
    /// `(kept at, path in the sandbox)`.
    pub(crate) mounts: Vec<(Option<PathBuf>, String)>,
}

/// Takes `app`'s caches for a build, waiting (and telling `observer`) while
/// another build has them, and creates the directories `paths` name.
pub(crate) fn take(
    home: &Home,
    app: &str,
    paths: &[CachePath],
    observer: &dyn BuildObserver,
) -> Result<Caches, BuildError> {
    let dir = home.build_cache_dir(app);
    let error = |path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Cache { path, source }
    };
    crate::fs_tree::create_private_dir_all(&dir).map_err(error(&dir))?;
    let lock_path = dir.join(LOCK);
    let lock = crate::fs_tree::private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(error(&lock_path))?;
    if !crate::fs_tree::lock(&lock, FlockOperation::NonBlockingLockExclusive).map_err(error(&lock_path))? {
        observer.on_event(&BuildEvent::CacheWait { app });
        crate::fs_tree::lock(&lock, FlockOperation::LockExclusive).map_err(error(&lock_path))?;
    }
    let mut mounts = Vec::with_capacity(paths.len());
    for path in paths {
        let kept = dir.join(&path.key);
        crate::fs_tree::create_private_dir_all(&kept).map_err(error(&kept))?;
        mounts.push((Some(kept), path.in_sandbox.clone()));
    }
    Ok(Caches { _lock: lock, mounts })
}

/// What `graven gc --caches` did, or would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CachesRemoved {
    /// Apps whose caches were removed.
    pub apps: Vec<String>,
    /// Their size.
    pub bytes: u64,
    /// Apps skipped because a build is using their caches.
    pub in_use: Vec<String>,
}

/// Removes the build caches of every app (only measures them if
/// `dry_run`), but those a build is using now.
pub fn remove_caches(home: &Home, dry_run: bool) -> io::Result<CachesRemoved> {
    let mut report = CachesRemoved::default();
    let entries = match std::fs::read_dir(home.caches_root()) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e),
    };
    let mut apps: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            (is_dir && crate::app::is_valid_app_name(&name)).then(|| (name, entry.path()))
        })
        .collect();
    apps.sort();
    for (app, dir) in apps {
        let claim = crate::fs_tree::claim(&dir.join(LOCK))?;
        if matches!(claim, crate::fs_tree::Claim::Held) {
            report.in_use.push(app);
            continue;
        }
        report.bytes += crate::fs_tree::size_of_tree(&dir);
        if !dry_run {
            // Emptied while locked, so no build starts on half of it; the
            // lock file goes last.
            for entry in std::fs::read_dir(&dir)?.flatten() {
                if entry.file_name() != LOCK {
                    crate::fs_tree::remove_tree(&entry.path());
                }
            }
            crate::fs_tree::remove_tree(&dir);
        }
        report.apps.push(app);
    }
    Ok(report)
}

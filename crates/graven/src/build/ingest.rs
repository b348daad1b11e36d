//! Ingest: turns a build's output directory into blobs and a manifest.
//!
//! Three passes: a sorted walk that checks every entry and refuses what an
//! artifact cannot hold; hashing (and storing) the files in parallel; then
//! the directory listings, bottom up. Files are moved into the store when
//! nothing else shares them, since the build directory is thrown away.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use globset::GlobSet;
use rayon::prelude::*;

use super::{BuildEvent, BuildObserver};
use crate::Digest;
use crate::model::{Entry, EntryKind, FlatTree, Listing};
use crate::store::{Handover, ObjectKind, Store, StoreError};

/// An output tree that cannot become an artifact, or a failure reading it.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A name that is not UTF-8.
    #[error("'{path}' has a name that is not valid UTF-8: artifacts hold UTF-8 names only, so rename it in the build")]
    NonUtf8Name {
        /// The path, with invalid bytes replaced.
        path: String,
    },
    /// A fifo, socket or device file.
    #[error(
        "'{path}' is a {kind}: artifacts hold only files, directories and symlinks, so remove it in the build or add it to [build] exclude"
    )]
    Unsupported {
        /// The path, relative to the output.
        path: String,
        /// `fifo`, `socket`, `character device` or `block device`.
        kind: &'static str,
    },
    /// A file that changed while it was read.
    #[error("'{path}' changed while graven read it: is a process started by the build still writing to it?")]
    Changed {
        /// The file, relative to the output.
        path: String,
    },
    /// The filesystem failed.
    #[error("could not read '{}'", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What ingesting a tree produced.
#[derive(Debug, Clone)]
pub(crate) struct Ingested {
    /// The digest of the root listing.
    pub root: Digest,
    /// Regular files in the tree.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Bytes of blobs the store did not have.
    pub new_blob_bytes: u64,
    /// Bytes of listings the store did not have.
    pub new_manifest_bytes: u64,
    /// Every file and symlink by path, if asked for.
    pub flat: Option<FlatTree>,
    /// The symlinks that lead out of the tree (see
    /// [`crate::model::leaves_tree`]), by path, with their targets: the
    /// artifact's host references.
    pub host_references: Vec<(String, String)>,
    /// The files that hold one of [`IngestOptions::find`]'s paths, sorted.
    pub embedding: Vec<String>,
}

/// How to ingest.
pub(crate) struct IngestOptions<'a> {
    /// Paths (relative to the output) to leave out.
    pub exclude: &'a GlobSet,
    /// Where to store blobs and listings; `None` only hashes.
    pub store: Option<&'a dyn Store>,
    /// Whether to return the flat tree.
    pub flat: bool,
    /// Whether to re-hash the blobs and listings the store already has, and
    /// store again any whose contents do not match (`graven build --force`).
    pub repair: bool,
    /// Told of progress.
    pub observer: &'a dyn BuildObserver,
    /// Paths to look for in every file while it is hashed (see
    /// [`super::paths`]); the files that hold one are in
    /// [`Ingested::embedding`].
    pub find: Option<&'a aho_corasick::AhoCorasick>,
}

struct FileJob {
    path: String,
    size: u64,
    executable: bool,
    /// Device and inode, for a file with more than one link.
    inode: Option<(u64, u64)>,
    /// Its status change time when walked. A file shared with the outside
    /// is read twice (hashed, then copied), and an unchanged ctime afterwards
    /// shows that both reads saw the same contents.
    ctime: (i64, i64),
    /// Whether the file's inode is shared with something outside the tree.
    shared: bool,
    /// Links to the file's inode inside the tree.
    links: u64,
}

enum Pending {
    File(usize),
    Dir(usize),
    Symlink(String),
}

#[derive(Default)]
struct DirNode {
    entries: Vec<(String, Pending)>,
}

struct Walk<'a> {
    exclude: &'a GlobSet,
    files: Vec<FileJob>,
    dirs: Vec<DirNode>,
    /// For inodes with several links: links seen in the tree, and in all.
    links: HashMap<(u64, u64), (u64, u64)>,
    /// Symlinks that lead out of the tree, with their targets.
    host_references: Vec<(String, String)>,
}

/// Ingests the tree at `root`.
pub(crate) fn ingest(root: &Path, options: &IngestOptions<'_>) -> Result<Ingested, IngestError> {
    let mut walk = Walk {
        exclude: options.exclude,
        files: Vec::new(),
        dirs: Vec::new(),
        links: HashMap::new(),
        host_references: Vec::new(),
    };
    walk.dir(root, "")?;
    let Walk { mut files, dirs, links, mut host_references, .. } = walk;
    host_references.sort();
    // A file with more links than the tree holds shares its inode with
    // something outside the build: the store must copy it, or a change made
    // there would change the blob.
    for file in &mut files {
        if let Some(inode) = file.inode {
            let (seen, nlink) = links.get(&inode).copied().unwrap_or((0, u64::MAX));
            file.shared = seen < nlink;
            file.links = seen;
        }
    }

    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    options.observer.on_event(&BuildEvent::IngestStarted { files: files.len() as u64, bytes: total_bytes });
    let done_bytes = AtomicU64::new(0);
    let new_blob_bytes = AtomicU64::new(0);
    let hashed: Vec<(Digest, bool)> = files
        .par_iter()
        .map(|job| {
            let absolute = root.join(&job.path);
            let (digest, embeds) = hash_file(&absolute, job, options.find)?;
            if let Some(store) = options.store {
                if options.repair {
                    crate::store::remove_if_corrupt_blob(store, &digest)?;
                }
                // The store copies instead of moving a file whose inode has
                // more links than the tree holds: one shared with the outside.
                if store.local().put_blob(&digest, &absolute, Handover::Move { links: job.links })? {
                    new_blob_bytes.fetch_add(job.size, Ordering::Relaxed);
                }
                if job.shared && changed_since_walk(&absolute, job) {
                    // What was copied may not be what was hashed.
                    crate::store::remove_if_corrupt_blob(store, &digest)?;
                    return Err(IngestError::Changed { path: job.path.clone() });
                }
            }
            let done = done_bytes.fetch_add(job.size, Ordering::Relaxed) + job.size;
            options.observer.on_event(&BuildEvent::IngestProgress { bytes: done });
            Ok((digest, embeds))
        })
        .collect::<Result<_, IngestError>>()?;
    let digests: Vec<Digest> = hashed.iter().map(|(digest, _)| *digest).collect();
    let mut embedding: Vec<String> =
        files.iter().zip(&hashed).filter(|(_, (_, embeds))| *embeds).map(|(job, _)| job.path.clone()).collect();
    embedding.sort();
    crate::fail_point::check("ingest-after-blobs");

    // Listings bottom up: a directory's index is always below its children's.
    let mut trees = vec![Digest::of(b""); dirs.len()];
    let mut encoded = Vec::with_capacity(dirs.len());
    for (index, dir) in dirs.iter().enumerate().rev() {
        let entries = dir
            .entries
            .iter()
            .map(|(name, pending)| Entry {
                name: name.clone(),
                kind: match pending {
                    Pending::File(i) => {
                        EntryKind::File { executable: files[*i].executable, size: files[*i].size, digest: digests[*i] }
                    }
                    Pending::Dir(i) => EntryKind::Dir { tree: trees[*i] },
                    Pending::Symlink(target) => EntryKind::Symlink { target: target.clone() },
                },
            })
            .collect();
        let bytes = Listing { entries }.to_canonical_json();
        trees[index] = Digest::of(&bytes);
        encoded.push((trees[index], bytes));
    }
    let new_manifest_bytes = store_listings(options, &encoded)?;

    let flat = options.flat.then(|| {
        let mut flat = FlatTree::new();
        for (job, digest) in files.iter().zip(&digests) {
            flat.insert(
                job.path.clone(),
                EntryKind::File { executable: job.executable, size: job.size, digest: *digest },
            );
        }
        collect_links_and_dirs(&dirs, 0, "", &mut flat);
        flat
    });

    Ok(Ingested {
        root: trees[0],
        files: files.len() as u64,
        bytes: total_bytes,
        new_blob_bytes: new_blob_bytes.into_inner(),
        new_manifest_bytes,
        flat,
        host_references,
        embedding,
    })
}

/// Stores the listings the store lacks; their bytes.
fn store_listings(options: &IngestOptions<'_>, encoded: &[(Digest, Vec<u8>)]) -> Result<u64, StoreError> {
    let Some(store) = options.store else { return Ok(0) };
    encoded
        .par_iter()
        .map(|(digest, bytes)| {
            if options.repair {
                crate::store::remove_if_corrupt_object(store, ObjectKind::Manifest, digest)?;
            }
            Ok(if store.put_object(ObjectKind::Manifest, digest, bytes)? { bytes.len() as u64 } else { 0 })
        })
        .sum()
}

/// Adds the symlinks and directories under `dirs[index]` to `flat`. A
/// directory is listed by presence only (its contents are listed on their
/// own), so two trees that differ by an empty directory differ here too.
fn collect_links_and_dirs(dirs: &[DirNode], index: usize, prefix: &str, flat: &mut FlatTree) {
    for (name, pending) in &dirs[index].entries {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        match pending {
            Pending::Symlink(target) => {
                flat.insert(path, EntryKind::Symlink { target: target.clone() });
            }
            Pending::Dir(child) => {
                collect_links_and_dirs(dirs, *child, &path, flat);
                flat.insert(format!("{path}/"), EntryKind::Dir { tree: Digest::of(b"") });
            }
            Pending::File(_) => {}
        }
    }
}

impl Walk<'_> {
    /// Walks directory `absolute` (at `relative` in the tree); returns its index.
    fn dir(&mut self, absolute: &Path, relative: &str) -> Result<usize, IngestError> {
        let index = self.dirs.len();
        self.dirs.push(DirNode::default());
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| IngestError::Io { path, source }
        };
        let mut children: Vec<fs::DirEntry> = fs::read_dir(absolute)
            .map_err(io_error(absolute))?
            .collect::<Result<_, _>>()
            .map_err(io_error(absolute))?;
        children.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));

        let mut entries = Vec::with_capacity(children.len());
        for child in children {
            let os_name = child.file_name();
            let Some(name) = os_name.to_str() else {
                let path = Path::new(relative).join(&os_name);
                return Err(IngestError::NonUtf8Name { path: path.to_string_lossy().into_owned() });
            };
            let path = if relative.is_empty() { name.to_owned() } else { format!("{relative}/{name}") };
            if self.exclude.is_match(&path) {
                continue;
            }
            let child_path = child.path();
            let meta = child.metadata().map_err(io_error(&child_path))?;
            let file_type = meta.file_type();
            let pending = if file_type.is_file() {
                let inode = (meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
                if let Some(inode) = inode {
                    self.links.entry(inode).or_insert((0, meta.nlink())).0 += 1;
                }
                self.files.push(FileJob {
                    path,
                    size: meta.len(),
                    executable: meta.mode() & 0o100 != 0,
                    inode,
                    ctime: (meta.ctime(), meta.ctime_nsec()),
                    shared: false,
                    links: 1,
                });
                Pending::File(self.files.len() - 1)
            } else if file_type.is_dir() {
                Pending::Dir(self.dir(&child_path, &path)?)
            } else if file_type.is_symlink() {
                let target = fs::read_link(&child_path).map_err(io_error(&child_path))?;
                let Some(target) = target.to_str() else {
                    return Err(IngestError::NonUtf8Name { path: format!("{path} -> {}", target.to_string_lossy()) });
                };
                // Targets are data, stored as they are and never followed:
                // a venv's `bin/python -> /usr/bin/python3` is the machine's.
                if crate::model::leaves_tree(relative, target) {
                    self.host_references.push((path, target.to_owned()));
                }
                Pending::Symlink(target.to_owned())
            } else {
                let kind = if file_type.is_fifo() {
                    "fifo"
                } else if file_type.is_socket() {
                    "socket"
                } else if file_type.is_char_device() {
                    "character device"
                } else {
                    "block device"
                };
                return Err(IngestError::Unsupported { path, kind });
            };
            entries.push((name.to_owned(), pending));
        }
        self.dirs[index].entries = entries;
        Ok(index)
    }
}

/// Whether the file at `absolute` changed since the walk saw it (or is gone).
fn changed_since_walk(absolute: &Path, job: &FileJob) -> bool {
    fs::symlink_metadata(absolute).map_or(true, |meta| (meta.ctime(), meta.ctime_nsec()) != job.ctime)
}

/// The file's digest, and whether it holds one of `find`'s paths: one read.
fn hash_file(
    absolute: &Path,
    job: &FileJob,
    find: Option<&aho_corasick::AhoCorasick>,
) -> Result<(Digest, bool), IngestError> {
    let io_error = |source| IngestError::Io { path: absolute.to_owned(), source };
    let file = File::open(absolute).map_err(io_error)?;
    let (digest, total, embeds) = match find {
        Some(finder) => crate::digest::of_reader_finding(file, finder, finder.max_pattern_len()).map_err(io_error)?,
        None => crate::digest::of_reader(file).map(|(digest, total)| (digest, total, false)).map_err(io_error)?,
    };
    if total != job.size {
        return Err(IngestError::Changed { path: job.path.clone() });
    }
    Ok((digest, embeds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_after_the_walk_is_seen_through_the_ctime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared");
        fs::write(&path, "before").unwrap();
        let meta = fs::metadata(&path).unwrap();
        let job = FileJob {
            path: "shared".to_owned(),
            size: meta.len(),
            executable: false,
            inode: Some((meta.dev(), meta.ino())),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            shared: true,
            links: 1,
        };
        assert!(!changed_since_walk(&path, &job));
        // Same size, other bytes: only the ctime tells.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&path, "after!").unwrap();
        assert!(changed_since_walk(&path, &job));
        fs::remove_file(&path).unwrap();
        assert!(changed_since_walk(&path, &job));
    }
}

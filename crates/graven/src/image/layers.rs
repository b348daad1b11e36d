//! The artifact's layers: each `[image] layers` directory in a layer of its
//! own, in order, then the rest; every path under `app/`. A layer is a
//! function of the listing it is made from, so it is cached by that
//! listing's digest: a change that leaves `.venv` alone leaves its layer,
//! and the work of making it, alone.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::compress::{ChunkedEncoder, Compressed};
use super::{Compression, ImageError, ImageWarning, LayerOf};
use crate::Digest;
use crate::export::ExportError;
use crate::export::tar::{append, header};
use crate::model::Artifact;
use crate::model::manifest::{EntryKind, Listing};
use crate::store::{ArtifactError, Store};

/// The directory of the artifact's tree in the image.
pub const APP_DIR: &str = "app";

/// What one layer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    /// A directory of `[image] layers` (`.venv`), by its listing.
    Subtree { path: String, tree: Digest },
    /// Everything else: the tree at `root` without the subtrees.
    Rest { root: Digest, without: BTreeSet<String> },
}

impl Part {
    pub(super) fn of(&self) -> LayerOf {
        match self {
            Self::Subtree { path, .. } => LayerOf::Directory(path.clone()),
            Self::Rest { .. } => LayerOf::Rest,
        }
    }

    /// What the layer's bytes are a function of, with the format's version.
    fn cache_key(&self, compression: Compression) -> Digest {
        let what = match self {
            Self::Subtree { path, tree } => format!("subtree\n{path}\n{tree}"),
            Self::Rest { root, without } => {
                format!("rest\n{root}\n{}", without.iter().map(String::as_str).collect::<Vec<_>>().join("\n"))
            }
        };
        let chunk = super::compress::CHUNK;
        Digest::of(format!("graven layer 1\n{}\n{chunk}\n{what}", compression.name()).as_bytes())
    }
}

/// The parts of `artifact`'s image, in layer order, and what the settings
/// name that is not a directory of it.
pub(super) fn parts(
    store: &dyn Store,
    id: &Digest,
    artifact: &Artifact,
) -> Result<(Vec<Part>, Vec<ImageWarning>), ImageError> {
    let mut parts = Vec::new();
    let mut warnings = Vec::new();
    let mut without = BTreeSet::new();
    for path in &artifact.image.layers {
        match find(store, id, &artifact.root, path)? {
            Some(EntryKind::Dir { tree }) => {
                parts.push(Part::Subtree { path: path.clone(), tree });
                without.insert(path.clone());
            }
            Some(_) => warnings.push(ImageWarning::LayerNotADirectory { path: path.clone() }),
            None => warnings.push(ImageWarning::LayerMissing { path: path.clone() }),
        }
    }
    parts.push(Part::Rest { root: artifact.root, without });
    Ok((parts, warnings))
}

/// The entry at `path` of the tree at `root`, if there is one (no symlink
/// is followed).
fn find(store: &dyn Store, id: &Digest, root: &Digest, path: &str) -> Result<Option<EntryKind>, ImageError> {
    let mut listing = *root;
    let mut walked = String::new();
    let mut parts = path.split('/').peekable();
    while let Some(name) = parts.next() {
        let entries = load(store, id, &listing, &walked)?;
        let Some(entry) = entries.entries.into_iter().find(|entry| entry.name == name) else { return Ok(None) };
        if parts.peek().is_none() {
            return Ok(Some(entry.kind));
        }
        let EntryKind::Dir { tree } = entry.kind else { return Ok(None) };
        listing = tree;
        walked = if walked.is_empty() { name.to_owned() } else { format!("{walked}/{name}") };
    }
    Ok(None)
}

fn load(store: &dyn Store, id: &Digest, listing: &Digest, path: &str) -> Result<Listing, ImageError> {
    Listing::load(store, listing, path)
        .map_err(|source| ImageError::Export(ArtifactError::Tree { id: *id, source: Box::new(source) }.into()))
}

/// A layer made, or found in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Made {
    pub(super) compressed: Compressed,
    /// The blob, in the cache.
    pub(super) blob: PathBuf,
    /// Whether it was in the cache already.
    pub(super) reused: bool,
}

/// The layer of `part`: from the cache in `cache` if it is there and whole,
/// else made, written to the cache, and returned.
pub(super) fn layer(
    store: &dyn Store,
    id: &Digest,
    part: &Part,
    compression: Compression,
    cache: &Path,
) -> Result<Made, ImageError> {
    let key = part.cache_key(compression);
    let record = cache.join(format!("{}.json", key.hex()));
    if let Some(made) = cached(cache, &record) {
        return Ok(made);
    }
    let cache_error = |source| ImageError::Cache { path: cache.to_owned(), source };
    fs::create_dir_all(cache.join("blobs")).map_err(cache_error)?;
    let temp = tempfile::Builder::new().prefix(".layer-").tempfile_in(cache).map_err(cache_error)?;
    let mut encoder = ChunkedEncoder::new(io::BufWriter::with_capacity(1 << 20, temp.as_file()), compression);
    write_tar(store, id, part, &mut encoder)?;
    let (compressed, _) = encoder.finish().map_err(cache_error)?;
    let blob = cache.join("blobs").join(compressed.digest.hex());
    temp.as_file().sync_all().map_err(cache_error)?;
    // Read-only: blobs are hard-linked into the layouts written from them.
    fs::set_permissions(temp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o444)).map_err(cache_error)?;
    temp.persist(&blob).map_err(|e| cache_error(e.error))?;
    let line = serde_json::json!({
        "digest": compressed.digest,
        "diff_id": compressed.diff_id,
        "size": compressed.size,
    });
    let temp = tempfile::Builder::new().prefix(".record-").tempfile_in(cache).map_err(cache_error)?;
    fs::write(temp.path(), line.to_string()).map_err(cache_error)?;
    temp.persist(&record).map_err(|e| cache_error(e.error))?;
    Ok(Made { compressed, blob, reused: false })
}

/// The cached layer `record` describes, if its blob is there with its size.
/// The cache is the user's own, but a blob cut short by a crash must not
/// be used.
fn cached(cache: &Path, record: &Path) -> Option<Made> {
    #[derive(serde::Deserialize)]
    struct Record {
        digest: Digest,
        diff_id: Digest,
        size: u64,
    }
    let record: Record = serde_json::from_slice(&fs::read(record).ok()?).ok()?;
    let blob = cache.join("blobs").join(record.digest.hex());
    let whole = fs::metadata(&blob).ok()?.len() == record.size;
    let compressed = Compressed { digest: record.digest, diff_id: record.diff_id, size: record.size };
    whole.then_some(Made { compressed, blob, reused: true })
}

/// Writes the tar stream of `part`: its parent directories under `app/`,
/// then its entries, depth first, names sorted, as every export does.
fn write_tar(store: &dyn Store, id: &Digest, part: &Part, out: &mut dyn Write) -> Result<(), ImageError> {
    let mut builder = tar::Builder::new(out);
    let io_error = |source| ImageError::Export(ExportError::Write { path: PathBuf::from("-"), source });
    let directory = |builder: &mut tar::Builder<&mut dyn Write>, name: &str| {
        let mut header = header(tar::EntryType::Directory, 0o755, 0);
        builder.append_data(&mut header, format!("{name}/"), io::empty()).map_err(io_error)
    };
    match part {
        Part::Subtree { path, tree } => {
            let mut name = APP_DIR.to_owned();
            directory(&mut builder, &name)?;
            for component in path.split('/') {
                name = format!("{name}/{component}");
                directory(&mut builder, &name)?;
            }
            append_tree(&mut builder, store, id, tree, path, &BTreeSet::new())?;
        }
        Part::Rest { root, without } => {
            directory(&mut builder, APP_DIR)?;
            append_tree(&mut builder, store, id, root, "", without)?;
        }
    }
    builder.into_inner().map_err(io_error)?;
    Ok(())
}

/// Appends the tree of `listing`, at `path` of the artifact, leaving out
/// the paths in `without` and what is below them.
fn append_tree(
    builder: &mut tar::Builder<&mut dyn Write>,
    store: &dyn Store,
    id: &Digest,
    listing: &Digest,
    path: &str,
    without: &BTreeSet<String>,
) -> Result<(), ImageError> {
    for entry in load(store, id, listing, path)?.entries {
        let at = if path.is_empty() { entry.name.clone() } else { format!("{path}/{}", entry.name) };
        if without.contains(&at) {
            continue;
        }
        append(builder, store, id, &at, &format!("{APP_DIR}/{at}"), &entry.kind)?;
        if let EntryKind::Dir { tree } = &entry.kind {
            append_tree(builder, store, id, tree, &at, without)?;
        }
    }
    Ok(())
}

//! The tar stream of an export.

use std::io::{self, Write};
use std::path::Path;

use super::{ExportError, write_error};
use crate::model::EntryKind;
use crate::store::{ArtifactError, walk};
use crate::store::{CheckedBlob, Store, open_checked_blob};
use crate::{Digest, NORMALISED_MTIME};

/// Writes the tree of artifact `id`, at listing `root`, as a tar stream;
/// returns the number of entries. Every path is made of names validated on
/// load, and only a directory entry is ever descended into, so no entry of
/// the archive can lie below a symlink or outside the archive's root.
pub(super) fn write(store: &dyn Store, id: &Digest, root: &Digest, out: &mut dyn Write) -> Result<u64, ExportError> {
    let mut builder = tar::Builder::new(out);
    let mut entries = 0u64;
    walk(store, id, root, &mut |path, kind| {
        entries += 1;
        append(&mut builder, store, id, path, path, kind)
    })?;
    builder.into_inner().map_err(write_error(Path::new("-")))?;
    Ok(entries)
}

/// A normalised header: owner 0, no names, the normalised mtime.
pub(crate) fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(NORMALISED_MTIME);
    header
}

/// Appends the entry at `path` of artifact `id`'s tree (its contents read
/// from `store`) as `name` in the archive.
pub(crate) fn append(
    builder: &mut tar::Builder<&mut dyn Write>,
    store: &dyn Store,
    id: &Digest,
    path: &str,
    name: &str,
    kind: &EntryKind,
) -> Result<(), ExportError> {
    let io_error = write_error(Path::new("-"));
    match kind {
        EntryKind::Dir { .. } => {
            let mut header = header(tar::EntryType::Directory, kind.mode(), 0);
            builder.append_data(&mut header, format!("{name}/"), io::empty()).map_err(io_error)
        }
        EntryKind::Symlink { target } => {
            let mut header = header(tar::EntryType::Symlink, kind.mode(), 0);
            builder.append_link(&mut header, name, target).map_err(io_error)
        }
        EntryKind::File { size, digest, .. } => {
            let blob_error = |source| ArtifactError::Blob { id: *id, path: path.to_owned(), source };
            let mut header = header(tar::EntryType::Regular, kind.mode(), *size);
            // A header gives the size before the contents: the checked
            // reader fails before a blob of another size corrupts the archive.
            let mut blob = open_checked_blob(store, digest, *size).map_err(blob_error)?;
            builder.append_data(&mut header, name, &mut blob).map_err(|source| {
                if blob.failed() {
                    blob_error(CheckedBlob::into_store_error(digest, source)).into()
                } else {
                    io_error(source)
                }
            })
        }
    }
}

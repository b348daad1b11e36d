//! The tar stream of an export.

use std::io::{self, Write};
use std::path::Path;

use super::{ExportError, write_error};
use crate::build::manifest::{EntryKind, walk};
use crate::store::{Store, StoreError};
use crate::{Digest, NORMALISED_MTIME};

/// Writes the tree at listing `root` as a tar stream; returns the number of
/// entries.
pub(super) fn write(store: &dyn Store, root: &Digest, out: &mut dyn Write) -> Result<u64, ExportError> {
    let mut builder = tar::Builder::new(out);
    let mut entries = 0u64;
    walk(store, root, &mut |path, kind| {
        entries += 1;
        append(&mut builder, store, path, kind)
    })?;
    builder.into_inner().map_err(write_error(Path::new("-")))?;
    Ok(entries)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(NORMALISED_MTIME);
    header
}

fn append(
    builder: &mut tar::Builder<&mut dyn Write>,
    store: &dyn Store,
    path: &str,
    kind: &EntryKind,
) -> Result<(), ExportError> {
    let io_error = write_error(Path::new("-"));
    match kind {
        EntryKind::Dir { .. } => {
            let mut header = header(tar::EntryType::Directory, kind.mode(), 0);
            builder.append_data(&mut header, format!("{path}/"), io::empty()).map_err(io_error)
        }
        EntryKind::Symlink { target } => {
            let mut header = header(tar::EntryType::Symlink, kind.mode(), 0);
            builder.append_link(&mut header, path, target).map_err(io_error)
        }
        EntryKind::File { size, digest, .. } => {
            let mut header = header(tar::EntryType::Regular, kind.mode(), *size);
            let mut blob = Exact { inner: store.open_blob(digest)?, remaining: *size };
            builder.append_data(&mut header, path, &mut blob).map_err(|source| {
                let action = match source.kind() {
                    io::ErrorKind::UnexpectedEof => "blob is shorter than its listing says:",
                    io::ErrorKind::InvalidData => "blob is longer than its listing says:",
                    _ => return io_error(source),
                };
                ExportError::Store(StoreError::Io { action, path: digest.to_string().into(), source })
            })
        }
    }
}

/// Reads a blob that must be exactly `remaining` bytes long: a header gives
/// the size before the contents, so a blob of any other size would leave a
/// corrupt archive. Fails with `UnexpectedEof` if it is shorter, and
/// `InvalidData` if it is longer.
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: io::Read> io::Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::ErrorKind::InvalidData.into()),
            };
        }
        let max = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..max])?;
        if read == 0 && max > 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

//! Exports: an artifact written as an archive that is byte-identical for the
//! same artifact on any machine. Entries come in manifest order (depth
//! first, names sorted bytewise); every header has uid/gid 0, no user or
//! group names, the normalised mtime and the normalised mode; compression
//! levels are fixed and compressors single-threaded.
//!
//! Exports only read the store; the file is written under a temporary name
//! and renamed, so a killed export leaves no partial archive behind.

pub(crate) mod tar;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::Digest;
use crate::model::Artifact;
use crate::store::ArtifactError;

/// An archive format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Uncompressed tar.
    Tar,
    /// tar, gzip level 6.
    TarGz,
    /// tar, zstd level 3.
    TarZst,
}

impl Format {
    /// Every format, with its name.
    pub const ALL: [(Self, &'static str); 3] = [(Self::Tar, "tar"), (Self::TarGz, "tar.gz"), (Self::TarZst, "tar.zst")];

    /// The format's name, as given to `--format`.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(format, _)| *format == self).map_or("tar", |(_, name)| name)
    }
}

/// The gzip level of `tar.gz` exports. Part of the byte-identical promise.
pub const GZIP_LEVEL: u32 = 6;
/// The zstd level of `tar.zst` exports. Part of the byte-identical promise.
pub const ZSTD_LEVEL: i32 = 3;

/// An export that failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The artifact's record, a listing or a blob is missing or invalid.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Writing the archive failed.
    #[error("could not write the archive to {}", path.display())]
    Write {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries in the archive (files, directories, symlinks).
    pub entries: u64,
    /// Bytes written (after compression).
    pub bytes: u64,
}

/// Writes artifact `id` from `store` to `out` in `format`.
pub fn export(
    store: &dyn crate::store::Store,
    id: &Digest,
    format: Format,
    out: impl Write,
) -> Result<ExportSummary, ExportError> {
    // From a shared store: what the local one lacks, checked on the way.
    store.fetch(id)?;
    let artifact = Artifact::load(store, id)?;
    let mut counter = CountingWriter { inner: out, bytes: 0 };
    let entries = match format {
        Format::Tar => tar::write(store, id, &artifact.root, &mut counter)?,
        Format::TarGz => {
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(&mut counter, flate2::Compression::new(GZIP_LEVEL));
            let entries = tar::write(store, id, &artifact.root, &mut gz)?;
            gz.finish().map_err(write_error(Path::new("-")))?;
            entries
        }
        Format::TarZst => {
            let mut zst = zstd::Encoder::new(&mut counter, ZSTD_LEVEL).map_err(write_error(Path::new("-")))?;
            zst.include_checksum(true).map_err(write_error(Path::new("-")))?;
            let entries = tar::write(store, id, &artifact.root, &mut zst)?;
            zst.finish().map_err(write_error(Path::new("-")))?;
            entries
        }
    };
    counter.flush().map_err(write_error(Path::new("-")))?;
    Ok(ExportSummary { entries, bytes: counter.bytes })
}

/// Writes artifact `id` to the file `path`, atomically: see
/// [`write_file_atomically`].
pub fn export_to_path(
    store: &dyn crate::store::Store,
    id: &Digest,
    format: Format,
    path: &Path,
) -> Result<ExportSummary, ExportError> {
    let named = |error| match error {
        ExportError::Write { source, .. } => ExportError::Write { path: path.to_owned(), source },
        other @ ExportError::Artifact(_) => other,
    };
    write_file_atomically(path, |out| export(store, id, format, out)).map_err(named)
}

/// Writes the file `path` with `write`, atomically: under a temporary name
/// in the same directory, renamed when complete, so that a killed export
/// leaves no partial file behind. A `path` that is not a regular file
/// (`/dev/null`, a fifo, a terminal) is written to as it is, never
/// replaced.
pub fn write_file_atomically<T, E: From<ExportError>>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> Result<T, E> {
    let failed = |source| E::from(ExportError::Write { path: path.to_owned(), source });
    if std::fs::metadata(path).is_ok_and(|meta| !meta.is_file()) {
        let file = std::fs::OpenOptions::new().write(true).open(path).map_err(failed)?;
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        let done = write(&mut out)?;
        out.flush().map_err(failed)?;
        return Ok(done);
    }
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new().prefix(".graven-export-").tempfile_in(dir).map_err(failed)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, temp.as_file());
    let done = write(&mut out)?;
    out.flush().map_err(failed)?;
    drop(out);
    // tempfile creates 0600; an export is as readable as any file the user writes.
    let mode = 0o666 & !umask();
    temp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(failed)?;
    temp.as_file().sync_all().map_err(failed)?;
    temp.persist(path).map_err(|e| failed(e.error))?;
    Ok(done)
}

/// The process's umask (read by setting it and setting it back).
pub(crate) fn umask() -> u32 {
    let mask = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o022));
    rustix::process::umask(mask);
    mask.bits()
}

pub(crate) fn write_error(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Write { path: path.to_owned(), source }
}

struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

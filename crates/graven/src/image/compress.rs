//! A layer's compression, on every core, with the same bytes whatever the
//! number of cores: the tar stream is cut into chunks of [`CHUNK`] bytes,
//! each compressed on its own into one gzip member (or zstd frame), and the
//! results are written in order. A stream of members is one valid gzip
//! stream (RFC 1952, section 2.2), as every image runtime reads it.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;

use super::Compression;
use crate::Digest;
use crate::digest::Hasher;

/// The uncompressed bytes of one member. Part of the byte-identical
/// promise: another size gives other bytes.
pub const CHUNK: usize = 4 << 20;

/// What a finished layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Compressed {
    /// The digest of the compressed bytes: the layer's blob.
    pub(super) digest: Digest,
    /// The digest of the tar stream: the layer's `diff_id`.
    pub(super) diff_id: Digest,
    /// The compressed size.
    pub(super) size: u64,
}

/// A writer of the tar stream that writes its compressed form to `out`.
pub(super) struct ChunkedEncoder<W: Write> {
    out: W,
    compression: Compression,
    chunk: Vec<u8>,
    /// Chunks being compressed, oldest first.
    pending: VecDeque<mpsc::Receiver<io::Result<Vec<u8>>>>,
    /// How many may be in flight: enough to keep every core busy, few
    /// enough to bound memory.
    limit: usize,
    uncompressed: Hasher,
    compressed: Hasher,
    size: u64,
    chunks: u64,
}

impl<W: Write> ChunkedEncoder<W> {
    pub(super) fn new(out: W, compression: Compression) -> Self {
        Self {
            out,
            compression,
            chunk: Vec::with_capacity(CHUNK),
            pending: VecDeque::new(),
            limit: 2 * rayon::current_num_threads().max(1),
            uncompressed: Hasher::default(),
            compressed: Hasher::default(),
            size: 0,
            chunks: 0,
        }
    }

    /// Compresses what is left, waits for every chunk and flushes `out`.
    pub(super) fn finish(mut self) -> io::Result<(Compressed, W)> {
        // Even an empty stream is one member: a valid, empty, gzip stream.
        if !self.chunk.is_empty() || self.chunks == 0 {
            self.submit()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.out.flush()?;
        let done =
            Compressed { digest: self.compressed.finish(), diff_id: self.uncompressed.finish(), size: self.size };
        Ok((done, self.out))
    }

    fn submit(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        let (sender, receiver) = mpsc::sync_channel(1);
        let compression = self.compression;
        rayon::spawn(move || {
            // The receiver is gone only when the export failed meanwhile.
            let _ = sender.send(compress(&data, compression));
        });
        self.pending.push_back(receiver);
        self.chunks += 1;
        while self.pending.len() > self.limit {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(receiver) = self.pending.pop_front() else { return Ok(()) };
        let bytes = receiver.recv().map_err(|_| io::Error::other("a compression job ended without a result"))??;
        self.compressed.update(&bytes);
        self.size += bytes.len() as u64;
        self.out.write_all(&bytes)
    }
}

impl<W: Write> Write for ChunkedEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.chunk.len();
        let taken = &buf[..buf.len().min(room)];
        self.uncompressed.update(taken);
        self.chunk.extend_from_slice(taken);
        if self.chunk.len() == CHUNK {
            self.submit()?;
        }
        Ok(taken.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are cut by size only, never by flushes: the same stream
        // gives the same bytes however it was written.
        Ok(())
    }
}

/// One chunk, compressed on its own.
fn compress(data: &[u8], compression: Compression) -> io::Result<Vec<u8>> {
    match compression {
        Compression::Gzip => {
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(Vec::with_capacity(data.len() / 2), flate2::Compression::new(super::GZIP_LEVEL));
            gz.write_all(data)?;
            gz.finish()
        }
        Compression::Zstd => zstd::bulk::compress(data, super::ZSTD_LEVEL),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn encode(data: &[u8], compression: Compression, piece: usize) -> (Compressed, Vec<u8>) {
        let mut encoder = ChunkedEncoder::new(Vec::new(), compression);
        for part in data.chunks(piece.max(1)) {
            encoder.write_all(part).unwrap();
            encoder.flush().unwrap();
        }
        encoder.finish().unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| u8::try_from((i * 7 + i / 1000) % 251).unwrap()).collect()
    }

    #[test]
    fn the_bytes_do_not_depend_on_how_the_stream_was_written() {
        let data = sample(CHUNK * 2 + 12_345);
        let (first, bytes) = encode(&data, Compression::Gzip, 1 << 20);
        let (second, again) = encode(&data, Compression::Gzip, 4097);
        assert_eq!(bytes, again);
        assert_eq!(first, second);
        assert_eq!(first.diff_id, Digest::of(&data));
        assert_eq!(first.digest, Digest::of(&bytes));
        assert_eq!(first.size, bytes.len() as u64);
    }

    #[test]
    fn many_gzip_members_read_back_as_one_stream() {
        let data = sample(CHUNK * 3 + 1);
        let (_, bytes) = encode(&data, Compression::Gzip, 65536);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn many_zstd_frames_read_back_as_one_stream() {
        let data = sample(CHUNK + 99);
        let (_, bytes) = encode(&data, Compression::Zstd, 65536);
        let mut back = Vec::new();
        zstd::stream::read::Decoder::new(&bytes[..]).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn an_empty_stream_is_a_valid_empty_gzip_stream() {
        let (done, bytes) = encode(b"", Compression::Gzip, 1);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut back).unwrap();
        assert!(back.is_empty());
        assert_eq!(done.diff_id, Digest::of(b""));
    }
}

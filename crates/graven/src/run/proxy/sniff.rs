//! A client connection's bytes, watched for a request head with both
//! `Content-Length` and `Transfer-Encoding`: the shape of a request
//! smuggling attempt. hyper reads such a request as chunked and drops the
//! length (as RFC 9112 allows), so the request it hands over cannot tell;
//! the proxy refuses it instead (400), before any of it reaches the app
//! (as RFC 9112, 6.1, lets a server do).
//!
//! The watch reads lines: a line that begins with either header name sets
//! a mark, a blank line (the end of a head) checks both marks and clears
//! them. It does not know where bodies are, so a body line of that shape
//! sets a mark too; the service clears the flag at every request, and acts
//! on it only for a request that does have a `Transfer-Encoding`, so a
//! false alarm needs a chunked request whose own preceding bytes hold
//! header-shaped lines of both names.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const LENGTH: &[u8] = b"content-length:";
const CHUNKED: &[u8] = b"transfer-encoding:";
/// The bytes of a line the watch looks at: the longer name.
const PREFIX: usize = CHUNKED.len();

/// Finds heads with both names; see the module.
#[derive(Debug, Default)]
pub(super) struct HeadWatch {
    line: [u8; PREFIX],
    /// Bytes of the current line so far (counting past [`PREFIX`]).
    len: usize,
    length: bool,
    chunked: bool,
}

impl HeadWatch {
    /// Reads `bytes`; whether a head with both names ended in them. A
    /// line is looked at up to its first [`PREFIX`] bytes and skipped to
    /// its end from there: a long cookie, or a body's bytes, cost a
    /// `memchr`, not a step per byte. A line read whole in one read, as
    /// nearly every line is, is looked at where it lies; only one cut by
    /// the end of a read is gathered in [`HeadWatch::line`].
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut found = false;
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            let line = &bytes[..end];
            let marks = if self.len == 0
                && let Some(start) = whole(line)
            {
                marks(start)
            } else {
                self.extend(line);
                marks(&self.line[..self.len.min(PREFIX)])
            };
            if let Some((length, chunked)) = marks {
                self.length |= length;
                self.chunked |= chunked;
            } else {
                found |= self.length && self.chunked;
                self.length = false;
                self.chunked = false;
            }
            self.len = 0;
            bytes = &bytes[end + 1..];
        }
        self.extend(bytes);
        found
    }

    /// Adds `part` of a line (no `\n` in it) to the current one: its bytes
    /// but `\r` (a line may end in CRLF or LF alone, as parsers accept),
    /// until the line is longer than [`PREFIX`], when the rest can change
    /// nothing. Their case is left: [`marks`] ignores it.
    fn extend(&mut self, part: &[u8]) {
        for &byte in part {
            if self.len > PREFIX {
                return;
            }
            if byte != b'\r' {
                if let Some(slot) = self.line.get_mut(self.len) {
                    *slot = byte;
                }
                self.len += 1;
            }
        }
    }
}

/// The start of a whole `line` (its `\n` not in it) as [`HeadWatch::extend`]
/// would gather it, found without copying: the line less its final `\r`,
/// when no other `\r` is within its first [`PREFIX`] bytes; `None` for the
/// rare line that has one there, to be gathered byte by byte.
fn whole(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = &line[..line.len().min(PREFIX)];
    memchr::memchr(b'\r', start).is_none().then_some(start)
}

/// Which names a line that starts with `start` has; `None` for a blank
/// line, the end of a head.
fn marks(start: &[u8]) -> Option<(bool, bool)> {
    let named = |name: &[u8]| start.get(..name.len()).is_some_and(|part| part.eq_ignore_ascii_case(name));
    (!start.is_empty()).then(|| (named(LENGTH), named(CHUNKED)))
}

/// A client's stream, its reads fed to a [`HeadWatch`] that raises `seen`
/// and told to its connection (whose timer starts a head's at its first
/// byte).
pub(super) struct Sniffed<S> {
    stream: S,
    watch: HeadWatch,
    seen: Arc<AtomicBool>,
    conn: Arc<super::ClientConn>,
}

impl<S> Sniffed<S> {
    pub(super) fn new(stream: S, conn: &Arc<super::ClientConn>) -> (Self, Arc<AtomicBool>) {
        let seen = Arc::new(AtomicBool::new(false));
        (Self { stream, watch: HeadWatch::default(), seen: Arc::clone(&seen), conn: Arc::clone(conn) }, seen)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                this.conn.read_some();
            }
            if this.watch.feed(read) {
                this.seen.store(true, Ordering::Relaxed);
            }
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_with_both_names_is_found_however_it_is_cut_or_spelled() {
        let head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for cut in 1..head.len() {
            let mut watch = HeadWatch::default();
            let found = watch.feed(&head[..cut]) | watch.feed(&head[cut..]);
            assert!(found, "cut at {cut}");
        }
        let mut watch = HeadWatch::default();
        assert!(
            watch.feed(b"POST / HTTP/1.1\ntransfer-ENCODING: chunked\ncontent-length: 3\n\n"),
            "LF alone, any case"
        );
    }

    #[test]
    fn heads_with_one_name_or_none_are_not() {
        let mut watch = HeadWatch::default();
        assert!(!watch.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"));
        assert!(!watch.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"));
        assert!(!watch.feed(b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nX-Transfer-Encoding: chunked\r\n\r\n"));
        // A line is looked at by its start only, however long it is.
        let cookie = format!("Cookie: {}\r\n", "a".repeat(10_000));
        let head = format!("POST / HTTP/1.1\r\n{cookie}Content-Length: 4\r\n{cookie}\r\n");
        assert!(!watch.feed(head.as_bytes()));
        let both =
            format!("POST / HTTP/1.1\r\n{cookie}Content-Length: 4\r\n{cookie}Transfer-Encoding: chunked\r\n\r\n");
        assert!(watch.feed(both.as_bytes()));
        // Marks do not carry from one head to the next.
        assert!(
            !watch.feed(
                b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
        );
    }

    #[test]
    fn a_line_read_whole_is_read_as_it_is_gathered_byte_by_byte() {
        let heads: [&[u8]; 4] = [
            b"POST / HTTP/1.1\r\nContent-\rLength: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\r\nTRANSFER-encoding:chunked\n\r\r\r\n",
            b"POST / HTTP/1.1\r\nContent-Length\r\nTransfer-Encodin\r\n\r\n",
        ];
        let expected = [true, false, true, false];
        for (head, expected) in heads.into_iter().zip(expected) {
            let whole = HeadWatch::default().feed(head);
            let mut watch = HeadWatch::default();
            let gathered = head.iter().fold(false, |found, byte| watch.feed(std::slice::from_ref(byte)) | found);
            let shown = String::from_utf8_lossy(head);
            assert_eq!((whole, gathered), (expected, expected), "{shown:?}");
        }
    }
}

//! The backend's side of the HTTP proxy: a connection to one web process,
//! on which requests are written and responses read (HTTP/1.1, RFC 9112),
//! kept alive between requests by the event loop it was made on.
//!
//! hyper serves the clients, whose bytes are untrusted; this side talks
//! to the app's own processes, and does only what a proxy needs of it:
//! write a request head and its body, read a response head with
//! `httparse` (the parser hyper itself uses) and its body as it is framed,
//! and say when the connection can carry the next request. A response
//! whose framing is unclear (conflicting lengths, a malformed chunk) is an
//! error and the connection is closed, never read further: what is left on
//! it cannot be taken for the next response.
//!
//! A request is written while its response is awaited, not before: a
//! backend may answer (`413`) before it read the body, and that answer is
//! what the client gets.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

use super::CONNECT_TIMEOUT;
use super::http::ProxyBody;

/// The most a response head may take: 64 KiB, within which an offset
/// fits 16 bits. nginx's default is 4-8 KiB; a head past this is refused
/// (`502`), not read on.
const MAX_HEAD: usize = u16::MAX as usize;

/// The most header fields a response head may have, as hyper's own limit.
const MAX_HEADERS: usize = 100;

/// The most a chunk's size line (with its extensions) or a trailer
/// section may take.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// What one read from a backend takes at most.
const READ_SIZE: usize = 16 * 1024;

thread_local! {
    /// Where a backend's bytes are read to before they are appended to the
    /// connection's buffer: one per event loop, zeroed once, so that a read
    /// needs no unsafe code and no zeroing of its own.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

/// An HTTP/1.1 connection to one backend.
pub(super) struct Upstream {
    pub(super) backend: SocketAddr,
    /// The backends it was made for (see [`super::Lease::generation`]).
    pub(super) generation: u64,
    stream: TcpStream,
    /// What was read and not yet given out: the rest of a response head,
    /// or of a body.
    buffer: BytesMut,
    /// How what is left of the response being read ends.
    body: Framing,
    /// Whether it may carry another request once this response is read:
    /// the backend keeps it open, and the request was written whole.
    reusable: bool,
    /// The last response head's fields, for the next one's.
    fields: Fields,
}

/// A request as it is sent to a backend, borrowed from the client's (so
/// that a request sent on a kept connection the backend had just closed
/// can be sent again on a new one).
pub(super) struct Outgoing<'a> {
    pub(super) method: &'a Method,
    /// In origin form (`/path?query`).
    pub(super) target: &'a Uri,
    /// The client's headers, as hyper read them: what the app gets is
    /// made of them as they are written (see [`encode_head`]).
    pub(super) headers: &'a HeaderMap,
    /// The client's address, as `X-Forwarded-For` names it.
    pub(super) client: &'a str,
    /// An upgrade: `Connection: upgrade` and the client's `Upgrade` are
    /// passed on.
    pub(super) upgrade: bool,
    pub(super) body: ProxyBody,
}

/// Why a request got no response head.
#[derive(Debug)]
pub(super) enum Failed {
    /// The backend closed or broke the connection, or answered with what
    /// is not an HTTP/1.1 response.
    Backend(io::Error),
    /// The client's body could not be read (the client went away, or sent
    /// less than it said).
    Client(io::Error),
}

impl Upstream {
    /// Connects to `backend`, within [`CONNECT_TIMEOUT`]. Boxed: a
    /// request's future, its response's body and the loop's list move it
    /// from one to the next, a pointer and not the connection's state.
    pub(super) async fn connect(backend: SocketAddr, generation: u64) -> io::Result<Box<Self>> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        Ok(Box::new(Self {
            backend,
            generation,
            stream,
            buffer: BytesMut::new(),
            body: Framing::Done,
            reusable: true,
            fields: Fields::default(),
        }))
    }

    /// Sends `request`, and reads its response's head (past any `1xx`
    /// but `101`); its body is read by [`Upstream::poll_body`].
    pub(super) async fn send(&mut self, request: Outgoing<'_>) -> Result<Response<()>, Failed> {
        let head_request = *request.method == Method::HEAD;
        let sending = Sending::of(&request.body, request.headers);
        let mut head = Vec::with_capacity(512);
        encode_head(&mut head, &request, self.backend, sending);
        self.reusable = false;
        self.body = Framing::Done;
        let Self { stream, buffer, fields, .. } = self;
        let (mut reader, mut writer) = stream.split();
        let mut writing = std::pin::pin!(write_request(&mut writer, head, request.body, sending));
        // Whether the request was written whole; `None` while it is written.
        let mut written: Option<bool> = None;
        let parsed = std::future::poll_fn(|cx| {
            if written.is_none()
                && let Poll::Ready(outcome) = writing.as_mut().poll(cx)
            {
                match outcome {
                    Ok(()) => written = Some(true),
                    Err(Failed::Client(failed)) => return Poll::Ready(Err(Failed::Client(failed))),
                    // The backend may have answered before it closed: read on.
                    Err(Failed::Backend(_)) => written = Some(false),
                }
            }
            poll_head(Pin::new(&mut reader), cx, buffer, head_request, fields).map_err(Failed::Backend)
        })
        .await?;
        let Parsed { response, framing, keep_alive } = parsed;
        self.reusable = keep_alive && written == Some(true);
        self.body = framing;
        Ok(response)
    }

    /// The next part of the response's body; `None` at its end. An error
    /// ends the connection.
    pub(super) fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let polled = self.poll_body_inner(cx);
        if let Poll::Ready(Some(Err(_))) = polled {
            self.reusable = false;
            self.body = Framing::Done;
        }
        polled
    }

    fn poll_body_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if !self.buffer.is_empty() {
                match &mut self.body {
                    Framing::Done => return Poll::Ready(None),
                    Framing::Length(left) => {
                        let take = usize::try_from(*left).map_or(self.buffer.len(), |left| left.min(self.buffer.len()));
                        *left -= take as u64;
                        if *left == 0 {
                            self.body = Framing::Done;
                        }
                        return Poll::Ready(Some(Ok(self.buffer.split_to(take).freeze())));
                    }
                    Framing::Chunked(chunked) => match chunked.next(&mut self.buffer) {
                        Err(failed) => return Poll::Ready(Some(Err(failed))),
                        Ok(Chunk::Data(data)) => return Poll::Ready(Some(Ok(data))),
                        Ok(Chunk::End) => {
                            self.body = Framing::Done;
                            return Poll::Ready(None);
                        }
                        Ok(Chunk::More) => {}
                    },
                    Framing::UntilClose => return Poll::Ready(Some(Ok(self.buffer.split().freeze()))),
                }
            } else if self.body == Framing::Done {
                return Poll::Ready(None);
            }
            let read = ready!(poll_fill(Pin::new(&mut self.stream), cx, &mut self.buffer));
            match read {
                Err(failed) => return Poll::Ready(Some(Err(failed))),
                Ok(0) if self.body == Framing::UntilClose => {
                    self.body = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the backend closed the connection before the end of the body",
                    ))));
                }
                Ok(_) => {}
            }
        }
    }

    /// Whether the body was read to its end (or there was none).
    pub(super) fn is_end_stream(&self) -> bool {
        matches!(self.body, Framing::Done)
    }

    /// The body's exact length, when the response gave one.
    pub(super) fn exact_length(&self) -> Option<u64> {
        match self.body {
            Framing::Done => Some(0),
            Framing::Length(left) => Some(left),
            Framing::Chunked(_) | Framing::UntilClose => None,
        }
    }

    /// Whether it can never carry another request: the backend closes it,
    /// or a response on it was not read to its end.
    pub(super) fn ended(&self) -> bool {
        !self.reusable || !matches!(self.body, Framing::Done)
    }

    /// Whether it can take another request now: open, and nothing on it
    /// nobody asked for. A backend that closed it meanwhile shows here, as
    /// the loop's reactor has seen it: one read, which is no system call
    /// unless the socket was seen readable.
    pub(super) fn usable(&mut self) -> bool {
        if self.ended() || !self.buffer.is_empty() {
            return false;
        }
        let mut probe = [0; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let idle = Pin::new(&mut self.stream)
            .poll_read(&mut Context::from_waker(std::task::Waker::noop()), &mut probe)
            .is_pending();
        if !idle {
            self.reusable = false;
        }
        idle
    }

    /// The socket, and what the backend sent past the `101` head: the
    /// backend's side of a tunnel.
    pub(super) fn into_tunnel(self) -> (TcpStream, Bytes) {
        let Self { stream, buffer, .. } = self;
        (stream, buffer.freeze())
    }
}

/// How a response's body ends (RFC 9112, 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// It has none, or it was read to its end.
    Done,
    /// After this many more bytes.
    Length(u64),
    /// With its last chunk.
    Chunked(Chunked),
    /// When the backend closes the connection.
    UntilClose,
}

/// A response head, and how its body is framed.
struct Parsed {
    response: Response<()>,
    framing: Framing,
    /// The backend keeps the connection open after it.
    keep_alive: bool,
}

/// Reads until `buffer` holds a whole final response head, and takes it
/// off; `1xx` heads before it (but `101`) are passed over.
fn poll_head(
    mut reader: Pin<&mut impl AsyncRead>,
    cx: &mut Context<'_>,
    buffer: &mut BytesMut,
    head_request: bool,
    last: &mut Fields,
) -> Poll<io::Result<Parsed>> {
    loop {
        if !buffer.is_empty() {
            if let Some(parsed) = parse_head(buffer, head_request, last)? {
                return Poll::Ready(Ok(parsed));
            }
            if buffer.len() >= MAX_HEAD {
                return Poll::Ready(Err(too_large()));
            }
        }
        if ready!(poll_fill(reader.as_mut(), cx, buffer))? == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the backend closed the connection before it answered",
            )));
        }
    }
}

/// The final response head at the start of `buffer`, taken off it, if it
/// holds one whole; an interim (`1xx` but `101`) head is taken off and
/// the next looked for. `last` is what the connection's last response
/// head left (see [`Fields`]), and what this one leaves.
fn parse_head(buffer: &mut BytesMut, head_request: bool, last: &mut Fields) -> io::Result<Option<Parsed>> {
    loop {
        // Where each name and value is in the head (offsets within
        // [`MAX_HEAD`]): values are shared with the head's bytes, not copied.
        let mut spans = [[0u16; 4]; MAX_HEADERS];
        let (length, code, version, count) = {
            // Not initialised: httparse writes those it parses.
            let mut fields = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                buffer,
                &mut fields,
            ) {
                Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => length,
                Ok(httparse::Status::Complete(_)) => return Err(too_large()),
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(failed) => return Err(invalid(format!("a malformed response head ({failed})"))),
            };
            let start = buffer.as_ptr().addr();
            let offset = |part: &[u8]| u16::try_from(part.as_ptr().addr() - start).unwrap_or(u16::MAX);
            for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
                let (name, value) = (offset(field.name.as_bytes()), offset(field.value));
                // Within the head: the lengths fit too.
                let name_to = name + u16::try_from(field.name.len()).unwrap_or(0);
                let value_to = value + u16::try_from(field.value.len()).unwrap_or(0);
                *span = [name, name_to, value, value_to];
            }
            (length, response.code.unwrap_or(0), response.version.unwrap_or(1), response.headers.len())
        };
        let head = buffer.split_to(length).freeze();
        let status = StatusCode::from_u16(code).map_err(|_| invalid(format!("a response status of {code}")))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        // The hop-by-hop fields are read, not kept: the client gets its
        // own (but those of a switch of protocols, which are the answer).
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        let spans = &spans[..count];
        let name = |&[from, to, ..]: &[u16; 4]| part(&head, from, to);
        // A value as it came (httparse let through no byte that a
        // `HeaderValue` refuses), and as one, for the fields passed on.
        let raw = |&[.., from, to]: &[u16; 4]| part(&head, from, to);
        let value = |span: &[u16; 4]| {
            let [.., from, to] = *span;
            HeaderValue::from_maybe_shared(head.slice(usize::from(from)..usize::from(to))).map_err(|_| {
                let name = String::from_utf8_lossy(name(span));
                invalid(format!("a value of the response header {name} with control characters"))
            })
        };
        let mut said = Said::new(version);
        let same_names = !switching && last.are(spans.iter().map(name));
        let mut headers = if same_names {
            // As the last head's: its map, the values put in place.
            let mut headers = last.map.clone();
            let mut slots = headers.values_mut();
            for (span, &role) in spans.iter().zip(&last.roles) {
                said.read(role, raw(span));
                if !role.hop_by_hop
                    && let Some(slot) = slots.next()
                {
                    *slot = value(span)?;
                }
            }
            headers
        } else {
            let mut headers = HeaderMap::with_capacity(count);
            let mut roles = Vec::with_capacity(count);
            for span in spans {
                let name = HeaderName::from_bytes(name(span))
                    .map_err(|_| invalid("a response header's name that is not a token"))?;
                let role = Role::of(&name);
                said.read(role, raw(span));
                if switching || !role.hop_by_hop {
                    headers.append(name, value(span)?);
                }
                roles.push(role);
            }
            if !switching {
                last.keep(spans.iter().map(name), roles, &headers);
            }
            headers
        };
        let Said { mut keep_alive, chunked, names_fields, length, .. } = said;
        let framing = framing(head_request, status, chunked, length, &mut headers, &mut keep_alive)?;
        if names_fields && !switching {
            // Rare: read the `Connection` fields again for the names, once
            // the body's framing is known (a backend may name its own
            // `Content-Length`).
            for span in spans {
                if name(span).eq_ignore_ascii_case(b"connection") {
                    for token in tokens(raw(span)) {
                        if let Ok(named) = HeaderName::from_bytes(token) {
                            headers.remove(named);
                        }
                    }
                }
            }
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return Ok(Some(Parsed { response, framing, keep_alive }));
    }
}

/// The bytes of `head` from `from` to `to`.
fn part(head: &[u8], from: u16, to: u16) -> &[u8] {
    &head[usize::from(from)..usize::from(to)]
}

/// The names of the last response head read on a connection, and the map
/// its fields made, kept for the next: one app sends the same fields in
/// the same order in every answer, and a head whose names are the same
/// is made from a copy of that map, its values put in place, not by
/// parsing each name again and hashing it into a new map (4 % of the
/// runner's instructions a request, with nginx's five fields). What each
/// field is to the proxy depends on its name alone; what its value says
/// is read again for every head.
#[derive(Default)]
struct Fields {
    /// The names as they came, back to back.
    names: Vec<u8>,
    /// Where each name ends in `names`.
    ends: Vec<usize>,
    /// What each field is to the proxy.
    roles: Vec<Role>,
    /// The fields passed on, their names each once, in order, their
    /// values empty (not holding on to the head they came in).
    map: HeaderMap,
}

impl Fields {
    /// Whether `names` are the last head's, one for one.
    fn are<'a>(&self, names: impl ExactSizeIterator<Item = &'a [u8]>) -> bool {
        if names.len() != self.ends.len() {
            return false;
        }
        let mut from = 0;
        names.zip(&self.ends).all(|(name, &to)| {
            let same = self.names[from..to] == *name;
            from = to;
            same
        })
    }

    /// Keeps a head's `names`, their `roles` and the map they made; not a
    /// map with a name twice, whose values are not in the fields' order:
    /// then all is cleared, which is what a head with no fields leaves.
    fn keep<'a>(&mut self, names: impl Iterator<Item = &'a [u8]>, roles: Vec<Role>, map: &HeaderMap) {
        self.names.clear();
        self.ends.clear();
        self.roles.clear();
        self.map.clear();
        if map.keys_len() != map.len() {
            return;
        }
        for name in names {
            self.names.extend_from_slice(name);
            self.ends.push(self.names.len());
        }
        self.roles = roles;
        self.map.clone_from(map);
        for value in self.map.values_mut() {
            *value = HeaderValue::from_static("");
        }
    }
}

/// What a response header field is to the proxy.
#[derive(Debug, Clone, Copy)]
struct Role {
    /// Which of the fields that frame the body or end the connection.
    says: Says,
    /// Not passed on to the client (but in a switch of protocols).
    hop_by_hop: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Says {
    Nothing,
    Connection,
    TransferEncoding,
    ContentLength,
}

impl Role {
    fn of(name: &HeaderName) -> Self {
        let says = if name == header::CONNECTION {
            Says::Connection
        } else if name == header::TRANSFER_ENCODING {
            Says::TransferEncoding
        } else if name == header::CONTENT_LENGTH {
            Says::ContentLength
        } else {
            Says::Nothing
        };
        Self { says, hop_by_hop: HOP_BY_HOP.contains(name) }
    }
}

/// What a response head's fields said of its connection and its body, as
/// they are read.
struct Said {
    keep_alive: bool,
    /// Whether the last transfer coding is chunked; `None` with no
    /// `Transfer-Encoding`.
    chunked: Option<bool>,
    /// `Connection` names other fields, to be dropped too.
    names_fields: bool,
    length: Length,
    /// The head's HTTP/1 minor version.
    version: u8,
}

impl Said {
    fn new(version: u8) -> Self {
        Self { keep_alive: version == 1, chunked: None, names_fields: false, length: Length::Unsaid, version }
    }

    /// With a field of `role` whose value is `value`.
    fn read(&mut self, role: Role, value: &[u8]) {
        match role.says {
            Says::Nothing => {}
            Says::Connection => {
                for token in tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive |= self.version == 0;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"upgrade") {
                        self.names_fields = true;
                    }
                }
            }
            Says::TransferEncoding => {
                let last = tokens(value).rfind(|coding| !coding.is_empty());
                self.chunked =
                    Some(last.map_or(self.chunked == Some(true), |coding| coding.eq_ignore_ascii_case(b"chunked")));
            }
            Says::ContentLength => self.length = self.length.and(value),
        }
    }
}

/// How the body of a response with `headers` ends (RFC 9112, 6.3);
/// `chunked` is whether its last transfer coding is chunked, `None`
/// without `Transfer-Encoding`, and `length` what its `Content-Length`
/// fields said. What a chunked response says of its length is removed:
/// the client gets the body as it is read, framed by hyper.
fn framing(
    head_request: bool,
    status: StatusCode,
    chunked: Option<bool>,
    length: Length,
    headers: &mut HeaderMap,
    keep_alive: &mut bool,
) -> io::Result<Framing> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        *keep_alive = false;
        return Ok(Framing::Done);
    }
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Done);
    }
    if let Some(chunked) = chunked {
        // With a length too, the length is ignored, and the connection
        // closed after: it may have been meant to be read either way.
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            *keep_alive = false;
        }
        if chunked {
            return Ok(Framing::Chunked(Chunked::Size));
        }
        *keep_alive = false;
        return Ok(Framing::UntilClose);
    }
    match length {
        Length::Bad(why) => Err(invalid(why)),
        Length::Said(0) => Ok(Framing::Done),
        Length::Said(length) => Ok(Framing::Length(length)),
        Length::Unsaid => {
            *keep_alive = false;
            Ok(Framing::UntilClose)
        }
    }
}

/// What a response's `Content-Length` fields said, read as they come:
/// whether it is taken depends on the rest of the head (see [`framing`]).
#[derive(Debug, Clone, Copy)]
enum Length {
    Unsaid,
    /// One length, however many times said.
    Said(u64),
    /// Not a number, or two different ones: why.
    Bad(&'static str),
}

impl Length {
    /// With the comma-separated lengths of one more field's `value`.
    fn and(self, value: &[u8]) -> Self {
        tokens(value)
            .try_fold(self, |said, part| match (said, decimal(part)) {
                (Self::Bad(_), _) => Err(said),
                (_, None) => Err(Self::Bad("a response Content-Length that is not a number")),
                (Self::Said(length), Some(parsed)) if length != parsed => {
                    Err(Self::Bad("a response with conflicting Content-Length values"))
                }
                (_, Some(parsed)) => Ok(Self::Said(parsed)),
            })
            .unwrap_or_else(|bad| bad)
    }
}

/// The comma-separated parts of a field's value, trimmed.
pub(super) fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.split(|&byte| byte == b',').map(<[u8]>::trim_ascii)
}

/// Digits only, no sign, no overflow.
fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |total, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        total.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

fn too_large() -> io::Error {
    invalid(format!("a response head larger than {} KiB", (MAX_HEAD + 1) / 1024))
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the backend answered {what}"))
}

/// Where a chunked body's reading is (RFC 9112, 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// At a chunk's size line.
    Size,
    /// In a chunk's data, this much of it left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// In the trailer section, this much of it read.
    Trailers(usize),
}

/// What a chunked body gave from the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The last chunk and the trailers were read.
    End,
}

impl Chunked {
    /// The next data in `buffer`, taken off it with what frames it.
    fn next(&mut self, buffer: &mut BytesMut) -> io::Result<Chunk> {
        loop {
            match *self {
                Self::Size => {
                    let Some(line) = line(buffer, MAX_CHUNK_LINE)? else { return Ok(Chunk::More) };
                    let digits = line.iter().take_while(|byte| byte.is_ascii_hexdigit()).count();
                    // Then nothing, or its extensions (after optional blanks).
                    let rest = line[digits..].trim_ascii_start();
                    if digits == 0 || digits > 15 || !(rest.is_empty() || rest[0] == b';') {
                        return Err(invalid("a malformed chunk size"));
                    }
                    let size = line[..digits]
                        .iter()
                        .fold(0u64, |size, &digit| size << 4 | u64::from(char::from(digit).to_digit(16).unwrap_or(0)));
                    *self = if size == 0 { Self::Trailers(0) } else { Self::Data(size) };
                }
                Self::Data(left) => {
                    if buffer.is_empty() {
                        return Ok(Chunk::More);
                    }
                    let take = usize::try_from(left).map_or(buffer.len(), |left| left.min(buffer.len()));
                    *self = if left == take as u64 { Self::DataEnd } else { Self::Data(left - take as u64) };
                    return Ok(Chunk::Data(buffer.split_to(take).freeze()));
                }
                Self::DataEnd => {
                    if buffer.len() < 2 {
                        return Ok(Chunk::More);
                    }
                    if buffer[..2] != *b"\r\n" {
                        return Err(invalid("a chunk longer than its size"));
                    }
                    let _ = buffer.split_to(2);
                    *self = Self::Size;
                }
                Self::Trailers(read) => {
                    let Some(line) = line(buffer, MAX_TRAILERS.saturating_sub(read))? else { return Ok(Chunk::More) };
                    if line.is_empty() {
                        return Ok(Chunk::End);
                    }
                    *self = Self::Trailers(read + line.len() + 2);
                }
            }
        }
    }
}

/// The next line of `buffer`, without its CRLF, taken off it; `None` if
/// it holds no whole line yet. A line longer than `at_most`, or ended by
/// a bare LF, is an error.
fn line(buffer: &mut BytesMut, at_most: usize) -> io::Result<Option<Bytes>> {
    let Some(end) = memchr::memchr(b'\n', buffer) else {
        return if buffer.len() > at_most { Err(invalid("a chunk line too long")) } else { Ok(None) };
    };
    if end == 0 || buffer[end - 1] != b'\r' || end > at_most {
        return Err(invalid("a malformed chunk line"));
    }
    let mut line = buffer.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line.freeze()))
}

/// Reads what the backend sent next onto the end of `buffer`: how much,
/// 0 at the end of the stream.
fn poll_fill(reader: Pin<&mut impl AsyncRead>, cx: &mut Context<'_>, buffer: &mut BytesMut) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let mut read = ReadBuf::new(scratch);
        ready!(reader.poll_read(cx, &mut read))?;
        buffer.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
}

/// How a request's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    /// It has none, and said no length.
    Nothing,
    /// `Content-Length`.
    Length(u64),
    /// In chunks: its length was not known (the client sent chunks).
    Chunked,
}

impl Sending {
    fn of(body: &ProxyBody, headers: &HeaderMap) -> Self {
        if body.is_end_stream() && !headers.contains_key(header::CONTENT_LENGTH) {
            return Self::Nothing;
        }
        body.size_hint().exact().map_or(Self::Chunked, Self::Length)
    }
}

/// The headers that describe one hop, not the message (RFC 9110, 7.6.1),
/// and the one that asks to switch protocols: neither side's are passed
/// to the other.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request head as the app gets it, written in one pass over the
/// client's headers, none of them changed, copied or looked up twice:
///
/// - not the hop-by-hop headers, nor those the client's `Connection`
///   names; for an upgrade, `Connection: upgrade` and the client's
///   `Upgrade`;
/// - who asked and how: `X-Forwarded-For` (the client's chain, and its
///   address), `X-Forwarded-Proto`, `X-Forwarded-Host` (the `Host` it
///   asked), the last two replacing any the client sent; an
///   `X-Request-Id` when it sent none;
/// - a `Host` of the backend's address if the client sent none
///   (HTTP/1.0), and the framing of `sending`.
fn encode_head(out: &mut Vec<u8>, request: &Outgoing<'_>, backend: SocketAddr, sending: Sending) {
    use std::io::Write as _;
    let headers = request.headers;
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        request.target.path_and_query().map_or("/", hyper::http::uri::PathAndQuery::as_str).as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The headers `Connection` names, but those that name none or are
    // hop-by-hop anyway: most requests have none, and nothing is
    // allocated for them.
    let named: Vec<&[u8]> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| tokens(value.as_bytes()))
        .filter(|token| {
            !token.is_empty()
                && !token.eq_ignore_ascii_case(b"close")
                && !HOP_BY_HOP.iter().any(|hop| token.eq_ignore_ascii_case(hop.as_str().as_bytes()))
        })
        .collect();
    let (mut host, mut has_id, mut has_chain) = (None, false, false);
    for (name, value) in headers {
        if name == X_FORWARDED_FOR {
            has_chain = true;
            continue;
        }
        if HOP_BY_HOP.contains(name)
            || name == header::CONTENT_LENGTH
            || name == X_FORWARDED_PROTO
            || name == X_FORWARDED_HOST
            || named.iter().any(|named| named.eq_ignore_ascii_case(name.as_str().as_bytes()))
        {
            continue;
        }
        if name == header::HOST {
            host = Some(value);
        }
        has_id |= name == X_REQUEST_ID;
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if request.upgrade
        && let Some(protocol) = headers.get(header::UPGRADE)
    {
        out.extend_from_slice(b"connection: upgrade\r\n");
        field(out, b"upgrade", protocol.as_bytes());
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if has_chain {
        for earlier in &headers.get_all(&X_FORWARDED_FOR) {
            let earlier = earlier.as_bytes().trim_ascii();
            if !earlier.is_empty() {
                out.extend_from_slice(earlier);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(request.client.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    match host {
        Some(host) => field(out, b"x-forwarded-host", host.as_bytes()),
        None => {
            let _ = write!(out, "host: {backend}\r\n");
        }
    }
    if !has_id {
        out.extend_from_slice(b"x-request-id: ");
        request_id(out);
        out.extend_from_slice(b"\r\n");
    }
    match sending {
        Sending::Nothing => {}
        Sending::Length(length) => {
            let _ = write!(out, "content-length: {length}\r\n");
        }
        Sending::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes a request id unique to this runner: its start, its pid, a
/// counter, in 24 hex digits.
fn request_id(out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        // The low bits of the clock, and the pid: two runners differ.
        (u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0)) ^ (u64::from(std::process::id()) << 40)
    });
    let count = NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
    let id = (u128::from(seed) << 32) | u128::from(count);
    out.extend((0..24).map(|i| HEX[usize::try_from((id >> (4 * (23 - i))) & 0xf).unwrap_or(0)]));
}

/// Writes the request's head, then its body as `sending` frames it.
async fn write_request(
    writer: &mut tokio::net::tcp::WriteHalf<'_>,
    head: Vec<u8>,
    mut body: ProxyBody,
    sending: Sending,
) -> Result<(), Failed> {
    writer.write_all(&head).await.map_err(Failed::Backend)?;
    if sending == Sending::Nothing {
        return Ok(());
    }
    let mut sent = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Failed::Client)?.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if sending == Sending::Chunked {
            let size = format!("{:x}\r\n", data.len());
            writer.write_all(size.as_bytes()).await.map_err(Failed::Backend)?;
            writer.write_all(&data).await.map_err(Failed::Backend)?;
            writer.write_all(b"\r\n").await.map_err(Failed::Backend)?;
        } else {
            writer.write_all(&data).await.map_err(Failed::Backend)?;
        }
    }
    match sending {
        Sending::Chunked => writer.write_all(b"0\r\n\r\n").await.map_err(Failed::Backend),
        Sending::Length(length) if length != sent => {
            let short = format!("the request's body had {sent} bytes, not the {length} it said");
            Err(Failed::Client(io::Error::new(io::ErrorKind::UnexpectedEof, short)))
        }
        Sending::Length(_) | Sending::Nothing => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &[u8], head_request: bool) -> io::Result<Option<Parsed>> {
        parse_head(&mut BytesMut::from(raw), head_request, &mut Fields::default())
    }

    fn framing_of(raw: &str) -> (Framing, bool) {
        let parsed = parsed(raw.as_bytes(), false).expect("a valid head").expect("a whole head");
        (parsed.framing, parsed.keep_alive)
    }

    #[test]
    fn a_response_is_framed_by_its_length_by_chunks_or_by_the_close_of_the_connection() {
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"), (Framing::Length(12), true));
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), (Framing::Done, true));
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n"), (Framing::Length(7), true));
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            (Framing::Chunked(Chunked::Size), true)
        );
        // Neither: to the end of the connection, which is not kept.
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\n\r\n"), (Framing::UntilClose, false));
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), (Framing::UntilClose, false));
        // No body, whatever the head says.
        assert_eq!(framing_of("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"), (Framing::Done, true));
        assert_eq!(framing_of("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"), (Framing::Done, true));
        let head = parsed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Done, "the answer to a HEAD request");
    }

    #[test]
    fn a_connection_is_kept_only_when_the_backend_keeps_it() {
        let kept = |raw: &str| framing_of(raw).1;
        assert!(kept("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"));
        assert!(!kept("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"));
        assert!(!kept("HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\nContent-Length: 1\r\n\r\n"));
        assert!(!kept("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"));
        assert!(kept("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n"));
        assert!(!kept("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"));
    }

    #[test]
    fn an_ambiguous_or_malformed_response_is_refused_or_read_so_that_it_cannot_desynchronise_the_connection() {
        let refused = [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent Length: 5\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ];
        for raw in refused {
            assert!(parsed(raw.as_bytes(), false).is_err(), "{raw:?} was taken");
        }
        // Chunked and a length: chunked, the length removed, the
        // connection closed after.
        let mut both = parsed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((both.framing, both.keep_alive), (Framing::Chunked(Chunked::Size), false));
        assert!(both.response.headers_mut().get(header::CONTENT_LENGTH).is_none());
    }

    #[test]
    fn interim_responses_are_passed_over_and_a_partial_head_waits_for_more() {
        let mut buffer = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi"[..],
        );
        let head = parse_head(&mut buffer, false, &mut Fields::default()).unwrap().unwrap();
        assert_eq!(head.response.status(), StatusCode::OK);
        assert_eq!(head.response.headers()["x-a"], "b");
        assert_eq!(&buffer[..], b"hi", "the body is left to be read");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(parse_head(&mut partial, false, &mut Fields::default()).unwrap().is_none());
        assert_eq!(partial.len(), 27, "nothing taken off");
    }

    /// Feeds `raw` to a chunked body one byte at a time (every split a
    /// read could make), then all at once; the data it gave, and what
    /// was left after its end.
    fn dechunk(raw: &[u8]) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut whole = None;
        for step in [1, raw.len()] {
            let (mut chunked, mut buffer, mut data) = (Chunked::Size, BytesMut::new(), Vec::new());
            let mut fed = 0;
            loop {
                match chunked.next(&mut buffer)? {
                    Chunk::Data(part) => data.extend_from_slice(&part),
                    Chunk::End => break,
                    Chunk::More if fed == raw.len() => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Chunk::More => {
                        let to = (fed + step).min(raw.len());
                        buffer.extend_from_slice(&raw[fed..to]);
                        fed = to;
                    }
                }
            }
            let mut left = buffer.to_vec();
            left.extend_from_slice(&raw[fed..]);
            assert!(whole.as_ref().is_none_or(|whole| *whole == (data.clone(), left.clone())), "{step}");
            whole = Some((data, left));
        }
        Ok(whole.unwrap())
    }

    #[test]
    fn a_chunked_body_is_read_to_its_last_chunk_and_trailers_whatever_the_reads() {
        let (data, left) = dechunk(b"5\r\nhello\r\n1;name=value\r\n \r\n0\r\nX-Trailer: t\r\n\r\nNEXT").unwrap();
        assert_eq!(data, b"hello ");
        assert_eq!(left, b"NEXT", "the next response is not read into this one");
        let (data, _) = dechunk(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, b"0123456789");
        for malformed in [
            &b"5\r\nhello!\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"x\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"5 junk\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n",
        ] {
            assert!(dechunk(malformed).is_err(), "{:?} was taken", String::from_utf8_lossy(malformed));
        }
        let long_line = [b"1;".as_slice(), &[b'x'; MAX_CHUNK_LINE], b"\r\n"].concat();
        assert!(dechunk(&long_line).is_err());
    }

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        fields.iter().map(|&(name, value)| (HeaderName::from_static(name), HeaderValue::from_static(value))).collect()
    }

    /// The head [`encode_head`] writes for `headers`, its request id
    /// replaced by `ID`.
    fn encoded(headers: &HeaderMap, sending: Sending, upgrade: bool) -> String {
        let target: Uri = "/a?b".parse().unwrap();
        let backend = SocketAddr::from(([127, 0, 0, 1], 5000));
        let request = Outgoing {
            method: &Method::POST,
            target: &target,
            headers,
            client: "10.1.2.3",
            upgrade,
            body: super::super::http::empty(),
        };
        let mut out = Vec::new();
        encode_head(&mut out, &request, backend, sending);
        let text = String::from_utf8(out).unwrap();
        text.lines()
            .map(|line| if line.starts_with("x-request-id: ") && line.len() == 38 { "x-request-id: ID" } else { line })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_request_head_carries_the_framing_of_its_body_a_host_and_who_asked() {
        let host_and_length = headers(&[("host", "app.example"), ("content-length", "99")]);
        assert_eq!(
            encoded(&host_and_length, Sending::Length(3), false),
            "POST /a?b HTTP/1.1\nhost: app.example\nx-forwarded-for: 10.1.2.3\nx-forwarded-proto: http\n\
             x-forwarded-host: app.example\nx-request-id: ID\ncontent-length: 3\n",
            "the length is the body's"
        );
        assert_eq!(
            encoded(&HeaderMap::new(), Sending::Chunked, false),
            "POST /a?b HTTP/1.1\nx-forwarded-for: 10.1.2.3\nx-forwarded-proto: http\nhost: 127.0.0.1:5000\n\
             x-request-id: ID\ntransfer-encoding: chunked\n"
        );
    }

    #[test]
    fn a_request_head_has_no_hop_by_hop_headers_and_the_forwarding_ones_are_the_proxys() {
        let sent = headers(&[
            ("host", "h"),
            ("connection", "keep-alive, X-Secret, close"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed.example"),
            ("x-request-id", "mine"),
        ]);
        assert_eq!(
            encoded(&sent, Sending::Nothing, false),
            "POST /a?b HTTP/1.1\nhost: h\nx-request-id: mine\nx-forwarded-for: 192.0.2.1, 198.51.100.7, 10.1.2.3\n\
             x-forwarded-proto: http\nx-forwarded-host: h\n"
        );
        let upgrade = headers(&[("host", "h"), ("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(
            encoded(&upgrade, Sending::Nothing, true),
            "POST /a?b HTTP/1.1\nhost: h\nconnection: upgrade\nupgrade: websocket\nx-forwarded-for: 10.1.2.3\n\
             x-forwarded-proto: http\nx-forwarded-host: h\nx-request-id: ID\n"
        );
    }

    /// A parsed head as the client gets it: status, fields in order,
    /// framing, whether the connection is kept.
    type Seen = (u16, Vec<(String, String)>, Framing, bool);

    /// [`Seen`] of a parsed head, or its error.
    fn seen(parsed: io::Result<Option<Parsed>>) -> Result<Seen, String> {
        let Parsed { response, framing, keep_alive } = parsed.map_err(|e| e.to_string())?.expect("a whole head");
        let fields = response.headers().iter().map(|(n, v)| (n.to_string(), format!("{v:?}"))).collect();
        Ok((response.status().as_u16(), fields, framing, keep_alive))
    }

    #[test]
    fn a_head_made_from_the_last_ones_fields_is_the_head_made_afresh_whatever_came_before() {
        let heads = [
            "HTTP/1.1 200 OK\r\nServer: a\r\nDate: d1\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
            // The same names: other values, a close, another length.
            "HTTP/1.1 404 Not Found\r\nServer: b\r\nDate: d2\r\nContent-Length: 7\r\nConnection: close\r\n\r\n",
            // The same names but one in another case, and one more.
            "HTTP/1.1 200 OK\r\nserver: a\r\nDate: d1\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
            "HTTP/1.1 200 OK\r\nServer: a\r\nDate: d1\r\nContent-Length: 2\r\nConnection: keep-alive\r\nX: 1\r\n\r\n",
            // The same names, a field named to be dropped, its length too.
            "HTTP/1.1 200 OK\r\nServer: a\r\nDate: d1\r\nContent-Length: 2\r\nConnection: Server, Content-Length\r\n\r\n",
            // A name twice, apart: its values in their order.
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX: 1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nSet-Cookie: c=3\r\nX: 2\r\nSet-Cookie: d=4\r\nContent-Length: 0\r\n\r\n",
            // Chunked and a length (the length removed), then a length.
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: identity\r\n\r\n",
            // Refused with the last one's names.
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\nTransfer-Encoding: identity\r\n\r\n",
            // A switch of protocols keeps its hop-by-hop fields.
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.0 200 OK\r\nServer: a\r\nDate: d1\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ];
        let afresh = |head: &str| seen(parsed(head.as_bytes(), false));
        // Every head after every other, on one connection.
        for before in heads {
            for head in heads {
                let mut last = Fields::default();
                let _ = parse_head(&mut BytesMut::from(before), false, &mut last);
                for time in ["once", "again"] {
                    let made = seen(parse_head(&mut BytesMut::from(head), false, &mut last));
                    assert_eq!(made, afresh(head), "{head:?} {time} after {before:?}");
                }
            }
        }
        let (_, fields, ..) = afresh(heads[5]).unwrap();
        assert_eq!(fields.iter().filter(|(name, _)| name == "set-cookie").count(), 2);
        let (_, fields, framing, _) = afresh(heads[4]).unwrap();
        assert_eq!((fields, framing), (vec![("date".into(), "\"d1\"".into())], Framing::Length(2)));
    }

    #[test]
    fn a_response_head_has_no_hop_by_hop_headers_but_a_switch_of_protocols_keeps_its_own() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\n\
                   Transfer-Encoding: chunked\r\nTrailer: x-sum\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\n";
        let head = parsed(raw.as_bytes(), false).unwrap().unwrap();
        assert_eq!((head.framing, head.keep_alive), (Framing::Chunked(Chunked::Size), true));
        let names: Vec<_> = head.response.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
        let names_its_length = "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\n";
        let head = parsed(names_its_length.as_bytes(), false).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Length(2), "framed before the names are dropped");
        let switch = "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        let head = parsed(switch.as_bytes(), false).unwrap().unwrap();
        assert_eq!(head.response.headers()["upgrade"], "websocket");
        assert_eq!(head.response.headers()["connection"], "upgrade");
    }
}

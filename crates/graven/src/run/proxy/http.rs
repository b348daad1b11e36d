//! HTTP mode: one hyper connection per client, each request routed on its
//! own (see the module above), on connections to the backends that each
//! event loop keeps, and that the client connection a request came on
//! drives while it uses one.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::beside::Beside;
use super::upstream::{Failed, Outgoing, Upstream};
use super::{ClientConn, Lease, ProxyLimits, Shared};

/// The body of every request to a backend and every response to a client.
/// Its error is an `io::Error` (what hyper reports of a client's body is
/// wrapped in one): an error type of no lifetime, as hyper's connection
/// needs of a body's for its future to be sent between threads.
pub(super) type ProxyBody = UnsyncBoxBody<Bytes, io::Error>;

impl Keepable for Upstream {
    fn backend(&self) -> SocketAddr {
        self.backend
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn usable(&mut self) -> bool {
        Upstream::usable(self)
    }

    fn ended(&self) -> bool {
        Upstream::ended(self)
    }
}

thread_local! {
    /// This event loop's idle connections to backends. Per thread, as a
    /// connection's socket is registered with its loop's reactor and may
    /// be driven on that loop only (see `loops`).
    static KEPT: std::cell::RefCell<Kept<Upstream>> = std::cell::RefCell::default();
}

/// What [`Kept`] keeps: a connection to one backend ([`Upstream`]; in
/// tests, a stand-in).
trait Keepable {
    fn backend(&self) -> SocketAddr;
    /// The backends it was made for (see [`Lease::generation`]).
    fn generation(&self) -> u64;
    /// Whether it can take another request now.
    fn usable(&mut self) -> bool;
    /// Whether it ended, never to be used again.
    fn ended(&self) -> bool;
}

/// An event loop's idle connections to backends, most recently used last.
///
/// A loop makes a connection to a backend only when it keeps none idle
/// to it, so it keeps as many as it had requests to it in flight at once
/// (as nginx's upstream `keepalive` keeps them per worker), and never
/// closes one a next request would need: under load, latency and the
/// requests in flight rise together, and a loop that closed those past a
/// fixed number made new ones at every burst, which took more of the
/// machine, which raised latency again.
struct Kept<T> {
    /// The backends they were made for: after a switch, those made before
    /// it are closed at the loop's next request, not kept until the
    /// runner stops the old release's processes under them.
    generation: u64,
    /// Per backend: a list, as a loop sends to a few (`web=3`), for
    /// which a linear look is cheaper than hashing an address.
    idle: Vec<(SocketAddr, VecDeque<Box<T>>)>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Self { generation: 0, idle: Vec::new() }
    }
}

impl Kept<Upstream> {
    /// An idle, open connection to the backend of `lease`, if this loop
    /// keeps one.
    fn take_for(lease: &Lease) -> Option<Box<Upstream>> {
        KEPT.with_borrow_mut(|kept| kept.take(lease.backend, lease.generation))
    }

    /// Keeps `upstream` on this loop for a next request, with at most
    /// `at_most` to its backend (see [`Kept::give_back`]).
    fn keep(upstream: Box<Upstream>, at_most: usize) {
        KEPT.with_borrow_mut(|kept| kept.give_back(upstream, at_most));
    }
}

impl<T: Keepable> Kept<T> {
    /// An idle, usable connection to `backend`, if one is kept; those
    /// found unusable on the way (closed, or not idle) are dropped.
    fn take(&mut self, backend: SocketAddr, generation: u64) -> Option<Box<T>> {
        self.renew(generation);
        let (_, idle) = self.idle.iter_mut().find(|(kept_for, _)| *kept_for == backend)?;
        std::iter::from_fn(|| idle.pop_back()).find_map(|mut kept| kept.usable().then_some(kept))
    }

    /// Keeps `kept` for a next request, if it has not ended and its
    /// backends are still the current ones. Whether it is idle is
    /// [`Kept::take`]'s look, at the next request: its response was just
    /// read whole, and one look (a poll of its connection) is enough.
    ///
    /// At most `at_most` to a backend: the proxy's cap on client
    /// connections ([`ProxyLimits::max_connections`]), each of which has
    /// one request in flight at most: the open-file budget that cap comes from has a descriptor to
    /// a backend for each (see [`super::default_max_connections`]), so
    /// with one web process the oldest is never closed for room. With
    /// several, those kept to each are held to that many apart, and
    /// could pass it together only if each had had the whole cap in
    /// flight at another time.
    fn give_back(&mut self, kept: Box<T>, at_most: usize) {
        if kept.ended() {
            return;
        }
        self.renew(kept.generation());
        if kept.generation() < self.generation {
            return;
        }
        let backend = kept.backend();
        let at = self.idle.iter().position(|(kept_for, _)| *kept_for == backend).unwrap_or_else(|| {
            self.idle.push((backend, VecDeque::new()));
            self.idle.len() - 1
        });
        let idle = &mut self.idle[at].1;
        if idle.len() >= at_most.max(1) {
            idle.pop_front();
        }
        idle.push_back(kept);
    }

    /// Closes what was kept for backends older than `generation`.
    fn renew(&mut self, generation: u64) {
        if generation > self.generation {
            self.idle.clear();
            self.generation = generation;
        }
    }

    /// How many are kept to `backend`.
    #[cfg(test)]
    fn idle_to(&self, backend: SocketAddr) -> usize {
        self.idle.iter().find(|(kept_for, _)| *kept_for == backend).map_or(0, |(_, idle)| idle.len())
    }
}

/// Serves one client connection until it closes, or, once the proxy
/// stops, until its request in flight is answered, or, idle, until the
/// accept loop closes it to make room (see [`ClientConn`]).
pub(super) async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    limits: ProxyLimits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    conn: &Arc<ClientConn>,
) {
    let in_flight_on = Arc::clone(conn);
    let asker = Arc::new(Asker { client: peer.ip().to_string(), answers: AnswerTimer::new() });
    let (stream, smuggling) = super::sniff::Sniffed::new(stream, conn);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (shared, asker) = (Arc::clone(&shared), Arc::clone(&asker));
        // In flight from its head to the end of its response's body.
        let busy = in_flight_on.busy();
        // Its head had both a length and chunked (see `sniff`).
        let ambiguous =
            smuggling.swap(false, Ordering::Relaxed) && request.headers().contains_key(header::TRANSFER_ENCODING);
        async move {
            let response = if ambiguous { ambiguous_length() } else { handle(&shared, request, &asker, limits).await };
            // Around the boxed body, not boxed again: hyper takes any body.
            Ok::<_, Infallible>(response.map(|body| Holding { body, _held: busy }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // No timer for hyper: the connection's own enforces both limits (see
    // `ClientConn::deadline`), without a timer armed per request. A client
    // that closes its side once its request is sent still gets the answer
    // (RFC 9112, 9.6), as from HAProxy: hyper does not read a connection
    // while its request is in flight, so a client gone away is seen when
    // its answer is written, and that read is not made at every request
    // (it took a new read buffer each time, the request still holding the
    // last one).
    builder.max_buf_size(limits.max_header_bytes.max(8192)).keep_alive(true).half_close(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(connection);
    // What may end it, looked at only when one of them wakes (see `beside`).
    let ending = Box::pin(async {
        tokio::select! {
            // Idle: dropped, which closes it.
            () = conn.close.notified() => Ending::Close,
            // Waited too long for a head, or for the next request.
            () = conn.expired() => Ending::Close,
            _ = stopped.changed() => Ending::Stop,
        }
    });
    let ended = Beside::new(connection.as_mut(), ending).await;
    if let Either::Right(Ending::Stop) = ended {
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }
}

/// What the requests of one client connection share.
struct Asker {
    /// Who asked, as `X-Forwarded-For` names them.
    client: String,
    answers: AnswerTimer,
}

/// The timer a client connection's requests wait for their answers with
/// (`[run] timeout`): one for the connection, its deadline moved at each
/// request, not one made and dropped a request: tokio moves a pending
/// timer's deadline later in one atomic step, where a new timer is put
/// in the loop's timer wheel and taken out again (220 instructions a
/// request more, under callgrind). Between requests it stays set, and
/// wakes the connection's task at most once a `[run] timeout`, for
/// nothing.
struct AnswerTimer(std::sync::Mutex<Pin<Box<tokio::time::Sleep>>>);

impl AnswerTimer {
    /// Not yet set: its first request sets it.
    fn new() -> Self {
        Self(std::sync::Mutex::new(Box::pin(tokio::time::sleep(Duration::ZERO))))
    }

    /// `answer`'s output, or `None` when `limit` passes first.
    async fn within<F: Future>(&self, limit: Duration, answer: F) -> Option<F::Output> {
        super::lock(&self.0).as_mut().reset(tokio::time::Instant::now() + limit);
        let mut answer = std::pin::pin!(answer);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = answer.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            super::lock(&self.0).as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}

/// Why a client connection ends before it closes.
enum Ending {
    /// At once, dropped: idle too long, or closed to make room.
    Close,
    /// Once its request in flight is answered: the proxy stops.
    Stop,
}

/// One request: to the backend with the least in flight, on a connection
/// the event loop keeps to it, or a new one. A backend that
/// refuses the connection gets the request retried on another; a kept
/// connection the backend closed just then, on a new one (a request
/// without a body only: one with a body was sent).
async fn handle(
    shared: &Arc<Shared>,
    mut request: Request<Incoming>,
    asker: &Asker,
    limits: ProxyLimits,
) -> Response<ProxyBody> {
    let upgrade = is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let Some(target) = origin_form(&parts.uri) else {
        return error(StatusCode::BAD_REQUEST, "the request's target is not a valid path\n".to_owned());
    };
    // Only a request without a body can be sent twice.
    let resendable = body.is_end_stream();
    let mut body = body.map_err(io::Error::other).boxed_unsync();
    let mut tried = Vec::new();
    let mut fresh_only = false;
    loop {
        let (lease, release) = shared.lease(&tried);
        let Some(lease) = lease else {
            return if tried.is_empty() { unavailable(&release) } else { bad_gateway(&release, tried[0]) };
        };
        let reused = if upgrade || fresh_only { None } else { Kept::take_for(&lease) };
        let was_reused = reused.is_some();
        let mut upstream = if let Some(upstream) = reused {
            upstream
        } else if let Ok(upstream) = Upstream::connect(lease.backend, lease.generation).await {
            upstream
        } else {
            // Nothing was sent: another backend may take it.
            tried.push(lease.backend);
            continue;
        };
        let outgoing = Outgoing {
            method: &parts.method,
            target: &target,
            headers: &parts.headers,
            client: &asker.client,
            upgrade,
            // Sent again only when it has none (`resendable`).
            body: std::mem::replace(&mut body, empty()),
        };
        let answered = asker.answers.within(limits.response_timeout, upstream.send(outgoing)).await;
        let response = match answered {
            None => return gateway_timeout(&release, limits.response_timeout),
            Some(Err(Failed::Client(_))) => return unreadable_body(),
            Some(Err(Failed::Backend(failed)))
                if was_reused && resendable && failed.kind() != io::ErrorKind::InvalidData =>
            {
                // The backend closed the kept connection as the request
                // was sent; it never took it.
                fresh_only = true;
                continue;
            }
            Some(Err(Failed::Backend(_))) => return bad_gateway(&release, lease.backend),
            // Both ends of an upgrade are tunnelled from here; switching
            // protocols unasked is nothing the client can use.
            Some(Ok(response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                return match client_upgrade {
                    Some(client_side) => {
                        tokio::spawn(tunnel(client_side, upstream, lease));
                        response.map(|()| empty())
                    }
                    None => bad_gateway(&release, lease.backend),
                };
            }
            Some(Ok(response)) => response,
        };
        // Its body is read from `upstream` as the client takes it.
        let body =
            Upstreamed { upstream: Some(upstream), failed: None, keep_at_most: limits.max_connections, _lease: lease };
        return response.map(|()| body.boxed_unsync());
    }
}

/// The request's target as a backend gets it: its path and query
/// (`/a?b`), also when the client sent an absolute URL.
fn origin_form(uri: &Uri) -> Option<Uri> {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return Some(uri.clone());
    }
    let path = uri.path_and_query().map_or("/", hyper::http::uri::PathAndQuery::as_str);
    path.parse().ok()
}

/// A backend's response body, read from its connection by the client
/// connection's task as the client takes it; the connection is kept for
/// the next request once the body was read whole, and closed if it was
/// not. Its request is in flight on the backend until then.
struct Upstreamed {
    upstream: Option<Box<Upstream>>,
    /// The body's failure, held back for a turn.
    failed: Option<io::Error>,
    /// How many idle connections to its backend the loop keeps at most.
    keep_at_most: usize,
    _lease: Lease,
}

impl Body for Upstreamed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(failed) = this.failed.take() {
            return Poll::Ready(Some(Err(failed)));
        }
        let Some(upstream) = this.upstream.as_mut() else { return Poll::Ready(None) };
        match std::task::ready!(upstream.poll_body(cx)) {
            None => Poll::Ready(None),
            Some(Ok(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            // What came before it goes to the client first: the failure
            // waits one turn, in which the client connection flushes.
            Some(Err(failed)) => {
                this.failed = Some(failed);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.upstream.as_ref().is_none_or(|upstream| upstream.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match self.upstream.as_ref().and_then(|upstream| upstream.exact_length()) {
            Some(length) if self.failed.is_none() => SizeHint::with_exact(length),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for Upstreamed {
    fn drop(&mut self) {
        // Kept only if its response was read whole (see `Kept::give_back`).
        if let Some(upstream) = self.upstream.take() {
            Kept::keep(upstream, self.keep_at_most);
        }
    }
}

/// Both ends of an upgraded connection, copied until either closes; in
/// flight to its backend meanwhile. What the backend sent right after
/// its `101` goes to the client first.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: Box<Upstream>, lease: Lease) {
    let Ok(client) = client.await else { return };
    let (mut backend, early) = upstream.into_tunnel();
    let mut client = TokioIo::new(client);
    if !early.is_empty() && client.write_all(&early).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
    drop(lease);
}

/// A body that holds `held` (its request in flight on a client
/// connection) until it is sent whole, or dropped.
struct Holding<B, T> {
    body: B,
    _held: T,
}

impl<B: Body<Data = Bytes, Error = io::Error> + Unpin, T: Unpin> Body for Holding<B, T> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether the request asks to switch protocols (a WebSocket).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| super::upstream::tokens(value.as_bytes()).any(|token| token.eq_ignore_ascii_case(b"upgrade")))
}

pub(super) fn empty() -> ProxyBody {
    http_body_util::Empty::new().map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// A response of the proxy's own: `status`, with `text` as its body.
fn error(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        http_body_util::Full::new(Bytes::from(text)).map_err(|never: Infallible| match never {}).boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A request whose body the client did not send as it said (it went
/// away, or sent less than its length).
fn unreadable_body() -> Response<ProxyBody> {
    let mut response = error(StatusCode::BAD_REQUEST, "the request's body could not be read whole\n".into());
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request that is both chunked and of a length: refused, never
/// passed on, the connection closed after.
fn ambiguous_length() -> Response<ProxyBody> {
    let mut response = error(
        StatusCode::BAD_REQUEST,
        "the request has both Content-Length and Transfer-Encoding: refused, as a request smuggling attempt\n".into(),
    );
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Nothing to send a request to: no release switched to yet, or none of
/// its web processes running (one that exited is being restarted).
fn unavailable(release: &str) -> Response<ProxyBody> {
    let text = if release.is_empty() {
        "no release of this app is serving yet: try again in a moment\n".to_owned()
    } else {
        format!("{release} has no web process running now (one that exited is restarted): try again in a moment\n")
    };
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, text);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn bad_gateway(release: &str, backend: SocketAddr) -> Response<ProxyBody> {
    error(
        StatusCode::BAD_GATEWAY,
        format!("{release}'s web process at {backend} refused the request or closed its connection before answering\n"),
    )
}

fn gateway_timeout(release: &str, timeout: Duration) -> Response<ProxyBody> {
    error(
        StatusCode::GATEWAY_TIMEOUT,
        format!("{release}'s web process did not answer within {} s ([run] timeout)\n", timeout.as_secs_f64()),
    )
}

#[cfg(test)]
mod tests {
    use super::{Keepable, Kept, SocketAddr};

    /// A stand-in for a connection to a backend.
    struct Fake {
        backend: SocketAddr,
        generation: u64,
        usable: bool,
        id: usize,
    }

    impl Keepable for Fake {
        fn backend(&self) -> SocketAddr {
            self.backend
        }
        fn generation(&self) -> u64 {
            self.generation
        }
        fn usable(&mut self) -> bool {
            self.usable
        }
        fn ended(&self) -> bool {
            false
        }
    }

    fn fake(backend: SocketAddr, id: usize) -> Fake {
        Fake { backend, generation: 1, usable: true, id }
    }

    const A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5001);
    const B: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5002);

    #[test]
    fn a_loop_keeps_as_many_connections_as_it_had_requests_in_flight_up_to_the_connection_cap() {
        let mut kept = Kept::default();
        // A burst of 1,000 requests in flight at once on one loop (1,000
        // keep-alive clients at 50 ms each), all answered: none of the
        // connections they used is closed, and the next burst needs no
        // new one. With 256 kept, the next burst made 744.
        for id in 0..1000 {
            kept.give_back(Box::new(fake(A, id)), 10_000);
        }
        assert_eq!(kept.idle_to(A), 1000);
        let again: Vec<_> = (0..1000).map(|_| kept.take(A, 1).expect("a kept connection")).collect();
        assert!(kept.take(A, 1).is_none());
        // The most recently used first.
        assert_eq!(again[0].id, 999);
        // Past the cap, the oldest goes.
        for fake in again {
            kept.give_back(fake, 600);
        }
        assert_eq!(kept.idle_to(A), 600);
        assert_eq!(kept.take(A, 1).map(|fake| fake.id), Some(0), "the oldest 400 were closed");
    }

    #[test]
    fn kept_connections_are_per_backend_and_those_of_older_backends_or_unusable_are_dropped() {
        let mut kept = Kept::default();
        kept.give_back(Box::new(fake(A, 1)), 10);
        kept.give_back(Box::new(fake(B, 2)), 10);
        kept.give_back(Box::new(Fake { usable: false, ..fake(A, 3) }), 10);
        assert_eq!(kept.take(A, 1).map(|fake| fake.id), Some(1), "the unusable one is passed over");
        assert_eq!(kept.idle_to(A), 0, "and dropped");
        assert!(kept.take(A, 1).is_none());
        // A switch: what was kept for the old backends is closed at the
        // next look, and one made for them is not kept after it.
        assert!(kept.take(B, 2).is_none());
        assert_eq!(kept.idle_to(B), 0);
        kept.give_back(Box::new(fake(B, 4)), 10);
        assert_eq!(kept.idle_to(B), 0, "made before the switch");
    }
}

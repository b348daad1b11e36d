//! HTTP mode: one hyper connection per client, each request routed on its
//! own (see the module above).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::{CONNECT_TIMEOUT, ClientConn, Lease, ProxyLimits, Shared};

/// The body of every request to a backend and every response to a client.
pub(super) type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// The pooled HTTP/1.1 client to the backends, keeping connections alive
/// (as nginx's upstream `keepalive` does).
pub(super) type BackendClient = Client<HttpConnector, ProxyBody>;

/// How long a pooled connection to a backend may stay idle.
const POOL_IDLE: Duration = Duration::from_secs(30);

pub(super) fn backend_client() -> BackendClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).pool_idle_timeout(POOL_IDLE).build(connector)
}

/// Serves one client connection until it closes, or, once the proxy
/// stops, until its request in flight is answered, or, idle, until the
/// accept loop closes it to make room (see [`ClientConn`]).
pub(super) async fn serve(
    shared: Arc<Shared>,
    client: BackendClient,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: ProxyLimits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    conn: &Arc<ClientConn>,
) {
    let in_flight_on = Arc::clone(conn);
    let (stream, smuggling) = super::sniff::Sniffed::new(stream, conn);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (shared, client) = (Arc::clone(&shared), client.clone());
        // In flight from its head to the end of its response's body.
        let busy = in_flight_on.busy();
        // Its head had both a length and chunked (see `sniff`).
        let ambiguous =
            smuggling.swap(false, Ordering::Relaxed) && request.headers().contains_key(header::TRANSFER_ENCODING);
        async move {
            let response =
                if ambiguous { ambiguous_length() } else { handle(&shared, &client, request, peer, limits).await };
            Ok::<_, Infallible>(response.map(|body| Holding { body, _held: busy }.boxed_unsync()))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The connection's own timer enforces both limits (see
        // `ClientConn::deadline`); hyper's, from the end of the previous
        // response, is a backstop.
        .header_read_timeout(limits.header_timeout + limits.idle_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        // Idle: dropped, which closes it.
        () = conn.close.notified() => {}
        // Waited too long for a head, or for the next request.
        () = conn.expired(limits) => {}
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// One request: to the backend with the least in flight, retried on
/// another if it refuses before anything of the request was sent.
async fn handle(
    shared: &Arc<Shared>,
    client: &BackendClient,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    limits: ProxyLimits,
) -> Response<ProxyBody> {
    let upgrade = is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    forwarded_headers(&mut parts.headers, peer, upgrade);
    let path = parts.uri.path_and_query().map_or_else(|| "/".to_owned(), ToString::to_string);
    // Only a request without a body can be sent twice.
    let resendable = body.is_end_stream();
    let mut body = Some(body.boxed_unsync());
    let mut tried = Vec::new();
    let mut client_upgrade = client_upgrade;
    loop {
        let (lease, release) = shared.lease(&tried);
        let Some(lease) = lease else {
            return if tried.is_empty() { unavailable() } else { bad_gateway(&release, tried[0]) };
        };
        let Ok(uri) = format!("http://{}{path}", lease.backend).parse::<Uri>() else {
            return error(StatusCode::BAD_REQUEST, "the request's target is not a valid path\n".to_owned());
        };
        let mut outgoing = Request::new(body.take().unwrap_or_else(empty));
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = uri;
        *outgoing.version_mut() = Version::HTTP_11;
        *outgoing.headers_mut() = parts.headers.clone();
        let answered = tokio::time::timeout(limits.response_timeout, client.request(outgoing)).await;
        let mut response = match answered {
            Err(_) => return gateway_timeout(&release, limits.response_timeout),
            Ok(Err(failure)) if failure.is_connect() && resendable => {
                tried.push(lease.backend);
                continue;
            }
            Ok(Err(_)) => return bad_gateway(&release, lease.backend),
            Ok(Ok(response)) => response,
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = client_upgrade.take()
        {
            let backend_side = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_side, backend_side, lease));
            return response.map(http_body_util::BodyExt::boxed_unsync);
        }
        strip_hop_by_hop(response.headers_mut());
        return response.map(|body| Holding { body, _held: lease }.boxed_unsync());
    }
}

/// Both ends of an upgraded connection, copied until either closes; in
/// flight to its backend meanwhile.
async fn tunnel(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade, lease: Lease) {
    let (Ok(client), Ok(backend)) = tokio::join!(client, backend) else { return };
    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
    drop(lease);
}

/// A body that holds `held` (its request's lease on a backend, its request
/// in flight on a client connection) until it is sent whole, or dropped.
struct Holding<B, T> {
    body: B,
    _held: T,
}

impl<B: Body<Data = Bytes, Error = hyper::Error> + Unpin, T: Unpin> Body for Holding<B, T> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
        && headers.get_all(header::CONNECTION).iter().any(|value| has_token(value, "upgrade"))
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|value| value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Headers that describe one hop, not the message (RFC 9110, 7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes the hop-by-hop headers, and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's headers as the app gets them: hop-by-hop ones removed
/// (but those of an upgrade), who asked and how added.
fn forwarded_headers(headers: &mut HeaderMap, peer: SocketAddr, upgrade: bool) {
    let upgrade_to = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
    if upgrade && let Some(protocol) = upgrade_to {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let chain = match headers.get(&X_FORWARDED_FOR).and_then(|value| value.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(chain) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR.clone(), chain);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    if !headers.contains_key(&X_REQUEST_ID)
        && let Ok(id) = HeaderValue::from_str(&request_id())
    {
        headers.insert(X_REQUEST_ID.clone(), id);
    }
}

/// A request id unique to this runner: its start, its pid, a counter.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        // The low bits of the clock, and the pid: two runners differ.
        (u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0)) ^ (u64::from(std::process::id()) << 40)
    });
    format!("{seed:016x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn empty() -> ProxyBody {
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

fn unavailable() -> Response<ProxyBody> {
    let mut response =
        error(StatusCode::SERVICE_UNAVAILABLE, "no release of this app is serving yet: try again in a moment\n".into());
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

//! The proxy against real sockets: small backends on loopback, and clients
//! that write HTTP/1.1 by hand, so that what is on the wire is what is
//! tested.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{Proxy, ProxyError, ProxyLimits, ProxyMode};

const PATIENCE: Duration = Duration::from_secs(5);

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An HTTP/1.1 backend that keeps connections alive and answers each
/// request with `tag`, its method and path, and the headers it got, one
/// per line. By path: `/slow` answers after 500 ms, `/never` never,
/// `/close` closes the connection unanswered, `/bye` answers and then
/// closes it (as a backend closing an idle connection), `/half` closes it halfway
/// through its body, `/ws` (with `Upgrade`)
/// switches protocols and then echoes bytes. Counts the requests it saw.
fn backend(tag: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let counted = counted_backend(tag);
    (counted.addr, counted.seen)
}

/// A [`backend`] that also counts the connections it accepted, and those
/// that ended.
struct Counted {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

fn counted_backend(tag: &'static str) -> Counted {
    let listener = TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = Counted { addr, seen: Arc::default(), accepted: Arc::default(), ended: Arc::default() };
    let (seen, accepted, ended) =
        (Arc::clone(&counted.seen), Arc::clone(&counted.accepted), Arc::clone(&counted.ended));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (seen, ended) = (Arc::clone(&seen), Arc::clone(&ended));
            thread::spawn(move || {
                serve_backend(tag, stream, &seen);
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    counted
}

fn serve_backend(tag: &str, stream: TcpStream, seen: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let Some((request_line, headers)) = read_head(&mut reader) else { return };
        seen.fetch_add(1, Ordering::SeqCst);
        let mut parts = request_line.split(' ');
        let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        if read_body(&mut reader, &headers).is_none() {
            return;
        }
        match path.as_str() {
            "/slow" => thread::sleep(Duration::from_millis(500)),
            "/never" => thread::sleep(Duration::from_secs(3600)),
            "/close" => return,
            "/bye" => {
                // Answered as if to keep the connection, then closed.
                let _ = writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbye\n");
                return;
            }
            "/half" => {
                let _ = writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it");
                return;
            }
            "/ws" => {
                let _ = writer
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n");
                let mut buffer = [0; 1024];
                while let Ok(n) = reader.read(&mut buffer) {
                    if n == 0 || writer.write_all(&buffer[..n]).is_err() {
                        return;
                    }
                }
                return;
            }
            _ => {}
        }
        let mut text = format!("{tag} {method} {path}\n");
        let mut names: Vec<_> = headers.iter().collect();
        names.sort();
        for (name, value) in names {
            let _ = writeln!(text, "{name}: {value}");
        }
        let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len());
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads a chunked body to its end: its data, or `None` when it is not
/// well formed or the stream ends first.
fn read_chunks(reader: &mut impl std::io::BufRead) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        if !chunk.ends_with(b"\r\n") {
            return None;
        }
        data.extend_from_slice(&chunk[..size]);
        if size == 0 {
            return Some(data);
        }
    }
}

/// Reads the body a head announces: chunked, or by its length (none
/// without one). `None` when it is cut short or malformed.
fn read_body(reader: &mut impl std::io::BufRead, headers: &HashMap<String, String>) -> Option<Vec<u8>> {
    if headers.get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return read_chunks(reader);
    }
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// A request or response head: its first line, and its headers by
/// lowercase name. `None` at the end of the stream.
fn read_head(reader: &mut impl std::io::BufRead) -> Option<(String, HashMap<String, String>)> {
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some((first.trim_end().to_owned(), headers));
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
}

/// An address nothing listens on: connecting is refused. Port 1 (tcpmux)
/// is privileged, so no test binds it, and no system serves it.
fn refused() -> SocketAddr {
    let dead = SocketAddr::from(([127, 0, 0, 1], 1));
    assert!(TcpStream::connect(dead).is_err(), "something listens on {dead}");
    dead
}

/// A request as a backend got it: its first line, its headers by
/// lowercase name, and its body, unframed.
type Got = (String, HashMap<String, String>, Vec<u8>);

/// A backend that answers every request with `answer`, byte for byte as
/// it is, and then closes the connection when `close` says so: the
/// responses a backend may send that [`backend`] never does. Counts the
/// connections it accepted and records the requests it got.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<Got>>>,
}

fn scripted_backend(answer: &'static [u8], close: bool) -> Scripted {
    let listener = TcpListener::bind(localhost()).unwrap();
    let scripted = Scripted { addr: listener.local_addr().unwrap(), accepted: Arc::default(), got: Arc::default() };
    let (accepted, got) = (Arc::clone(&scripted.accepted), Arc::clone(&scripted.got));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            accepted.fetch_add(1, Ordering::SeqCst);
            let got = Arc::clone(&got);
            thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                while let Some((first, headers)) = read_head(&mut reader) {
                    let Some(body) = read_body(&mut reader, &headers) else { return };
                    got.lock().unwrap().push((first, headers, body));
                    if writer.write_all(answer).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    scripted
}

fn started_with(mode: ProxyMode, limits: ProxyLimits, backends: Vec<SocketAddr>) -> Proxy {
    let proxy = Proxy::bind(localhost(), mode, limits).unwrap();
    proxy.switch("v1", backends);
    proxy.start().unwrap();
    proxy
}

fn started(backends: Vec<SocketAddr>) -> Proxy {
    started_with(ProxyMode::Http, ProxyLimits::default(), backends)
}

/// A keep-alive client connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A response: status, headers by lowercase name, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Client {
    fn open(proxy: SocketAddr) -> Self {
        let stream = TcpStream::connect(proxy).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Self { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
    }

    /// Sends `raw` as it is and reads one response.
    fn send(&mut self, raw: &str) -> Option<Answer> {
        self.writer.write_all(raw.as_bytes()).ok()?;
        self.read()
    }

    fn read(&mut self) -> Option<Answer> {
        let (status_line, headers) = read_head(&mut self.reader)?;
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let body = read_body(&mut self.reader, &headers)?;
        Some(Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    }

    fn get(&mut self, path: &str) -> Answer {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: app.example\r\n\r\n")).expect("an answer")
    }
}

fn get(proxy: SocketAddr, path: &str) -> Answer {
    Client::open(proxy).get(path)
}

#[test]
fn each_request_goes_to_the_current_release_also_on_a_connection_opened_before_the_switch() {
    let ((a, _), (b, _)) = (backend("a"), backend("b"));
    let proxy = started(vec![a]);
    let mut client = Client::open(proxy.local_addr());
    assert!(client.get("/one").body.starts_with("a GET /one"));
    proxy.switch("v2", vec![b]);
    assert_eq!(proxy.backends(), [b]);
    assert!(client.get("/two").body.starts_with("b GET /two"), "the next request on the same connection");
    assert_eq!(proxy.open_connections(a), 0);
}

#[test]
fn connections_to_a_backend_are_kept_but_not_one_the_backend_closed() {
    let Counted { addr: a, seen, accepted, .. } = counted_backend("a");
    let proxy = started(vec![a]);
    let mut client = Client::open(proxy.local_addr());
    for path in ["/one", "/two", "/three"] {
        assert!(client.get(path).body.starts_with(&format!("a GET {path}")));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "three requests, one connection to the backend");
    assert_eq!(client.get("/bye").body, "bye\n");
    for path in ["/four", "/five"] {
        let answer = client.get(path);
        assert!(answer.body.starts_with(&format!("a GET {path}")), "not a 502: {answer:?}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new one after the backend closed the first");
    assert_eq!(seen.load(Ordering::SeqCst), 6, "each request reached it once");
    assert_eq!(proxy.open_connections(a), 0);
}

#[test]
fn client_connections_on_one_event_loop_share_its_backend_connections_until_a_switch_closes_them() {
    let old = counted_backend("a");
    let new = counted_backend("b");
    let proxy = started(vec![old.addr]);
    // Connections go to the loops in turn: the first round of clients
    // makes a backend connection on each loop, the next rounds reuse them.
    let loops = super::loops::count();
    for round in 0..3 {
        for _ in 0..loops {
            let answer = get(proxy.local_addr(), "/");
            assert!(answer.body.starts_with("a GET /"), "{answer:?}");
        }
        assert_eq!(old.accepted.load(Ordering::SeqCst), loops, "after round {round}");
    }
    assert_eq!(old.ended.load(Ordering::SeqCst), 0, "kept while idle");
    // After a switch, each loop's next request closes what it kept for
    // the old backends, which the runner is about to stop.
    proxy.switch("v2", vec![new.addr]);
    for _ in 0..loops {
        assert!(get(proxy.local_addr(), "/").body.starts_with("b GET /"));
    }
    let deadline = Instant::now() + PATIENCE;
    while old.ended.load(Ordering::SeqCst) < loops {
        assert!(Instant::now() < deadline, "the old backend connections stayed open");
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(new.accepted.load(Ordering::SeqCst), loops);
}

#[test]
fn the_app_is_told_who_asked_and_every_request_gets_an_id() {
    let (a, _) = backend("a");
    let proxy = started(vec![a]);
    let answer = get(proxy.local_addr(), "/");
    for line in ["x-forwarded-for: 127.0.0.1", "x-forwarded-proto: http", "x-forwarded-host: app.example"] {
        assert!(answer.body.contains(line), "{line} missing: {}", answer.body);
    }
    let id = |body: &str| body.lines().find_map(|l| l.strip_prefix("x-request-id: ")).map(str::to_owned);
    let first = id(&answer.body).expect("an x-request-id");
    assert_ne!(Some(first), id(&get(proxy.local_addr(), "/").body), "ids repeat");
    let mut client = Client::open(proxy.local_addr());
    let kept = client
        .send(concat!(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: mine\r\nX-Forwarded-For: 10.0.0.1\r\n",
            "Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\n",
            "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-Sum\r\n\r\n"
        ))
        .unwrap();
    assert!(kept.body.contains("x-request-id: mine\n"), "{}", kept.body);
    assert!(kept.body.contains("x-forwarded-for: 10.0.0.1, 127.0.0.1\n"), "{}", kept.body);
    assert!(!kept.body.contains("x-secret"), "a header Connection names is hop-by-hop: {}", kept.body);
    for hop in ["connection:", "keep-alive:", "proxy-connection:", "te:", "trailer:"] {
        assert!(!kept.body.lines().any(|line| line.starts_with(hop)), "{hop} is hop-by-hop: {}", kept.body);
    }
}

#[test]
fn with_nothing_serving_a_request_gets_503_at_once_and_a_refusing_backend_502_naming_the_release() {
    let proxy = started(Vec::new());
    let started_at = Instant::now();
    let answer = get(proxy.local_addr(), "/");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.headers.get("retry-after").map(String::as_str), Some("1"));
    assert!(started_at.elapsed() < Duration::from_secs(2));

    // A refusing backend beside a good one: skipped.
    let (a, _) = backend("a");
    let dead = refused();
    proxy.switch("v7", vec![dead, a]);
    for _ in 0..4 {
        assert!(get(proxy.local_addr(), "/").body.starts_with("a GET"));
    }
    proxy.switch("v7", vec![dead]);
    let answer = get(proxy.local_addr(), "/");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(answer.body.starts_with("v7's web process at 127.0.0.1:1 refused the request"), "{}", answer.body);

    // One that closes without answering.
    proxy.switch("v8", vec![a]);
    let answer = get(proxy.local_addr(), "/close");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(answer.body.starts_with("v8's web process"), "{}", answer.body);
}

#[test]
fn a_backend_taken_out_of_the_release_gets_no_request_and_with_none_left_a_503_names_the_release() {
    let ((a, seen_a), (b, seen_b)) = (backend("a"), backend("b"));
    let proxy = started(vec![a, b]);
    let mut client = Client::open(proxy.local_addr());
    for _ in 0..4 {
        client.get("/");
    }
    assert!(seen_b.load(Ordering::SeqCst) > 0, "both serve to begin with");

    // b's process exited: no request goes to its port, kept connections or not.
    proxy.reroute(vec![a]);
    let before = seen_b.load(Ordering::SeqCst);
    for _ in 0..6 {
        assert!(client.get("/").body.starts_with("a GET"));
    }
    assert_eq!(seen_b.load(Ordering::SeqCst), before);

    // Neither is running: nothing to wait for, the release named.
    proxy.reroute(Vec::new());
    let answer = client.get("/");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.headers.get("retry-after").map(String::as_str), Some("1"));
    assert!(answer.body.starts_with("v1 has no web process running now"), "{}", answer.body);

    // b is back: served again, on the same connection, without a switch.
    proxy.reroute(vec![b]);
    let served_by_a = seen_a.load(Ordering::SeqCst);
    assert!(client.get("/").body.starts_with("b GET"));
    assert_eq!(seen_a.load(Ordering::SeqCst), served_by_a);
    assert_eq!(proxy.backends(), [b]);
}

#[test]
fn a_backend_that_never_answers_gets_the_client_a_504() {
    let (a, _) = backend("a");
    let limits = ProxyLimits { response_timeout: Duration::from_millis(300), ..ProxyLimits::default() };
    let proxy = started_with(ProxyMode::Http, limits, vec![a]);
    let answer = get(proxy.local_addr(), "/never");
    assert_eq!(answer.status, 504, "{answer:?}");
    assert!(answer.body.contains("did not answer within 0.3 s ([run] timeout)"), "{}", answer.body);
    assert!(proxy.wait_drained(a, PATIENCE), "the request is no longer in flight");
}

#[test]
fn a_client_that_closes_its_side_after_its_request_still_gets_the_answer() {
    let (a, _) = backend("a");
    let proxy = started(vec![a]);
    let mut client = Client::open(proxy.local_addr());
    client.writer.write_all(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    // A half-close (RFC 9112, 9.6): the request is whole, and the answer
    // is still wanted; it reaches the app and comes back.
    client.writer.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = client.read().expect("an answer after the half-close");
    assert!(answer.body.starts_with("a GET /slow"), "{answer:?}");
    let mut rest = Vec::new();
    assert_eq!(client.reader.read_to_end(&mut rest).unwrap(), 0, "then the connection ends");
    assert!(proxy.wait_drained(a, PATIENCE), "the request is no longer in flight");
}

#[test]
fn each_request_on_a_connection_gets_the_whole_timeout_for_its_answer() {
    let (a, _) = backend("a");
    let limits = ProxyLimits { response_timeout: Duration::from_millis(800), ..ProxyLimits::default() };
    let proxy = started_with(ProxyMode::Http, limits, vec![a]);
    let mut client = Client::open(proxy.local_addr());
    // Each takes 500 ms: the second would be cut at 300 ms by a timer
    // that still ran from the first.
    for round in ["first", "second"] {
        let answer = client.get("/slow");
        assert_eq!(answer.status, 200, "the {round}: {answer:?}");
    }
    assert_eq!(client.get("/never").status, 504);
    assert!(get(proxy.local_addr(), "/").body.starts_with("a GET /"), "a new connection is answered");
}

#[test]
fn a_backend_that_closes_halfway_through_its_body_cuts_the_client_off_and_is_not_left_in_flight() {
    let (a, _) = backend("a");
    let proxy = started(vec![a]);
    let mut client = Client::open(proxy.local_addr());
    client.writer.write_all(b"GET /half HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let (status_line, headers) = read_head(&mut client.reader).expect("the head was sent");
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    assert_eq!(headers.get("content-length").map(String::as_str), Some("100"));
    // The client gets what came, then the end of the connection: never a
    // body that looks whole.
    let mut rest = Vec::new();
    let _ = client.reader.read_to_end(&mut rest);
    assert_eq!(rest, b"only part of it");
    assert!(proxy.wait_drained(a, PATIENCE), "the request is no longer in flight");
    assert!(get(proxy.local_addr(), "/").body.starts_with("a GET /"), "the proxy serves on");
}

#[test]
fn requests_in_flight_finish_on_the_old_release_which_then_drains() {
    let ((a, _), (b, _)) = (backend("a"), backend("b"));
    let proxy = started(vec![a]);
    let addr = proxy.local_addr();
    let slow = thread::spawn(move || get(addr, "/slow"));
    let deadline = Instant::now() + PATIENCE;
    while proxy.open_connections(a) == 0 {
        assert!(Instant::now() < deadline, "the slow request never reached a");
        thread::sleep(Duration::from_millis(5));
    }
    proxy.switch("v2", vec![b]);
    assert!(get(addr, "/").body.starts_with("b GET"));
    assert_eq!(proxy.open_connections(a), 1, "the slow request is still in flight on a");
    assert!(proxy.wait_drained(a, PATIENCE));
    assert!(slow.join().unwrap().body.starts_with("a GET /slow"), "it finished on the old release");
}

#[test]
fn requests_go_to_the_backend_with_the_least_in_flight() {
    let ((a, _), (b, b_seen)) = (backend("a"), backend("b"));
    let proxy = started(vec![a, b]);
    let addr = proxy.local_addr();
    // Hold one slow request on whichever gets it; the next five go to the
    // other.
    let slow = thread::spawn(move || get(addr, "/slow"));
    let deadline = Instant::now() + PATIENCE;
    while proxy.open_connections(a) + proxy.open_connections(b) == 0 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    let busy = if proxy.open_connections(a) == 1 { "a" } else { "b" };
    let before = b_seen.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert!(!get(addr, "/").body.starts_with(busy), "a request went to the busy backend");
    }
    let slow = slow.join().unwrap();
    assert!(slow.body.starts_with(busy));
    let to_b = b_seen.load(Ordering::SeqCst) - before;
    assert_eq!(to_b, if busy == "a" { 5 } else { 0 });
}

#[test]
fn ambiguous_and_oversized_requests_are_refused_and_never_reach_the_app() {
    let (a, seen) = backend("a");
    let limits = ProxyLimits { max_header_bytes: 8192, ..ProxyLimits::default() };
    let proxy = started_with(ProxyMode::Http, limits, vec![a]);
    let attempts = [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4x\r\n\r\nabcd",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for attempt in attempts {
        let answer = Client::open(proxy.local_addr()).send(attempt);
        assert!(answer.as_ref().is_none_or(|a| a.status == 400), "{attempt:?}: {answer:?}");
    }
    let huge = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n", "x".repeat(20_000));
    let answer = Client::open(proxy.local_addr()).send(&huge);
    assert!(answer.as_ref().is_none_or(|a| a.status == 431 || a.status == 400), "{answer:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the app saw one of them");

    // Both a length and chunked, either order, CRLF or LF alone: refused,
    // and the connection closed after.
    for attempt in [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\nHost: h\ncontent-length: 4\ntransfer-encoding: chunked\n\n0\r\n\r\n",
    ] {
        let mut client = Client::open(proxy.local_addr());
        let answer = client.send(attempt).expect("an answer");
        assert_eq!(answer.status, 400, "{attempt:?}: {answer:?}");
        assert!(answer.body.contains("both Content-Length and Transfer-Encoding"), "{}", answer.body);
        assert!(client.read().is_none(), "the connection stays open after {attempt:?}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the app saw a smuggling attempt");
    // A chunked request alone, after a request with a length on the same
    // connection, is served.
    let mut client = Client::open(proxy.local_addr());
    let first = client.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi").expect("an answer");
    assert_eq!(first.status, 200, "{first:?}");
    let chunked = client
        .send("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        .expect("an answer");
    assert_eq!(chunked.status, 200, "{chunked:?}");
    assert!(get(proxy.local_addr(), "/").body.starts_with("a GET"), "and the proxy still serves");
}

#[test]
fn a_client_that_sends_its_headers_forever_is_closed_after_the_header_timeout_and_an_idle_one_after_the_idle_timeout() {
    let (a, seen) = backend("a");
    let limits = ProxyLimits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(1500),
        ..ProxyLimits::default()
    };
    let proxy = started_with(ProxyMode::Http, limits, vec![a]);
    let mut slow = TcpStream::connect(proxy.local_addr()).unwrap();
    slow.set_read_timeout(Some(PATIENCE)).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n").unwrap();
    let started_at = Instant::now();
    let mut rest = Vec::new();
    // A byte now and then, never the end of the head.
    let _ = slow.write_all(b"X-A: 1\r\n");
    let _ = slow.read_to_end(&mut rest);
    assert!(started_at.elapsed() < Duration::from_secs(1), "closed only after {:?}", started_at.elapsed());
    assert_eq!(seen.load(Ordering::SeqCst), 0);

    // A connection that never sends a byte gets the header timeout too.
    let mut silent = TcpStream::connect(proxy.local_addr()).unwrap();
    silent.set_read_timeout(Some(PATIENCE)).unwrap();
    let started_at = Instant::now();
    let _ = silent.read_to_end(&mut rest);
    assert!(started_at.elapsed() < Duration::from_secs(1), "silent for {:?}", started_at.elapsed());

    // A keep-alive connection waits longer than a head may take for its
    // next request, and is served; then, idle past the idle timeout, it is
    // closed.
    let mut idle = Client::open(proxy.local_addr());
    assert!(idle.get("/").body.starts_with("a GET"));
    thread::sleep(Duration::from_millis(700));
    assert!(idle.get("/").body.starts_with("a GET"), "closed at the header timeout, not the idle one");
    let started_at = Instant::now();
    let _ = idle.reader.read_to_end(&mut rest);
    let waited = started_at.elapsed();
    assert!(waited >= Duration::from_millis(1200) && waited < Duration::from_secs(4), "idle for {waited:?}");
}

#[test]
fn at_the_connection_cap_the_longest_idle_connection_makes_room_and_busy_ones_are_kept() {
    let (a, _) = backend("a");
    let limits = ProxyLimits { max_connections: 2, ..ProxyLimits::default() };
    let proxy = started_with(ProxyMode::Http, limits, vec![a]);
    let addr = proxy.local_addr();

    // Two idle connections (one has never sent a byte): a third closes the
    // one idle longest and is served; the other stays.
    let mut never_spoke = TcpStream::connect(addr).unwrap();
    never_spoke.set_read_timeout(Some(PATIENCE)).unwrap();
    thread::sleep(Duration::from_millis(50));
    let mut idle = Client::open(addr);
    assert!(idle.get("/").body.starts_with("a GET"));
    assert!(get(addr, "/").body.starts_with("a GET"), "served in place of an idle one");
    let mut rest = Vec::new();
    assert_eq!(never_spoke.read_to_end(&mut rest).unwrap(), 0, "the longest idle was closed");
    assert!(idle.get("/").body.starts_with("a GET"), "the other idle one is still open");

    // Both busy: a third waits until one of them is done.
    let slow = |addr| thread::spawn(move || get(addr, "/slow"));
    let (first, second) = (slow(addr), slow(addr));
    thread::sleep(Duration::from_millis(100));
    drop(idle);
    let third = thread::spawn(move || get(addr, "/"));
    assert!(first.join().unwrap().body.starts_with("a GET /slow"), "a busy connection is never closed for room");
    assert!(second.join().unwrap().body.starts_with("a GET /slow"));
    assert!(third.join().unwrap().body.starts_with("a GET"));
}

#[test]
fn an_upgrade_becomes_a_tunnel_counted_in_flight_until_it_closes() {
    let (a, _) = backend("a");
    let proxy = started(vec![a]);
    let mut client = Client::open(proxy.local_addr());
    let answer =
        client.send("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").expect("an answer");
    assert_eq!(answer.status, 101, "{answer:?}");
    client.writer.write_all(b"ping\n").unwrap();
    let mut line = String::new();
    client.reader.read_line(&mut line).unwrap();
    assert_eq!(line, "ping\n");
    assert_eq!(proxy.open_connections(a), 1);
    client.writer.shutdown(Shutdown::Both).unwrap();
    assert!(proxy.wait_drained(a, PATIENCE));
}

#[test]
fn tcp_mode_forwards_bytes_per_connection_and_skips_a_refusing_backend() {
    // The HTTP backend speaks lines well enough for a TCP round trip.
    let (a, _) = backend("a");
    let proxy = started_with(ProxyMode::Tcp, ProxyLimits::default(), vec![refused(), a]);
    for _ in 0..3 {
        let mut stream = TcpStream::connect(proxy.local_addr()).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(b"GET /raw HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let (status, _) = read_head(&mut reader).unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
    // Nothing is added in TCP mode: the app sees the bytes as sent.
    let mut stream = TcpStream::connect(proxy.local_addr()).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"GET /raw HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let (_, headers) = read_head(&mut reader).unwrap();
    let length: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    assert!(!String::from_utf8_lossy(&body).contains("x-forwarded-for"));
}

#[test]
fn bind_on_a_port_in_use_names_the_port() {
    let taken = TcpListener::bind(localhost()).unwrap();
    let addr = taken.local_addr().unwrap();
    let error = Proxy::bind(addr, ProxyMode::Http, ProxyLimits::default()).unwrap_err();
    assert!(matches!(error, ProxyError::AddrInUse { addr: a } if a == addr), "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with(&format!("port {} on 127.0.0.1 is already in use", addr.port())), "{message}");
    assert!(message.contains("--port"), "{message}");
}

#[test]
fn a_burst_of_connections_waits_in_the_backlog_until_the_proxy_accepts_them() {
    let (a, _) = backend("a");
    let limits = ProxyLimits { max_connections: 1000, ..ProxyLimits::default() };
    let proxy = Proxy::bind(localhost(), ProxyMode::Http, limits).unwrap();
    proxy.switch("v1", vec![a]);
    // Nothing accepts yet: every handshake must complete in the kernel's
    // queue. With std's backlog of 128 the 130th was dropped, and its
    // connect tried again only after a second.
    let burst: Vec<TcpStream> = (0..400)
        .map(|i| {
            TcpStream::connect_timeout(&proxy.local_addr(), Duration::from_secs(1))
                .unwrap_or_else(|error| panic!("connection {i} of the burst: {error}"))
        })
        .collect();
    proxy.start().unwrap();
    let last = burst.last().unwrap().try_clone().unwrap();
    last.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut client = Client { reader: BufReader::new(last.try_clone().unwrap()), writer: last };
    assert!(client.get("/queued").body.starts_with("a GET /queued"));
}

#[test]
fn stop_frees_the_port_at_once_and_lets_a_request_in_flight_finish() {
    let (a, _) = backend("a");
    let proxy = started(vec![a]);
    let addr = proxy.local_addr();
    let slow = thread::spawn(move || get(addr, "/slow"));
    let deadline = Instant::now() + PATIENCE;
    while proxy.open_connections(a) == 0 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    proxy.stop();
    assert!(TcpStream::connect(addr).is_err(), "still accepting after stop");
    assert!(matches!(proxy.start(), Err(ProxyError::Started { .. })));
    assert!(slow.join().unwrap().body.starts_with("a GET /slow"));
}

#[test]
fn the_backlog_follows_the_connection_cap_within_128_and_4096() {
    let with_cap = |max_connections| super::backlog(&ProxyLimits { max_connections, ..ProxyLimits::default() });
    assert_eq!(with_cap(448), 448, "ulimit -n 1024");
    assert_eq!(with_cap(16), 128, "never below std's");
    assert_eq!(with_cap(500_000), 4096, "Linux's most by default");
}

#[test]
fn a_response_framed_by_chunks_reaches_the_client_whole_and_its_connection_is_kept() {
    let backend = scripted_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
        false,
    );
    let proxy = started(vec![backend.addr]);
    let mut client = Client::open(proxy.local_addr());
    for path in ["/one", "/two", "/three"] {
        assert_eq!(client.get(path).body, "hello world", "{path}");
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1, "three responses, one connection to the backend");
}

#[test]
fn a_response_that_ends_with_its_connection_or_asks_to_close_it_is_delivered_and_its_connection_not_reused() {
    // To the end of the connection: the client, kept alive, gets it
    // chunked and asks again.
    let until_close = scripted_backend(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true);
    let proxy = started(vec![until_close.addr]);
    let mut client = Client::open(proxy.local_addr());
    for path in ["/one", "/two"] {
        assert_eq!(client.get(path).body, "until the end", "{path}");
    }
    assert_eq!(until_close.accepted.load(Ordering::SeqCst), 2);
    // `Connection: close` from a backend that leaves it open: not reused
    // either, or the next request would wait on a connection its backend
    // no longer reads.
    let asks_close = scripted_backend(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false);
    proxy.switch("v2", vec![asks_close.addr]);
    for path in ["/three", "/four"] {
        assert_eq!(client.get(path).body, "ok", "{path}");
    }
    assert_eq!(asks_close.accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn the_answer_to_a_head_request_has_no_body_whatever_its_length_says() {
    let backend = scripted_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false);
    let proxy = started(vec![backend.addr]);
    let mut client = Client::open(proxy.local_addr());
    for _ in 0..2 {
        client.writer.write_all(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let (status_line, headers) = read_head(&mut client.reader).expect("an answer, not a wait for five bytes");
        assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
        assert_eq!(headers.get("content-length").map(String::as_str), Some("5"));
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1, "the backend connection was kept");
    assert!(proxy.wait_drained(backend.addr, PATIENCE));
}

#[test]
fn an_ambiguous_response_gets_a_502_and_a_malformed_body_cuts_the_client_off() {
    let ambiguous = scripted_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk", false);
    let proxy = started(vec![ambiguous.addr]);
    let answer = get(proxy.local_addr(), "/");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(answer.body.contains("v1"), "{answer:?}");
    assert_eq!(ambiguous.got.lock().unwrap().len(), 1, "it was not sent again");

    let malformed =
        scripted_backend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", false);
    proxy.switch("v2", vec![malformed.addr]);
    let mut client = Client::open(proxy.local_addr());
    client.writer.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let (status_line, headers) = read_head(&mut client.reader).expect("the head was sent");
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    assert_eq!(read_body(&mut client.reader, &headers), None, "a body that looks whole");
    assert!(proxy.wait_drained(malformed.addr, PATIENCE), "the request is no longer in flight");
}

#[test]
fn a_request_body_reaches_the_app_whole_framed_as_the_client_framed_it() {
    let backend = scripted_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    let proxy = started(vec![backend.addr]);
    let mut client = Client::open(proxy.local_addr());
    let large = "x".repeat(300_000);
    let with_length = format!("POST /length HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{large}", large.len());
    assert_eq!(client.send(&with_length).expect("an answer").status, 200);
    let chunked =
        "POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    assert_eq!(client.send(chunked).expect("an answer").status, 200);
    assert_eq!(client.get("/empty").status, 200);

    let got = backend.got.lock().unwrap();
    let [length, chunked, empty] = got.as_slice() else { panic!("{} requests", got.len()) };
    assert_eq!(length.0, "POST /length HTTP/1.1");
    assert_eq!(length.1.get("content-length"), Some(&large.len().to_string()));
    assert_eq!(length.2, large.as_bytes(), "the body as the client sent it");
    assert_eq!(chunked.0, "POST /chunked HTTP/1.1");
    assert_eq!(chunked.1.get("transfer-encoding").map(String::as_str), Some("chunked"));
    assert_eq!(chunked.1.get("content-length"), None);
    assert_eq!(chunked.2, b"abcde");
    assert_eq!(empty.1.get("content-length"), None, "no body, no framing: {:?}", empty.1);
    assert_eq!(empty.1.get("transfer-encoding"), None);
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
}

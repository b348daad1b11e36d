//! The runner's proxy: what makes a switch zero-downtime.
//!
//! The runner owns the public port; the `web` processes listen on private
//! ones. The proxy is an HTTP/1.1 reverse proxy, on event loops of its
//! own, one per core (see `loops`): hyper serves the clients, and the
//! connections to the backends are the proxy's own (see `upstream`: a
//! proxy needs a small part of an HTTP client, and hyper's whole client
//! cost a third of the proxy's work per request). It routes **each
//! request** to one of the current backends, the one with the fewest
//! requests in flight. A switch replaces the
//! backend set at once: the next request goes to the new release, also on
//! a keep-alive connection opened before the switch, while requests in
//! flight finish on the old one; the runner waits until an old backend has
//! nothing in flight ([`Proxy::wait_drained`]) before it stops its process.
//!
//! - `Upgrade` requests (WebSocket) become tunnels to the backend that
//!   accepted them, counted in flight until they close.
//! - The app sees `X-Forwarded-For`, `X-Forwarded-Proto`,
//!   `X-Forwarded-Host`, and an `X-Request-Id` when the client sent none.
//! - With no backend, a request gets `503` with `Retry-After` at once; a
//!   backend that refuses gets the request retried on another, or a `502`
//!   naming the release; one that does not answer in time, a `504`.
//! - Limits: at most [`ProxyLimits::max_connections`] client connections.
//!   At the cap, a new connection takes the place of the one that has been
//!   idle longest (waiting for its headers, or for its next request), so
//!   that idle connections, however many, cannot keep requests out; only
//!   when every connection has a request in flight do new ones wait in the
//!   kernel's backlog. A request's headers within
//!   [`ProxyLimits::header_timeout`] of their first byte (a slowloris
//!   client is closed), the next request on a keep-alive connection within
//!   [`ProxyLimits::idle_timeout`]; headers
//!   at most [`ProxyLimits::max_header_bytes`]. Malformed and ambiguous
//!   requests (request smuggling: conflicting lengths, both a length and
//!   chunked) get `400` before any of it reaches the app: hyper refuses
//!   most, and a watch on the client's bytes the rest (see `sniff`).
//!
//! [`ProxyMode::Tcp`] forwards bytes instead, per connection, for services
//! that do not speak HTTP, on the same event loops.
//!
//! It owns sockets and tasks only: it does not start, watch or stop
//! processes, and, like the rest of the library, never prints.

mod beside;
mod http;
mod loops;
mod sniff;
mod tcp;
mod upstream;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long connecting to a backend may take before the next is tried: a
/// backend that drops packets must not hold a client for the kernel's
/// minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most connections the kernel holds for the accept loop: Linux's
/// most by default (`net.core.somaxconn`, which caps it anyway).
const MAX_BACKLOG: usize = 4096;

/// How many connections the kernel holds for the accept loop: as many as
/// the proxy may have open at once, within std's 128 and
/// [`MAX_BACKLOG`]. With std's 128, a thousand clients connecting at once
/// (as after a restart of the machine in front) had most of their
/// handshakes dropped, each tried again only a second later; a queue much
/// longer than the cap holds a flood of idle connections (slowloris) that
/// a normal client's connection waits behind, each evicting one.
fn backlog(limits: &ProxyLimits) -> i32 {
    i32::try_from(limits.max_connections.clamp(128, MAX_BACKLOG)).unwrap_or(128)
}

/// How long the accept loop pauses after a failed accept, so that running
/// out of file descriptors does not turn it into a busy loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// How often, at the connection cap with no connection idle, the accept
/// loop looks again for one that has become idle.
const EVICT_AGAIN: Duration = Duration::from_millis(100);

/// How long, once the proxy stops, connections still open may finish their
/// requests before their tasks are dropped.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A failure of the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Something else already listens on the public port.
    #[error(
        "port {} on {} is already in use: stop whatever listens there, or give graven another port with --port or graven.toml [run] port",
        addr.port(),
        addr.ip()
    )]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The public address could not be listened on for another reason.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `start` was called on a proxy already started or stopped.
    #[error("the proxy on {addr} has already been started or stopped")]
    Started {
        /// The public address.
        addr: SocketAddr,
    },
    /// The proxy's event loops could not be started.
    #[error("could not start the proxy's event loops on {addr}")]
    Runtime {
        /// The public address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

pub use crate::app::ProxyMode;

/// The proxy's limits; each has a `[run]` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyLimits {
    /// Client connections open at once; more wait in the backlog.
    pub max_connections: usize,
    /// For a request's headers to arrive, from their first byte (or, for a
    /// connection's first request, from its accept).
    pub header_timeout: Duration,
    /// For the next request on an idle keep-alive connection to begin.
    pub idle_timeout: Duration,
    /// The largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// For a backend to answer a request (its response's head) before the
    /// client gets a `504`.
    pub response_timeout: Duration,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_header_bytes: 64 * 1024,
            response_timeout: Duration::from_secs(60),
        }
    }
}

/// As many client connections as the process's open-file limit allows:
/// each takes one descriptor and one to its backend, and a reserve stays
/// for the runner's own files.
pub fn default_max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 20);
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    (soft.saturating_sub(128) / 2).max(16)
}

/// Raises the process's soft limit on open files to its hard limit, as a
/// server that holds a descriptor per client should; returns the limit.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The proxy from the public port to the current `web` processes.
///
/// Dropping it stops it, like [`Proxy::stop`].
pub struct Proxy {
    shared: Arc<Shared>,
    mode: ProxyMode,
    limits: ProxyLimits,
    /// The listening socket, until `start` hands it to the event loops.
    listener: Mutex<Option<std::net::TcpListener>>,
    running: Mutex<Option<Running>>,
}

/// A started proxy: its event loops, and what tells it to stop.
struct Running {
    loops: loops::Loops,
    stop: tokio::sync::watch::Sender<bool>,
    /// Signalled by the accept loop once the listener is closed.
    closed: std::sync::mpsc::Receiver<()>,
}

/// What the proxy's handle and its tasks share.
struct Shared {
    local_addr: SocketAddr,
    routes: Mutex<Routes>,
    /// Signalled whenever a backend's load goes down or the backends change.
    changed: Condvar,
}

#[derive(Default)]
struct Routes {
    /// The release the backends run, for error pages (`v42`).
    release: Arc<str>,
    backends: Vec<SocketAddr>,
    /// How many times the backends were replaced.
    generation: u64,
    /// Ties go round robin from here.
    next: usize,
    /// Requests (or tunnels, or TCP connections) in flight per backend.
    load: Load,
    /// Client connections open.
    connections: usize,
    /// Threads waiting on `changed`: without any, nothing is notified (a
    /// notification is a system call, and would be one per request).
    waiting: usize,
}

impl Proxy {
    /// Binds the public address; nothing is accepted before [`Proxy::start`].
    pub fn bind(addr: SocketAddr, mode: ProxyMode, limits: ProxyLimits) -> Result<Self, ProxyError> {
        let bind_error = |source: io::Error| {
            if source.kind() == io::ErrorKind::AddrInUse {
                ProxyError::AddrInUse { addr }
            } else {
                ProxyError::Bind { addr, source }
            }
        };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        // Listening again sets the backlog std chose (128) anew.
        rustix::net::listen(&listener, backlog(&limits)).map_err(|errno| bind_error(errno.into()))?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let shared = Arc::new(Shared { local_addr, routes: Mutex::new(Routes::default()), changed: Condvar::new() });
        Ok(Self { shared, mode, limits, listener: Mutex::new(Some(listener)), running: Mutex::new(None) })
    }

    /// The address actually bound (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Starts accepting on the proxy's own event loops; returns immediately.
    pub fn start(&self) -> Result<(), ProxyError> {
        let addr = self.shared.local_addr;
        let listener = lock(&self.listener).take().ok_or(ProxyError::Started { addr })?;
        let loops = loops::Loops::start().map_err(|source| ProxyError::Runtime { addr, source })?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let listener = {
            let _entered = loops.first().enter();
            tokio::net::TcpListener::from_std(listener).map_err(|source| ProxyError::Runtime { addr, source })?
        };
        let shared = Arc::clone(&self.shared);
        let (mode, limits) = (self.mode, self.limits);
        let dispatch = loops.dispatch();
        loops.first().spawn(async move {
            accept_loop(shared, listener, mode, limits, stopped, dispatch).await;
            let _ = closed_tx.send(());
        });
        *lock(&self.running) = Some(Running { loops, stop, closed });
        Ok(())
    }

    /// Replaces the backends with those of `release` (`v42`): every request
    /// that starts after this returns goes to one of them; requests in
    /// flight finish where they are.
    pub fn switch(&self, release: &str, backends: Vec<SocketAddr>) {
        {
            let mut routes = self.shared.lock();
            routes.release = Arc::from(release);
            routes.backends = backends;
            routes.generation += 1;
        }
        self.shared.changed.notify_all();
    }

    /// Changes the backends of the release being served, without a
    /// switch: a web process that exited is left out until it is back, on
    /// its new port. Nothing is sent to a port that none of the release's
    /// processes listens on (another process could be listening there);
    /// with none left, requests get a 503 naming the release. Kept
    /// connections to the backends that stay are kept.
    pub fn reroute(&self, backends: Vec<SocketAddr>) {
        self.shared.lock().backends = backends;
        self.shared.changed.notify_all();
    }

    /// The current backends.
    pub fn backends(&self) -> Vec<SocketAddr> {
        self.shared.lock().backends.clone()
    }

    /// Requests (or tunnels, or TCP connections) in flight to `backend`,
    /// including one being connected: the runner stops a switched-out
    /// process once this reaches 0.
    pub fn open_connections(&self, backend: SocketAddr) -> usize {
        self.shared.lock().load.of(backend)
    }

    /// Client connections open now.
    pub fn client_connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Waits until nothing is in flight to `backend`, or `timeout` passes;
    /// whether it drained.
    pub fn wait_drained(&self, backend: SocketAddr, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut routes = self.shared.lock();
        routes.waiting += 1;
        let drained = loop {
            if routes.load.of(backend) == 0 {
                break true;
            }
            let left = deadline.and_then(|deadline| deadline.checked_duration_since(Instant::now()));
            match left {
                Some(left) if !left.is_zero() => {
                    routes = self.shared.changed.wait_timeout(routes, left).unwrap_or_else(PoisonError::into_inner).0;
                }
                _ => break false,
            }
        };
        routes.waiting -= 1;
        drained
    }

    /// Stops accepting and releases the public port before it returns;
    /// open connections finish their requests (for up to 30 s, on a thread
    /// of their own) and then close.
    pub fn stop(&self) {
        lock(&self.listener).take();
        let Some(running) = lock(&self.running).take() else { return };
        let _ = running.stop.send(true);
        // The accept loop drops the listener when it sees the stop.
        let _ = running.closed.recv_timeout(CONNECT_TIMEOUT);
        let shared = Arc::clone(&self.shared);
        let finish = move || {
            let deadline = Instant::now() + STOP_GRACE;
            let mut routes = shared.lock();
            routes.waiting += 1;
            while routes.connections > 0 && Instant::now() < deadline {
                routes = shared
                    .changed
                    .wait_timeout(routes, Duration::from_millis(100))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            routes.waiting -= 1;
            drop(routes);
            drop(running.loops);
        };
        // Out of threads: the connections end now rather than never.
        if std::thread::Builder::new().name("graven-proxy-stop".into()).spawn(finish).is_err() {
            // `finish` was moved into the failed spawn and dropped with it,
            // which ends the loops and their tasks.
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("local_addr", &self.shared.local_addr)
            .field("mode", &self.mode)
            .field("backends", &self.backends())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accepts until told to stop, at most `limits.max_connections` at once;
/// the listener is dropped when this returns, which frees the public port.
async fn accept_loop(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    mode: ProxyMode,
    limits: ProxyLimits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    mut dispatch: loops::Dispatch,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut open: Vec<Arc<ClientConn>> = Vec::new();
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => accepted,
        };
        // Aborted handshakes and exhausted descriptors are transient.
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(ACCEPT_PAUSE).await;
            continue;
        };
        let permit = loop {
            if let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
                break permit;
            }
            // At the cap, the connection idle longest makes room for this
            // one: it is closed, and its permit comes back as its task
            // ends. With none idle, look again shortly.
            open.retain(|conn| !conn.ended.load(Ordering::Relaxed));
            if let Some(idle) = longest_idle(&open) {
                idle.ended.store(true, Ordering::Relaxed);
                idle.close.notify_one();
            }
            tokio::select! {
                _ = stopped.changed() => return,
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => break permit,
                    Err(_) => return,
                },
                () = tokio::time::sleep(EVICT_AGAIN) => {}
            }
        };
        if open.len() > 2 * limits.max_connections {
            open.retain(|conn| !conn.ended.load(Ordering::Relaxed));
        }
        let _ = stream.set_nodelay(true);
        let guard = ConnectionGuard::new(&shared);
        let shared = Arc::clone(&shared);
        let stopped = stopped.clone();
        match mode {
            ProxyMode::Http => {
                let conn = Arc::new(ClientConn::new(limits));
                open.push(Arc::clone(&conn));
                dispatch.serve(stream, move |stream| async move {
                    http::serve(shared, stream, peer, limits, stopped, &conn).await;
                    conn.ended.store(true, Ordering::Relaxed);
                    drop((permit, guard));
                });
            }
            ProxyMode::Tcp => {
                dispatch.serve(stream, move |stream| async move {
                    tcp::serve(&shared, stream).await;
                    drop((permit, guard));
                });
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Routes> {
        lock(&self.routes)
    }

    /// The backend with the least in flight, not among `tried`, counted in
    /// flight (under the same lock as the choice: once `switch` returns, a
    /// request still headed for an old backend already shows in its load,
    /// so the runner cannot see it drained and stop it too early). `None`
    /// when there is none; the release's name either way.
    fn lease(self: &Arc<Self>, tried: &[SocketAddr]) -> (Option<Lease>, Arc<str>) {
        let mut routes = self.lock();
        let len = routes.backends.len();
        let start = routes.next;
        routes.next = routes.next.wrapping_add(1);
        let chosen = (0..len)
            .map(|i| routes.backends[(start + i) % len])
            .filter(|backend| !tried.contains(backend))
            .min_by_key(|backend| routes.load.of(*backend));
        let release = Arc::clone(&routes.release);
        let Some(backend) = chosen else { return (None, release) };
        routes.load.add(backend);
        (Some(Lease { shared: Arc::clone(self), backend, generation: routes.generation }), release)
    }
}

/// Requests in flight per backend, those with any only: a few (a
/// release's web processes, and an old one's while it drains), for which
/// a look along a list is cheaper than hashing an address (twice a
/// request, under the lock every event loop takes).
#[derive(Default)]
struct Load(Vec<(SocketAddr, usize)>);

impl Load {
    fn of(&self, backend: SocketAddr) -> usize {
        self.0.iter().find(|(at, _)| *at == backend).map_or(0, |(_, load)| *load)
    }

    fn add(&mut self, backend: SocketAddr) {
        match self.0.iter_mut().find(|(at, _)| *at == backend) {
            Some((_, load)) => *load += 1,
            None => self.0.push((backend, 1)),
        }
    }

    /// One fewer in flight to `backend`; whether that was its last.
    fn take(&mut self, backend: SocketAddr) -> bool {
        let Some(at) = self.0.iter().position(|(at, _)| *at == backend) else { return false };
        self.0[at].1 -= 1;
        let drained = self.0[at].1 == 0;
        if drained {
            self.0.swap_remove(at);
        }
        drained
    }
}

/// One request's (or tunnel's, or TCP connection's) claim on a backend,
/// counted in its load while it lives.
struct Lease {
    shared: Arc<Shared>,
    backend: SocketAddr,
    /// The backends' [`Routes::generation`] when it was taken.
    generation: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut routes = self.shared.lock();
        let drained = routes.load.take(self.backend);
        let wake = drained && routes.waiting > 0;
        drop(routes);
        if wake {
            self.shared.changed.notify_all();
        }
    }
}

/// An HTTP client connection as the accept loop and its timer see it:
/// whether it has a request in flight, since when it has none, since when
/// the next request's head is arriving, and how to close it.
struct ClientConn {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// When the first byte of a head came while nothing was in flight.
    head_since: Mutex<Option<Instant>>,
    /// Whether a request was served: its next waits `idle_timeout`, a
    /// connection's first only `header_timeout`.
    served: AtomicBool,
    /// When its timer wakes next, if it sleeps.
    wake_at: Mutex<Option<Instant>>,
    limits: ProxyLimits,
    /// Told when the connection's deadline appears or comes earlier, for
    /// its timer.
    changed: tokio::sync::Notify,
    /// Told when the connection is to be closed to make room.
    close: tokio::sync::Notify,
    /// Closed, or being closed.
    ended: AtomicBool,
}

impl ClientConn {
    fn new(limits: ProxyLimits) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            head_since: Mutex::new(None),
            served: AtomicBool::new(false),
            wake_at: Mutex::new(None),
            limits,
            changed: tokio::sync::Notify::new(),
            close: tokio::sync::Notify::new(),
            ended: AtomicBool::new(false),
        }
    }

    /// Counts a request in flight on it until the guard is dropped.
    fn busy(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        *lock(&self.head_since) = None;
        self.served.store(true, Ordering::Relaxed);
        // No wake for the timer: its deadline is gone, not earlier.
        InFlight(Arc::clone(self))
    }

    /// Bytes came from the client: with nothing in flight, a head begins.
    fn read_some(&self) {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return;
        }
        let mut head = lock(&self.head_since);
        if head.is_none() {
            let now = Instant::now();
            *head = Some(now);
            drop(head);
            // Woken before this head's deadline anyway, the timer needs no
            // word of it (a wake is a poll of the whole connection).
            if self.wakes_after(now + self.limits.header_timeout) {
                self.changed.notify_one();
            }
        }
    }

    /// Whether the timer sleeps past `at`.
    fn wakes_after(&self, at: Instant) -> bool {
        lock(&self.wake_at).is_none_or(|wake| wake > at)
    }

    /// How long it may wait for its next request: `idle_timeout`, or for
    /// its first, `header_timeout`.
    fn idle_wait(&self) -> Duration {
        if self.served.load(Ordering::Relaxed) { self.limits.idle_timeout } else { self.limits.header_timeout }
    }

    /// When the connection is to be closed, waiting: for a head, its
    /// first byte plus `header_timeout`; for the next request, its idle
    /// start plus [`ClientConn::idle_wait`]. None while a request is in
    /// flight.
    fn deadline(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        if let Some(since) = *lock(&self.head_since) {
            return Some(since + self.limits.header_timeout);
        }
        Some(*lock(&self.idle_since) + self.idle_wait())
    }

    /// Returns once the connection has waited past its deadline.
    ///
    /// With a request in flight there is no deadline, but the timer still
    /// wakes within the shortest of the two limits, to look again: the
    /// deadline that comes once the request ends, or once a head begins,
    /// is never earlier than that wake, so neither needs to wake it.
    async fn expired(&self) {
        let look_again = self.limits.header_timeout.min(self.limits.idle_timeout);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            let now = Instant::now();
            let at = match self.deadline() {
                Some(at) if at <= now => return,
                Some(at) => at,
                None => now + look_again,
            };
            *lock(&self.wake_at) = Some(at);
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                () = changed => {}
            }
        }
    }
}

/// A request in flight on a client connection (see [`ClientConn::busy`]).
struct InFlight(Arc<ClientConn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            // The idle deadline, now plus `idle_timeout`, is after the
            // timer's wake (see `ClientConn::expired`), unless a test
            // limit makes the idle timeout the shorter.
            let now = Instant::now();
            *lock(&self.0.idle_since) = now;
            if self.0.wakes_after(now + self.0.idle_wait()) {
                self.0.changed.notify_one();
            }
        }
    }
}

/// Of `open`, the connection with nothing in flight for the longest.
fn longest_idle(open: &[Arc<ClientConn>]) -> Option<&Arc<ClientConn>> {
    open.iter()
        .filter(|conn| !conn.ended.load(Ordering::Relaxed) && conn.in_flight.load(Ordering::Relaxed) == 0)
        .min_by_key(|conn| *lock(&conn.idle_since))
}

/// One client connection, counted while it lives.
struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.lock().connections += 1;
        Self(Arc::clone(shared))
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut routes = self.0.lock();
        routes.connections -= 1;
        let wake = routes.waiting > 0;
        drop(routes);
        if wake {
            self.0.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests;

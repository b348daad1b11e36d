//! The runner's TCP proxy: what makes a switch zero-downtime.
//!
//! The runner owns the public port; the `web` processes listen on private
//! ones. Each accepted connection is forwarded, byte for byte, to one of the
//! current backends (round robin). A switch replaces the backend set at once:
//! connections accepted afterwards go to the new processes, while those
//! already open stay on their old backend until they close, so the runner can
//! wait for a backend to drain before stopping its process.
//!
//! Clients are never refused for want of a backend: a connection accepted
//! while there are none (at startup) waits up to [`BACKEND_WAIT`] for a
//! switch, and a backend that refuses is skipped for the next one.
//!
//! It owns sockets and threads only: it does not start, watch or stop
//! processes, and, like the rest of the library, never prints.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a connection accepted while there are no backends waits for one
/// before it is closed.
pub const BACKEND_WAIT: Duration = Duration::from_secs(30);

/// How long connecting to one backend may take before the next is tried: a
/// backend that drops packets must not hold a client for the kernel's minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the accept loop pauses after a failed accept, so that running out
/// of file descriptors does not turn it into a busy loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// The stack of a connection's threads: they only run `io::copy`, whose
/// buffer is 8 KiB, and a busy runner holds two threads per connection.
const CONNECTION_STACK: usize = 128 * 1024;

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
    /// The accepting thread could not be started.
    #[error("could not start the proxy's thread on {addr}")]
    Spawn {
        /// The public address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The TCP proxy from the public port to the current `web` processes.
///
/// Dropping it stops it, like [`Proxy::stop`].
pub struct Proxy {
    inner: Arc<Inner>,
}

/// What the proxy's handle, its accept thread and its connections share.
struct Inner {
    local_addr: SocketAddr,
    state: Mutex<State>,
    /// Signalled on every change of `state`: new backends, a connection
    /// closing, stopping. Waiters re-check their own condition.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The listening socket, until the accept thread takes it over.
    listener: Option<TcpListener>,
    accept: Option<JoinHandle<()>>,
    stopping: bool,
    backends: Vec<SocketAddr>,
    /// Round robin: the next connection starts at `backends[next % len]`.
    next: usize,
    /// Connections open (or being opened) per backend; absent means 0.
    open: HashMap<SocketAddr, usize>,
    /// Every accepted connection not yet closed, waiting ones included.
    connections: usize,
    /// Connections waiting for a backend.
    waiting: usize,
}

impl Proxy {
    /// Binds the public address; nothing is accepted before [`Proxy::start`].
    pub fn bind(addr: SocketAddr) -> Result<Self, ProxyError> {
        let bind_error = |source: io::Error| {
            if source.kind() == io::ErrorKind::AddrInUse {
                ProxyError::AddrInUse { addr }
            } else {
                ProxyError::Bind { addr, source }
            }
        };
        let listener = TcpListener::bind(addr).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let state = State { listener: Some(listener), ..State::default() };
        Ok(Self { inner: Arc::new(Inner { local_addr, state: Mutex::new(state), changed: Condvar::new() }) })
    }

    /// The address actually bound (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Starts accepting on a background thread; returns immediately.
    pub fn start(&self) -> Result<(), ProxyError> {
        let addr = self.inner.local_addr;
        let mut state = self.inner.lock();
        let listener = state.listener.take().ok_or(ProxyError::Started { addr })?;
        let inner = Arc::clone(&self.inner);
        let accept = thread::Builder::new()
            .name("graven-proxy-accept".into())
            .spawn(move || accept_loop(&inner, &listener))
            .map_err(|source| ProxyError::Spawn { addr, source })?;
        state.accept = Some(accept);
        Ok(())
    }

    /// Replaces the backends: every connection accepted after this returns
    /// goes to one of them, round robin; open connections stay where they are.
    pub fn switch(&self, backends: Vec<SocketAddr>) {
        self.inner.lock().backends = backends;
        self.inner.changed.notify_all();
    }

    /// The current backends.
    pub fn backends(&self) -> Vec<SocketAddr> {
        self.inner.lock().backends.clone()
    }

    /// Connections open to `backend`, including one being connected: the
    /// runner stops a switched-out process once this reaches 0.
    pub fn open_connections(&self, backend: SocketAddr) -> usize {
        self.inner.lock().open.get(&backend).copied().unwrap_or(0)
    }

    /// Waits until no connection is open to `backend`, or `timeout` passes;
    /// whether it drained.
    pub fn wait_drained(&self, backend: SocketAddr, timeout: Duration) -> bool {
        self.inner.wait_until(Instant::now().checked_add(timeout), |state| !state.open.contains_key(&backend)).1
    }

    /// Stops accepting and releases the public port; open connections
    /// finish, and connections still waiting for a backend are closed.
    pub fn stop(&self) {
        let accept = {
            let mut state = self.inner.lock();
            state.stopping = true;
            // Never started: dropping the listener is all there is to do.
            state.listener = None;
            state.accept.take()
        };
        self.inner.changed.notify_all();
        let Some(accept) = accept else { return };
        // `accept` blocks, and std offers no way to interrupt it: a
        // connection of our own wakes the thread, which then sees `stopping`.
        // If even that fails, joining could hang, so the thread is left to
        // exit at its next accept rather than block the caller.
        if TcpStream::connect_timeout(&wake_address(self.inner.local_addr), CONNECT_TIMEOUT).is_ok() {
            // A panic in the accept loop has nothing left to clean up.
            let _ = accept.join();
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
            .field("local_addr", &self.inner.local_addr)
            .field("backends", &self.backends())
            .finish_non_exhaustive()
    }
}

/// Where `stop` connects to wake the accept loop: the bound address, with a
/// wildcard IP replaced by loopback, which one cannot connect to everywhere.
fn wake_address(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// Accepts until stopped, one thread per connection. The listener is dropped
/// when this returns, which frees the public port.
fn accept_loop(inner: &Arc<Inner>, listener: &TcpListener) {
    loop {
        let accepted = listener.accept();
        {
            let mut state = inner.lock();
            if state.stopping {
                return;
            }
            // Counted before the thread exists, so that `connections` never
            // misses an accepted client; the guard below moves into the
            // thread, and is dropped with the closure if spawning fails.
            if accepted.is_ok() {
                state.connections += 1;
            }
        }
        match accepted {
            Ok((client, _)) => {
                let guard = Connection(Arc::clone(inner));
                let spawned = thread::Builder::new()
                    .name("graven-proxy-connection".into())
                    .stack_size(CONNECTION_STACK)
                    .spawn(move || guard.0.serve(&client));
                // Out of threads: the client is closed; nothing better exists.
                drop(spawned);
            }
            // Aborted handshakes and exhausted descriptors are transient.
            Err(_) => thread::sleep(ACCEPT_PAUSE),
        }
    }
}

impl Inner {
    /// Locks the state. Every update leaves it consistent (counters and a
    /// list), so a panic elsewhere while holding it does not make it unusable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `done` holds or `deadline` (`None`: never) passes; the
    /// lock, and whether `done` holds.
    fn wait_until(&self, deadline: Option<Instant>, done: impl Fn(&State) -> bool) -> (MutexGuard<'_, State>, bool) {
        let mut state = self.lock();
        loop {
            if done(&state) {
                return (state, true);
            }
            state = match deadline {
                None => self.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        self.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0
                    }
                    _ => return (state, false),
                },
            };
        }
    }

    /// Forwards one client connection until both directions have ended.
    /// The caller closes `client` afterwards, also when no backend was found.
    fn serve(&self, client: &TcpStream) {
        let Some((backend, _reservation)) = self.connect_backend() else { return };
        // Requests and responses are usually written whole; Nagle's delay
        // would only add latency to each hop.
        let _ = client.set_nodelay(true);
        let _ = backend.set_nodelay(true);
        thread::scope(|scope| {
            let upstream = thread::Builder::new()
                .name("graven-proxy-upstream".into())
                .stack_size(CONNECTION_STACK)
                .spawn_scoped(scope, || pipe(client, &backend));
            if upstream.is_err() {
                // Out of threads: better a closed connection than a stalled one.
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            pipe(&backend, client);
        });
    }

    /// Connects to a backend, trying each at most once from the round-robin
    /// position, and waiting for backends while there are none.
    fn connect_backend(&self) -> Option<(TcpStream, Reservation<'_>)> {
        let deadline = Instant::now().checked_add(BACKEND_WAIT);
        let mut start = None;
        let mut tried = Vec::new();
        loop {
            let backend = {
                let mut state = self.wait_for_backends(deadline);
                let len = state.backends.len();
                if len == 0 {
                    return None;
                }
                let start = *start.get_or_insert_with(|| {
                    let start = state.next;
                    state.next = state.next.wrapping_add(1);
                    start
                });
                let backend = (0..len).map(|i| state.backends[(start + i) % len]).find(|b| !tried.contains(b))?;
                // Counted before connecting, under the same lock as the
                // choice: once `switch` returns, a connection still headed
                // for an old backend already shows in `open_connections`, so
                // the runner cannot see it drained and stop it too early.
                *state.open.entry(backend).or_default() += 1;
                backend
            };
            let reservation = Reservation { inner: self, backend };
            match TcpStream::connect_timeout(&backend, CONNECT_TIMEOUT) {
                Ok(stream) => return Some((stream, reservation)),
                // The reservation is dropped here, which uncounts it.
                Err(_) => tried.push(backend),
            }
        }
    }

    /// The state once there are backends, or once `deadline` passes or the
    /// proxy stops (the backends are then still empty).
    fn wait_for_backends(&self, deadline: Option<Instant>) -> MutexGuard<'_, State> {
        {
            let mut state = self.lock();
            if !state.backends.is_empty() || state.stopping {
                return state;
            }
            state.waiting += 1;
        }
        self.changed.notify_all();
        let (mut state, _) = self.wait_until(deadline, |state| !state.backends.is_empty() || state.stopping);
        state.waiting -= 1;
        state
    }
}

/// Copies `from` to `to` until `from` ends, then passes the end on.
///
/// A clean end is a half-close: the other direction keeps flowing, as a
/// client that has sent its whole request still reads the response. An error
/// (a reset) ends both directions, so the other thread does not wait forever.
fn pipe(from: &TcpStream, to: &TcpStream) {
    // `&TcpStream` reads and writes, so the two directions share the sockets.
    let (mut reader, mut writer) = (from, to);
    if io::copy(&mut reader, &mut writer).is_ok() {
        let _ = to.shutdown(Shutdown::Write);
    } else {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

/// One accepted connection, counted in `connections` while it lives.
struct Connection(Arc<Inner>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.lock().connections -= 1;
        self.0.changed.notify_all();
    }
}

/// One connection's claim on a backend, counted in `open` while it lives.
struct Reservation<'a> {
    inner: &'a Inner,
    backend: SocketAddr,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if let Some(open) = state.open.get_mut(&self.backend) {
            *open -= 1;
            if *open == 0 {
                state.open.remove(&self.backend);
            }
        }
        drop(state);
        self.inner.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::{Proxy, ProxyError};

    const PATIENCE: Duration = Duration::from_secs(2);

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A backend answering each line with `tag:line`, ending its side when
    /// the client ends its own. Its threads outlive the test: they only block.
    fn backend(tag: &'static str) -> SocketAddr {
        let listener = TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if (&stream).write_all(format!("{tag}:{line}").as_bytes()).is_err() {
                            return;
                        }
                        line.clear();
                    }
                    let _ = stream.shutdown(Shutdown::Write);
                });
            }
        });
        addr
    }

    /// An address nothing listens on: connecting is refused. Not the port of
    /// a dropped listener, which a test running in parallel may be given
    /// next: port 1 (tcpmux) is privileged, so no test binds it, and no
    /// system serves it.
    fn refused() -> SocketAddr {
        let dead = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(TcpStream::connect(dead).is_err(), "something listens on {dead}");
        dead
    }

    fn started(backends: Vec<SocketAddr>) -> Proxy {
        let proxy = Proxy::bind(localhost()).unwrap();
        proxy.switch(backends);
        proxy.start().unwrap();
        proxy
    }

    /// One request over a fresh connection: a line, then the answer to EOF.
    fn ask(proxy: SocketAddr, line: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(proxy)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        stream.write_all(format!("{line}\n").as_bytes())?;
        stream.shutdown(Shutdown::Write)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// A connection kept open, asked one line at a time.
    struct Held(BufReader<TcpStream>);

    impl Held {
        fn open(proxy: SocketAddr) -> Self {
            let stream = TcpStream::connect(proxy).unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            Self(BufReader::new(stream))
        }

        fn ask(&mut self, line: &str) -> String {
            self.0.get_mut().write_all(format!("{line}\n").as_bytes()).unwrap();
            let mut answer = String::new();
            self.0.read_line(&mut answer).unwrap();
            answer
        }

        fn close(self) {
            self.0.get_ref().shutdown(Shutdown::Both).unwrap();
        }
    }

    fn wait_state(proxy: &Proxy, done: impl Fn(&super::State) -> bool) -> bool {
        proxy.inner.wait_until(Some(Instant::now() + PATIENCE), done).1
    }

    #[test]
    fn forwards_bytes_both_ways_with_half_close() {
        let proxy = started(vec![backend("a")]);
        assert_eq!(ask(proxy.local_addr(), "hello").unwrap(), "a:hello\n");

        // More than the socket buffers hold, written while the answer is
        // read: both directions stream at once.
        let mut stream = TcpStream::connect(proxy.local_addr()).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let lines = 20_000;
        let sent = thread::spawn(move || {
            for i in 0..lines {
                writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
            }
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        sent.join().unwrap();
        let expected = (0..lines).fold(String::new(), |mut expected, i| {
            writeln!(expected, "a:line {i}").unwrap();
            expected
        });
        assert!(answer == expected, "answer of {} bytes, expected {}", answer.len(), expected.len());
    }

    #[test]
    fn round_robin_over_two_backends() {
        let proxy = started(vec![backend("a"), backend("b")]);
        let answers: Vec<String> = (0..4).map(|_| ask(proxy.local_addr(), "x").unwrap()).collect();
        assert_eq!(answers, ["a:x\n", "b:x\n", "a:x\n", "b:x\n"]);
    }

    #[test]
    fn switches_lose_no_connection_and_old_ones_drain() {
        let (a, b) = (backend("a"), backend("b"));
        let proxy = started(vec![a]);
        let addr = proxy.local_addr();
        let mut held = Held::open(addr);
        assert_eq!(held.ask("before"), "a:before\n");

        let (progress, progressed) = mpsc::channel();
        let client = thread::spawn(move || {
            let mut failures = Vec::new();
            let mut served = HashMap::<String, usize>::new();
            for i in 0..200 {
                match ask(addr, &i.to_string()) {
                    Ok(answer) if answer == format!("a:{i}\n") || answer == format!("b:{i}\n") => {
                        *served.entry(answer[..1].to_owned()).or_default() += 1;
                    }
                    other => failures.push(format!("request {i}: {other:?}")),
                }
                progress.send(i).unwrap();
            }
            (failures, served)
        });
        let reach = |n| while progressed.recv_timeout(PATIENCE).unwrap() < n {};

        reach(50);
        proxy.switch(vec![b]);
        assert_eq!(proxy.backends(), [b]);
        // Opened before the switch: still on the old backend, and counted.
        assert_eq!(held.ask("after"), "a:after\n");
        assert!(proxy.open_connections(a) >= 1);
        held.close();
        assert!(proxy.wait_drained(a, PATIENCE));
        assert_eq!(proxy.open_connections(a), 0);

        reach(100);
        proxy.switch(vec![a]);
        reach(150);
        proxy.switch(vec![b]);

        let (failures, served) = client.join().unwrap();
        assert_eq!(failures, Vec::<String>::new());
        assert!(served["a"] > 0 && served["b"] > 0, "{served:?}");
    }

    #[test]
    fn a_client_waits_for_the_first_backend() {
        let proxy = started(Vec::new());
        let addr = proxy.local_addr();
        let client = thread::spawn(move || ask(addr, "early"));
        assert!(wait_state(&proxy, |state| state.waiting == 1));
        proxy.switch(vec![backend("a")]);
        assert_eq!(client.join().unwrap().unwrap(), "a:early\n");
    }

    #[test]
    fn a_refusing_backend_is_skipped() {
        let dead = refused();
        let proxy = started(vec![dead, backend("a")]);
        for _ in 0..3 {
            assert_eq!(ask(proxy.local_addr(), "x").unwrap(), "a:x\n");
        }
        assert_eq!(proxy.open_connections(dead), 0);

        // Only refusing backends: the client is closed, not left hanging.
        proxy.switch(vec![dead]);
        let answer = ask(proxy.local_addr(), "x");
        assert!(answer.as_ref().is_err() || answer.as_ref().is_ok_and(String::is_empty), "{answer:?}");
    }

    #[test]
    fn bind_on_a_port_in_use_names_the_port() {
        let taken = TcpListener::bind(localhost()).unwrap();
        let addr = taken.local_addr().unwrap();
        let error = Proxy::bind(addr).unwrap_err();
        assert!(matches!(error, ProxyError::AddrInUse { addr: a } if a == addr), "{error:?}");
        let message = error.to_string();
        assert!(message.starts_with(&format!("port {} on 127.0.0.1 is already in use", addr.port())), "{message}");
        assert!(message.contains("--port"), "{message}");
    }

    #[test]
    fn stop_frees_the_port_and_lets_open_connections_finish() {
        let proxy = started(vec![backend("a")]);
        let addr = proxy.local_addr();
        let mut held = Held::open(addr);
        assert_eq!(held.ask("one"), "a:one\n");

        proxy.stop();
        assert!(TcpStream::connect(addr).is_err(), "still accepting after stop");
        assert!(matches!(proxy.start(), Err(ProxyError::Started { .. })));
        assert_eq!(held.ask("two"), "a:two\n");
        held.close();
        // Every connection thread has finished its work.
        assert!(wait_state(&proxy, |state| state.connections == 0));
    }

    #[test]
    fn stop_closes_clients_waiting_for_a_backend() {
        let proxy = started(Vec::new());
        let addr = proxy.local_addr();
        let client = thread::spawn(move || ask(addr, "early"));
        assert!(wait_state(&proxy, |state| state.waiting == 1));
        proxy.stop();
        let answer = client.join().unwrap();
        assert!(answer.as_ref().is_err() || answer.as_ref().is_ok_and(String::is_empty), "{answer:?}");
        assert!(wait_state(&proxy, |state| state.connections == 0));
    }
}

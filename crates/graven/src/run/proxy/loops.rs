//! The proxy's event loops: one thread each, each with a single-threaded
//! tokio runtime, one per core (as nginx has a worker per core). A client
//! connection lives on one loop for its whole life, with its backend
//! connections: no task moves between threads, and no thread wakes another
//! to share its work. On a runtime whose threads steal work, a lightly
//! loaded connection's every request woke a second thread; here a loop
//! that has nothing to do sleeps in `epoll_wait` until its own sockets
//! are ready.

use std::future::Future;
use std::io;

use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// The most loops: past this many cores, a proxy in front of one app's web
/// processes is not what a machine is short of.
const MAX_LOOPS: usize = 16;

/// How many loops a proxy runs: as many as this process may use cores, at
/// most [`MAX_LOOPS`].
pub(super) fn count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(MAX_LOOPS)
}

/// The running loops, each on its thread; dropping this ends them all,
/// and with them every task and connection on them.
pub(super) struct Loops {
    handles: Vec<Handle>,
    /// Dropped to end the loops: each waits for it to change or go.
    _end: tokio::sync::watch::Sender<()>,
}

/// Where the accept loop sends each connection it accepts: to every loop
/// in turn.
pub(super) struct Dispatch {
    handles: Vec<Handle>,
    /// Which loop the next connection goes to.
    next: usize,
}

impl Loops {
    /// [`count`] loops.
    pub(super) fn start() -> io::Result<Self> {
        let count = count();
        let (end, ended) = tokio::sync::watch::channel(());
        let mut handles = Vec::with_capacity(count);
        for _ in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
            handles.push(runtime.handle().clone());
            let mut ended = ended.clone();
            // Should a later thread not start, `end` is dropped on the way
            // out, which ends those already started.
            std::thread::Builder::new().name("graven-proxy".into()).spawn(move || {
                runtime.block_on(async move { while ended.changed().await.is_ok() {} });
            })?;
        }
        Ok(Self { handles, _end: end })
    }

    /// The first loop, where the accept loop runs.
    pub(super) fn first(&self) -> &Handle {
        &self.handles[0]
    }

    /// For the accept loop, which runs on the first loop.
    pub(super) fn dispatch(&self) -> Dispatch {
        Dispatch { handles: self.handles.clone(), next: 0 }
    }
}

impl Dispatch {
    /// Serves `stream`, accepted on the first loop, on the next loop in
    /// turn: `serve` is called with it there. A stream that cannot move
    /// is closed, and `serve` dropped uncalled (with what it holds).
    pub(super) fn serve<S, F>(&mut self, stream: TcpStream, serve: S)
    where
        S: FnOnce(TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let turn = self.next;
        self.next = (self.next + 1) % self.handles.len();
        if turn == 0 {
            // Already where it is to be served.
            tokio::spawn(serve(stream));
            return;
        }
        // Registered with the first loop's reactor: it is taken off that
        // one and put on the other's.
        let Ok(stream) = stream.into_std() else { return };
        self.handles[turn].spawn(async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                serve(stream).await;
            }
        });
    }
}

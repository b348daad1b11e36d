//! HTTP load for graven's benchmarks, on loopback only, bounded in time.
//!
//! ```text
//! graven-loadgen keepalive --port P --clients N --interval-ms I --duration S --out FILE
//!     N clients, each on one keep-alive connection (opened again if it
//!     drops), each sending `GET /` every I ms (phases spread over I) for S
//!     seconds. One line per request to FILE: client, sent and answered
//!     (µs since the epoch), status (0: no answer), the body's first line.
//! graven-loadgen slowloris --port P --connections N --duration S
//!     N connections that send a request head one header line every 5 s
//!     and never finish it; a closed one is opened again after 1 s. Prints
//!     how many were open each second, and how many the server closed.
//! graven-loadgen latency --port P --rate R --duration S
//!     R requests a second, each on a fresh connection (Connection:
//!     close); prints the count, the failures and the p50/p99/max latency.
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else { usage() };
    let flag = |name: &str| -> String {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| usage())
    };
    let number = |name: &str| -> u64 { flag(name).parse().unwrap_or_else(|_| usage()) };
    let port = u16::try_from(number("--port")).unwrap_or_else(|_| usage());
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let duration = Duration::from_secs(number("--duration"));
    match mode.as_str() {
        "keepalive" => keepalive(address, number("--clients"), number("--interval-ms"), duration, &flag("--out")),
        "slowloris" => slowloris(address, number("--connections"), duration),
        "latency" => latency(address, number("--rate"), duration),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: graven-loadgen keepalive|slowloris|latency --port P … (see the source's header)");
    std::process::exit(2)
}

fn epoch_micros() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()).unwrap_or(u64::MAX)
}

/// The keep-alive clients, on one event loop per core (tokio, single
/// threaded each): a thread per client would take a third of these 2
/// cores for itself at 1,000 clients, and its scheduling would show in
/// every latency it measures.
fn keepalive(address: SocketAddr, clients: u64, interval_ms: u64, duration: Duration, out: &str) {
    let reconnects = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_millis(interval_ms);
    let start = tokio::time::Instant::now();
    let end = start + duration;
    let loops = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as u64;
    let threads: Vec<_> = (0..loops)
        .map(|index| {
            let reconnects = Arc::clone(&reconnects);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                    .expect("start an event loop");
                runtime.block_on(async move {
                    let mine = (index..clients).step_by(loops as usize).map(|client| {
                        // Spread the clients' phases over one interval.
                        let first = start + interval.mul_f64(client as f64 / clients as f64);
                        tokio::spawn(client_loop(address, client, first, interval, end, Arc::clone(&reconnects)))
                    });
                    let mut lines = Vec::new();
                    for task in mine.collect::<Vec<_>>() {
                        lines.extend(task.await.expect("a client task"));
                    }
                    lines
                })
            })
        })
        .collect();
    let mut lines = Vec::new();
    for thread in threads {
        lines.extend(thread.join().expect("a client thread"));
    }
    std::fs::write(out, lines.join("\n") + "\n").expect("write the results");
    eprintln!(
        "{} requests from {clients} clients, {} connections opened again",
        lines.len(),
        reconnects.load(Ordering::Relaxed)
    );
}

/// One keep-alive client: a request every `interval` from `first` until
/// `end`, on one connection, opened again if it drops; a result line each.
async fn client_loop(
    address: SocketAddr,
    client: u64,
    first: tokio::time::Instant,
    interval: Duration,
    end: tokio::time::Instant,
    reconnects: Arc<AtomicU64>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut connection = None;
    let mut next = first;
    while next < end {
        tokio::time::sleep_until(next).await;
        next += interval;
        let sent = epoch_micros();
        let (status, body) = request(&mut connection, address).await.unwrap_or_else(|_| {
            if connection.take().is_some() {
                reconnects.fetch_add(1, Ordering::Relaxed);
            }
            (0, String::new())
        });
        lines.push(format!("{client}\t{sent}\t{}\t{status}\t{body}", epoch_micros()));
    }
    lines
}

type Connection = tokio::io::BufReader<tokio::net::TcpStream>;

/// `GET /` on `connection`, connecting it first if it is not: the
/// response's status and the first line of its body.
async fn request(connection: &mut Option<Connection>, address: SocketAddr) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    if connection.is_none() {
        let stream = within(Duration::from_secs(5), tokio::net::TcpStream::connect(address)).await?;
        stream.set_nodelay(true)?;
        *connection = Some(tokio::io::BufReader::new(stream));
    }
    let stream = connection.as_mut().expect("connected above");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await?;
    within(Duration::from_secs(10), read_response(stream)).await
}

/// `io`, failed as timed out once `limit` passes.
async fn within<T>(limit: Duration, io: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(limit, io).await.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Reads one response: its status and the first line of its body. Needs
/// `Content-Length` (what the benchmarks' apps send); a response that
/// closes the connection counts as failed.
async fn read_response(stream: &mut Connection) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut length, mut close) = (0, false);
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        close |= header == "connection: close";
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    if close {
        return Err(std::io::Error::other("closed after the response"));
    }
    Ok((status, String::from_utf8_lossy(&body).lines().next().unwrap_or("").to_owned()))
}

fn slowloris(address: SocketAddr, connections: u64, duration: Duration) {
    let start = Instant::now();
    let mut open: Vec<Option<(TcpStream, Instant)>> = (0..connections).map(|_| None).collect();
    let mut closed_by_server = 0u64;
    let mut reopen_at: Vec<Instant> = vec![start; open.len()];
    let mut next_report = start + Duration::from_secs(1);
    while start.elapsed() < duration {
        for (slot, reopen) in open.iter_mut().zip(reopen_at.iter_mut()) {
            match slot {
                None if Instant::now() >= *reopen => {
                    if let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
                        let _ = stream.set_nonblocking(true);
                        if stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").is_ok() {
                            *slot = Some((stream, Instant::now()));
                        }
                    } else {
                        *reopen = Instant::now() + Duration::from_secs(1);
                    }
                }
                Some((stream, last)) => {
                    // A closed connection reads 0 (or fails); one header line every 5 s.
                    let mut byte = [0u8; 1];
                    let gone = matches!(stream.read(&mut byte), Ok(0))
                        || (last.elapsed() >= Duration::from_secs(5) && {
                            *last = Instant::now();
                            stream.write_all(b"X-Slow: 1\r\n").is_err()
                        });
                    if gone {
                        closed_by_server += 1;
                        *slot = None;
                        *reopen = Instant::now() + Duration::from_secs(1);
                    }
                }
                None => {}
            }
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            let held = open.iter().filter(|slot| slot.is_some()).count();
            println!("{:.0}\t{held}\t{closed_by_server}", start.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn latency(address: SocketAddr, rate: u64, duration: Duration) {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut failures = 0u64;
    let mut next = start;
    while start.elapsed() < duration {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += interval;
        let sent = Instant::now();
        let outcome = (|| -> std::io::Result<u16> {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0))
        })();
        match outcome {
            Ok(200) => latencies.push(sent.elapsed()),
            _ => failures += 1,
        }
    }
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "requests {}\tfailed {failures}\tp50_ms {:.2}\tp99_ms {:.2}\tmax_ms {:.2}",
        latencies.len() as u64 + failures,
        at(0.5),
        at(0.99),
        latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    );
}

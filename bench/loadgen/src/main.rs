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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Reads one response: its status and the first line of its body. Needs
/// `Content-Length` (what the benchmarks' apps send).
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    let mut close = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        close |= lower == "connection: close";
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    if close {
        return Err(std::io::Error::other("closed after the response"));
    }
    let body = String::from_utf8_lossy(&body);
    Ok((status, body.lines().next().unwrap_or("").to_owned()))
}

fn keepalive(address: SocketAddr, clients: u64, interval_ms: u64, duration: Duration, out: &str) {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reconnects = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_millis(interval_ms);
    let start = Instant::now();
    let end = start + duration;
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let lines = Arc::clone(&lines);
            let reconnects = Arc::clone(&reconnects);
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut mine = Vec::new();
                    let mut connection: Option<(TcpStream, BufReader<TcpStream>)> = None;
                    // Spread the clients' phases over one interval.
                    let mut next = start + interval.mul_f64(client as f64 / clients as f64);
                    while next < end {
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                        next += interval;
                        let sent = epoch_micros();
                        let outcome = (|| -> std::io::Result<(u16, String)> {
                            if connection.is_none() {
                                let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
                                stream.set_nodelay(true)?;
                                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                                connection = Some((stream.try_clone()?, BufReader::new(stream)));
                            }
                            let (writer, reader) = connection.as_mut().expect("connected above");
                            writer.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
                            read_response(reader)
                        })();
                        let (status, body) = outcome.unwrap_or_else(|_| {
                            if connection.take().is_some() {
                                reconnects.fetch_add(1, Ordering::Relaxed);
                            }
                            (0, String::new())
                        });
                        mine.push(format!("{client}\t{sent}\t{}\t{status}\t{body}", epoch_micros()));
                    }
                    lines.lock().expect("no thread panics holding it").extend(mine);
                })
                .expect("start a client thread")
        })
        .collect();
    for thread in threads {
        thread.join().expect("a client thread");
    }
    let lines = lines.lock().expect("joined");
    std::fs::write(out, lines.join("\n") + "\n").expect("write the results");
    eprintln!(
        "{} requests from {clients} clients, {} connections opened again",
        lines.len(),
        reconnects.load(Ordering::Relaxed)
    );
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

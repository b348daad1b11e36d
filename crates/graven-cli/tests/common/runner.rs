//! A background `graven run` and plain HTTP on loopback, for the tests
//! that run an app end to end.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use graven_testutils::TestRepo;

use super::{Graven, shell_app};

/// How long a test waits for something the runner should do within seconds.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// `GET path` on the port; the response body, or `None` on any failure
/// or a status other than 200.
pub(crate) fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let mut status = head.split(' ');
    (status.next()?.starts_with("HTTP/1.") && status.next() == Some("200")).then(|| body.to_owned())
}

/// Waits until `GET /?format=text` answers something containing `text`.
#[track_caller]
pub(crate) fn wait_for_page(port: u16, text: &str) {
    wait_for(port, "/?format=text", text);
}

/// Waits until `GET path` answers something containing `text`.
#[track_caller]
pub(crate) fn wait_for(port: u16, path: &str, text: &str) {
    let start = Instant::now();
    loop {
        if get(port, path).is_some_and(|body| body.contains(text)) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "{path} never showed '{text}'; last: {:?}", get(port, path));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A background `graven run`; SIGTERMed and reaped when dropped.
pub(crate) struct Runner {
    pub(crate) child: Child,
}

impl Runner {
    pub(crate) fn start(graven: &Graven, port: u16, extra: &[&str]) -> Self {
        let port = port.to_string();
        let mut args = vec!["run", "--env", "production", "--port", &port];
        args.extend_from_slice(extra);
        let child = graven.command(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start graven run");
        Self { child }
    }

    /// [`Runner::start`] with no extra arguments, what the runner says
    /// (its stdout) kept in the returned file.
    pub(crate) fn start_saying(graven: &Graven, port: u16) -> (Self, tempfile::NamedTempFile) {
        let said = tempfile::NamedTempFile::new().expect("a file for what the runner says");
        let child = graven
            .command(["run", "--env", "production", "--port", &port.to_string()])
            .stdout(said.reopen().expect("reopen it"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start graven run");
        (Self { child }, said)
    }

    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < PATIENCE, "graven run did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// The status as JSON, once `check` holds (or the patience runs out).
#[track_caller]
pub(crate) fn wait_for_status(graven: &Graven, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let status = graven.run(["status", "--env", "production", "--json"]).json();
        if check(&status) {
            return status;
        }
        assert!(start.elapsed() < PATIENCE, "the status never got there: {status:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A web server for the tests: the files of `/app`, and `GET /slow?s=N`,
/// answered after N seconds (a request in flight for that long).
pub(crate) const SERVER_PY: &str = r#"import http.server, os, time

class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.partition("s=")[2] or 30))
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"slow\n")
            return
        super().do_GET()

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// A shell app whose web process serves with `SERVER_PY` unless the
/// config says otherwise (`CRASH`, `HANG`; `CRASH_WORKER=N` makes the
/// worker exit after N seconds), built and released to production, with
/// `run_settings` in `[run]`.
pub(crate) fn shell_web(run_settings: &str) -> (TestRepo, Graven) {
    let repo = shell_app(&format!("[run]\n{run_settings}\n"));
    repo.write("server.py", SERVER_PY);
    repo.write(
        "Procfile",
        "web: if [ -n \"$CRASH\" ]; then exit 3; elif [ -n \"$HANG\" ]; then exec sleep 600; else exec python3 server.py; fi\n\
         worker: if [ -n \"$CRASH_WORKER\" ]; then sleep \"$CRASH_WORKER\"; exit 1; else exec sleep 600; fi\n",
    );
    repo.commit("A web process");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    (repo, graven)
}

//! Throwaway S3 buckets for the tests of the S3 store.
//!
//! - [`server`]: the shared test server the README's test command starts
//!   (moto's, `GRAVEN_TEST_S3`); [`fresh_bucket`] makes an empty bucket on
//!   it for one test, and [`Bucket`] reads and changes what is in it, as an
//!   attacker or an accident would.
//! - [`OwnS3`]: a server of one test's own (`GRAVEN_TEST_MOTO`), for what
//!   must not happen to the shared one: credentials checked, a stop.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _};

/// The credentials every test uses; moto takes any unless told otherwise.
pub const ACCESS_KEY: &str = "graven-test";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "graven-test-secret";

/// The shared test server's URL (`http://127.0.0.1:PORT`). `None` outside
/// the README's test command, which starts it: the caller then skips,
/// saying so. Under CI it must be there, and its absence fails the test.
pub fn server() -> Option<String> {
    let url = std::env::var("GRAVEN_TEST_S3").ok().filter(|url| !url.is_empty());
    if url.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the S3 tests: GRAVEN_TEST_S3 is not set");
        eprintln!("GRAVEN_TEST_S3 is not set: skipping the S3 tests (./scripts/test starts a server)");
    }
    url
}

/// The `AWS_*` variables that point graven at `endpoint`.
pub fn env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// Creates an empty bucket on `endpoint`, unique to this call; its name.
pub fn fresh_bucket(endpoint: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("graven-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    create_bucket(endpoint, &name);
    name
}

/// Creates bucket `name` with the one request object_store cannot make
/// (`PUT /name`), unsigned: moto accepts it unless it checks credentials.
pub fn create_bucket(endpoint: &str, name: &str) {
    let host = endpoint.trim_start_matches("http://");
    let answer = raw_request(host, &format!("PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0"))
        .unwrap_or_else(|error| panic!("could not ask the S3 test server at {host}: {error}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "could not create bucket {name}: {answer}");
}

/// Sends `head` (a request line and headers, without the blank line
/// that ends them) to `host` on a connection of its own, closed after
/// the answer, and reads that answer whole (within a minute).
fn raw_request(host: &str, head: &str) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(stream, "{head}\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// A bucket on a test server, read and changed directly.
pub struct Bucket {
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    /// Bucket `name` on `endpoint`.
    pub fn new(endpoint: &str, name: &str) -> Self {
        let store = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(name)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("a test bucket's client");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        Self { store, runtime }
    }

    /// Every key under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let prefix = Path::from(prefix);
        let mut keys: Vec<String> = self
            .runtime
            .block_on(self.store.list(Some(&prefix)).map_ok(|meta| meta.location.to_string()).try_collect())
            .expect("list the bucket");
        keys.sort();
        keys
    }

    /// Object `key`'s bytes.
    pub fn get(&self, key: &str) -> Vec<u8> {
        self.runtime
            .block_on(async { self.store.get(&Path::from(key)).await?.bytes().await })
            .expect("read an object")
            .to_vec()
    }

    /// Writes `key`, replacing what is there: what graven never does.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        self.runtime.block_on(self.store.put(&Path::from(key), bytes.to_vec().into())).expect("write an object");
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) {
        self.runtime.block_on(self.store.delete(&Path::from(key))).expect("delete an object");
    }
}

/// An S3 server of one test's own, stopped when dropped.
pub struct OwnS3 {
    child: Child,
    /// Its URL.
    pub endpoint: String,
}

impl OwnS3 {
    /// Starts moto's server with `env` set (moto reads its settings from
    /// the environment); `None` outside the README's test command.
    pub fn start(env: &[(&str, &str)]) -> Option<Self> {
        let program = std::env::var("GRAVEN_TEST_MOTO").ok().filter(|p| !p.is_empty());
        let Some(program) = program else {
            assert!(std::env::var_os("CI").is_none(), "CI must run the S3 tests: GRAVEN_TEST_MOTO is not set");
            eprintln!("GRAVEN_TEST_MOTO is not set: skipping (./scripts/test installs moto)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "moto's server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        warm_up(port);
        Some(Self { child, endpoint })
    }
}

/// Makes one S3 request of the server on `port` and reads its answer,
/// whatever it is. moto loads its S3 code at its first request: that
/// took 6 s on a loaded machine, which a test that times graven's first
/// request would have counted as graven's.
fn warm_up(port: u16) {
    let host = format!("127.0.0.1:{port}");
    let _ = raw_request(&host, &format!("HEAD /warm-up/object HTTP/1.1\r\nHost: {host}"));
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Throwaway PostgreSQL for the tests of the PostgreSQL ledger.
//!
//! - [`server`]: the shared test server the README's test command starts
//!   (`GRAVEN_TEST_POSTGRES`); [`fresh_database`] makes an empty database
//!   on it for one test.
//! - [`OwnPostgres`]: a cluster of one test's own, for what must not happen
//!   to the shared server (a restart).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The shared test server's URL (`postgres://USER:PASSWORD@HOST:PORT/DB`,
/// a database the tests may create databases from). `None` outside the
/// README's test command, which starts it: the caller then skips, saying
/// so. Under CI it must be there, and its absence fails the test.
pub fn server() -> Option<String> {
    let url = std::env::var("GRAVEN_TEST_POSTGRES").ok().filter(|url| !url.is_empty());
    if url.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the PostgreSQL tests: GRAVEN_TEST_POSTGRES is not set");
        eprintln!("GRAVEN_TEST_POSTGRES is not set: skipping the PostgreSQL tests (./scripts/test starts a server)");
    }
    url
}

/// A fresh, empty database on `server`; its URL, with the server's
/// credentials. Each call in a process gets its own.
pub fn fresh_database(server: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("graven_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    let mut admin = postgres::Client::connect(server, postgres::NoTls).expect("connect to the test PostgreSQL server");
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).expect("drop an old test database");
    admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a test database");
    let (base, _) = server.rsplit_once('/').expect("the URL names a database");
    format!("{base}/{name}")
}

/// `url` without its password, and the password: `postgres://u:p@h/d`
/// becomes `postgres://u@h/d` and `p`.
pub fn without_password(url: &str) -> (String, String) {
    let (user_part, rest) = url.split_once('@').expect("the URL has a user");
    let (user, password) = user_part.rsplit_once(':').expect("the URL has a password");
    (format!("{user}@{rest}"), password.to_owned())
}

/// A PostgreSQL cluster of one test's own, started with Debian's programs
/// as the `postgres` user (the tests run as root), trusting loopback
/// logins; stopped and removed when dropped.
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl OwnPostgres {
    /// Starts one; `None` where PostgreSQL's server programs are not
    /// installed (the README's test command installs them).
    pub fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path().join("bin")).max()?;
        let dir = tempfile::Builder::new().prefix("graven-own-postgres-").tempdir().expect("create a directory");
        let chown = Command::new("chown").arg("postgres").arg(dir.path()).status().expect("run chown");
        assert!(chown.success(), "chown postgres {}", dir.path().display());
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        let own = Self { dir, bin, port };
        let data = own.dir.path().join("data");
        own.as_postgres("initdb", &["-D", data.to_str().expect("UTF-8"), "-U", "postgres", "--auth=trust"]);
        own.pg_ctl("start");
        Some(own)
    }

    /// Runs `pg_ctl ACTION` (`start`, `stop`, `restart`) on the cluster.
    pub fn pg_ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let options = format!(
            "-c fsync=off -c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("UTF-8"),
                "-w",
                "-m",
                "fast",
                "-o",
                &options,
                "-l",
                log.to_str().expect("UTF-8"),
                action,
            ],
        );
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn as_postgres(&self, program: &str, args: &[&str]) {
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("run runuser");
        assert!(status.success(), "{program} {args:?}");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

//! Hostile store and ledger content, as whoever can write a shared store
//! or ledger could plant it: hand-made listings that try to write outside
//! a release tree (absolute names, `..`, a child through a symlink, …) or
//! that break the format (duplicates, order, sizes, digests, modes,
//! non-canonical bytes), named by a build row inserted into the ledger.
//!
//! Each one goes through every reader: `verify BUILD`, `export` in every
//! archive format, `release`, and the run stage (`exec`, which lays out a
//! release tree as the runner does, and one `run`). Each must fail with an
//! error naming the problem, leave a canary directory outside the home
//! empty, store no archive and no release, and leave the ledger verifying.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use graven::Digest;
use graven::ledger::{Append, Ledger as _, SqliteLedger};
use graven::model::{ConfigVersion, Release, ReleaseKind};

use crate::common::{Graven, shell_app};

/// A blob every hostile listing's files point at.
const BLOB: &[u8] = b"planted by whoever can write the store\n";

/// One hostile root listing: its bytes, the name it is stored under (its
/// own digest unless it lies), listings it refers to, and a phrase every
/// error about it must contain.
struct Hostile {
    what: &'static str,
    root: Vec<u8>,
    stored_as: Option<Digest>,
    children: Vec<Vec<u8>>,
    expect: &'static str,
}

fn file(name: &str, size: usize, mode: &str) -> String {
    format!(
        r#"{{"digest":"{}","kind":"file","mode":"{mode}","name":{},"size":{size}}}"#,
        Digest::of(BLOB),
        serde_json::to_string(name).unwrap()
    )
}

fn listing(entries: &[String]) -> Vec<u8> {
    format!(r#"{{"entries":[{}]}}"#, entries.join(",")).into_bytes()
}

fn hostile_listings(canary: &Path) -> Vec<Hostile> {
    let size = BLOB.len();
    let climb = format!("{}{}", "../".repeat(40), canary.strip_prefix("/").unwrap().display());
    let inner = listing(&[file("escaped.txt", size, "0644")]);
    let good = file("good.txt", size, "0644");
    let case = |what, entries: &[String], expect| Hostile {
        what,
        root: listing(entries),
        stored_as: None,
        children: vec![inner.clone()],
        expect,
    };
    let mut cases = vec![
        case("absolute name", &[file(&format!("{}/abs.txt", canary.display()), size, "0644")], "may not contain '/'"),
        case("dot-dot path", &[file(&format!("{climb}/dotdot.txt"), size, "0644")], "may not contain '/'"),
        case(
            "dot-dot directory",
            &[format!(r#"{{"kind":"dir","name":"..","tree":"{}"}}"#, Digest::of(&inner))],
            "may not be '.' or '..'",
        ),
        case("empty name", &[file("", size, "0644")], "may not be empty"),
        case("NUL in a name", &[file("a\0b.txt", size, "0644")], "may not contain a NUL byte"),
        case("slash in a name", &[file("sub/x.txt", size, "0644")], "may not contain '/'"),
        case("duplicate", &[good.clone(), good.clone()], "is listed twice"),
        case("unsorted", &[file("z.txt", size, "0644"), good.clone()], "entries must be sorted by name"),
        case(
            "child through a symlink",
            &[
                format!(r#"{{"kind":"symlink","name":"esc","target":"{}"}}"#, canary.display()),
                file("esc/through-symlink.txt", size, "0644"),
            ],
            "may not contain '/'",
        ),
        case(
            "symlink and directory of one name",
            &[
                format!(r#"{{"kind":"dir","name":"esc","tree":"{}"}}"#, Digest::of(&inner)),
                format!(r#"{{"kind":"symlink","name":"esc","target":"{}"}}"#, canary.display()),
            ],
            "is listed twice",
        ),
        case("wrong size", &[file("short.txt", size - 1, "0644")], "its listing says"),
        case("setuid mode", &[file("setuid", size, "4755")], "expected 0644 or 0755"),
        case("world-writable mode", &[file("open", size, "0777")], "expected 0644 or 0755"),
    ];
    let canonical = listing(std::slice::from_ref(&good));
    cases.push(Hostile {
        what: "wrong digest",
        root: listing(&[file("swapped.txt", size, "0644")]),
        stored_as: Some(Digest::of(&canonical)),
        children: Vec::new(),
        expect: "do not hash to its name",
    });
    cases.push(Hostile {
        what: "non-canonical JSON",
        root: format!(r#"{{ "entries": [{good}] }}"#).into_bytes(),
        stored_as: None,
        children: Vec::new(),
        expect: "not canonical JSON",
    });
    cases
}

/// Writes an object into the store's area as any writer of the store could.
fn plant(store: &Path, area: &str, digest: &Digest, bytes: &[u8]) {
    let hex = digest.hex();
    let dir = store.join(area).join("sha256").join(&hex[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(&hex[2..]);
    if path.exists() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
}

/// An app built and released once (v1), whose home is the repository's.
struct Scene {
    _repo: graven_testutils::TestRepo,
    graven: Graven,
    home: PathBuf,
    canary: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let repo = shell_app("");
        repo.write("Procfile", "web: exec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n");
        repo.commit("A web process");
        let graven = Graven::in_repo(&repo);
        graven.build_json::<&str>([]);
        assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
        let home = repo.path().join(".graven");
        let canary = tempfile::Builder::new().prefix("graven-canary-").tempdir().unwrap();
        Self { _repo: repo, graven, home, canary }
    }

    /// Plants `hostile` with an artifact record and a build row; returns
    /// the artifact id.
    fn plant(&self, hostile: &Hostile) -> Digest {
        let store = self.home.join("store");
        plant(&store, "blobs", &Digest::of(BLOB), BLOB);
        for child in &hostile.children {
            plant(&store, "manifests", &Digest::of(child), child);
        }
        let root = hostile.stored_as.unwrap_or_else(|| Digest::of(&hostile.root));
        plant(&store, "manifests", &root, &hostile.root);
        let record = format!(r#"{{"format":1,"process_types":{{"web":"./serve"}},"root":"{root}","run":{{}}}}"#);
        let id = Digest::of(record.as_bytes());
        plant(&store, "artifacts", &id, record.as_bytes());
        let db = rusqlite::Connection::open(self.home.join("ledger.sqlite")).unwrap();
        db.execute(
            "INSERT INTO builds (app, artifact, commit_id, dirty, recipe, author, host, started_at, finished_at,
                                 files, bytes, new_bytes, duration_ms, build_command_ms, ingest_ms, log)
             VALUES ('shell', ?1, ?2, 0, ?3, 'mallory', 'elsewhere', '2026-01-01T00:00:00Z',
                     '2026-01-01T00:00:00Z', 1, 1, 0, 0, 0, 0, '')",
            rusqlite::params![id.to_string(), "f".repeat(40), Digest::of(b"recipe").to_string()],
        )
        .unwrap();
        id
    }

    /// Appends a release of `artifact` to production as whoever can write
    /// the ledger could: a well-chained row that no check of the release
    /// stage saw.
    fn plant_release(&self, artifact: Digest) -> u64 {
        self.plant_next_release(Some(artifact), None)
    }

    /// Appends to production, as whoever can write the ledger could, a
    /// well-chained release of `artifact` (else the current one) with a new
    /// config version of `vars` (else the current config): rows no check
    /// of the release stage saw.
    fn plant_next_release(&self, artifact: Option<Digest>, vars: Option<&BTreeMap<String, String>>) -> u64 {
        let ledger = SqliteLedger::open(&self.home.join("ledger.sqlite")).unwrap();
        let now = "2026-01-01T00:00:00Z";
        let appended = ledger
            .append("shell", "production", now, &mut |state| {
                let current = state.release.as_ref().expect("v1 exists");
                let config = vars.map(|vars| {
                    let mut config = ConfigVersion {
                        id: Digest::of(b""),
                        app: "shell".to_owned(),
                        env: "production".to_owned(),
                        number: state.next_config_number,
                        parent: state.config.as_ref().map(|c| c.id),
                        vars: vars.clone(),
                        secret: std::collections::BTreeSet::new(),
                        author: "mallory".to_owned(),
                        created_at: now.to_owned(),
                        description: "planted".to_owned(),
                    };
                    config.id = config.computed_id();
                    config
                });
                let mut release = Release {
                    id: Digest::of(b""),
                    app: "shell".to_owned(),
                    env: "production".to_owned(),
                    number: current.number + 1,
                    kind: if artifact.is_some() { ReleaseKind::Deploy } else { ReleaseKind::Config },
                    artifact: artifact.unwrap_or(current.artifact),
                    config: config.as_ref().map_or(current.config, |c| c.id),
                    parent: Some(current.id),
                    commit: "f".repeat(40),
                    author: "mallory".to_owned(),
                    host: Some("elsewhere".to_owned()),
                    created_at: now.to_owned(),
                    description: "planted".to_owned(),
                    rollback_of: None,
                    promoted_from: None,
                };
                release.id = release.computed_id();
                Ok(Append { config: config.clone(), release: Some(release) })
            })
            .unwrap();
        appended.release.unwrap().number
    }

    /// A runner of production on a free port; stopped if the test fails.
    fn start_runner(&self) -> crate::common::runner::Runner {
        crate::common::runner::Runner::start(&self.graven, crate::common::runner::free_port(), &[])
    }

    /// SIGTERM, and the runner must exit 0.
    fn stop_runner(runner: &mut crate::common::runner::Runner) {
        assert!(runner.terminate().success());
    }

    /// The status as JSON once `check` holds.
    #[track_caller]
    fn wait_for_status(&self, check: &dyn Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            let now = self.graven.run(["status", "--env", "production", "--json"]).json();
            if check(&now) {
                return now;
            }
            assert!(start.elapsed() < std::time::Duration::from_secs(30), "never got there: {now:#}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    #[track_caller]
    fn assert_canary_empty(&self, what: &str, step: &str) {
        let left: Vec<_> = std::fs::read_dir(self.canary.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "{what}: {step} wrote outside the home: {left:?}");
    }

    #[track_caller]
    fn assert_refused(&self, hostile: &Hostile, step: &str, args: &[&str]) {
        let run = self.graven.run(args);
        assert_eq!(run.code, 1, "{}: {step} was not refused:\n{run}", hostile.what);
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(said.contains(hostile.expect), "{}: {step} does not say {:?}:\n{run}", hostile.what, hostile.expect);
        assert!(!said.contains("panicked"), "{}: {step} panicked:\n{run}", hostile.what);
        self.assert_canary_empty(hostile.what, step);
    }
}

#[test]
fn hostile_listings_are_refused_by_every_reader_and_write_nothing_outside() {
    let scene = Scene::new();
    let out = tempfile::tempdir().unwrap();
    for hostile in hostile_listings(scene.canary.path()) {
        let id = scene.plant(&hostile);
        let id_text = id.to_string();
        scene.assert_refused(&hostile, "verify", &["verify", &id_text]);
        for format in ["tar", "tar.gz", "tar.zst"] {
            let path = out.path().join(format!("hostile.{format}"));
            let path_text = path.to_str().unwrap();
            scene.assert_refused(&hostile, format, &["export", &id_text, "--format", format, "-o", path_text]);
            assert!(!path.exists(), "{}: a {format} archive was written", hostile.what);
        }
        scene.assert_refused(&hostile, "release", &["release", &id_text, "--env", "production"]);
        let number = scene.plant_release(id);
        let version = format!("v{number}");
        scene.assert_refused(&hostile, "exec", &["exec", "--env", "production", "--release", &version, "--", "true"]);
        assert!(
            !scene.home.join("releases/shell/production").join(&version).exists(),
            "{}: a release tree was left",
            hostile.what
        );
        let ledger = scene.graven.run(["verify", "--ledger"]);
        assert_eq!(ledger.code, 0, "{}: the ledger no longer verifies:\n{ledger}", hostile.what);
    }
    let releases = scene.graven.run(["releases", "--env", "production", "--json"]).json();
    let planted = releases.as_array().unwrap().iter().filter(|r| r["author"] == "mallory").count();
    let all = releases.as_array().unwrap().len();
    assert_eq!(all, planted + 1, "graven release made no release of a hostile artifact");
}

#[test]
fn a_runner_refuses_a_hostile_release_and_keeps_the_good_one_serving() {
    let scene = Scene::new();
    let mut runner = scene.start_runner();
    scene.wait_for_status(&|s| s["in_sync"] == true);
    for hostile in hostile_listings(scene.canary.path()).into_iter().filter(|h| h.what.contains("dot-dot")) {
        let number = scene.plant_release(scene.plant(&hostile));
        let now = scene.wait_for_status(&|s| s["last_failure"]["number"] == number);
        let reason = now["last_failure"]["reason"].as_str().unwrap();
        assert!(reason.contains(hostile.expect), "{}: {reason}", hostile.what);
        assert_eq!(now["running"]["version"], "v1", "{}: v1 keeps running", hostile.what);
        scene.assert_canary_empty(hostile.what, "run");
    }
    Scene::stop_runner(&mut runner);
}

#[test]
fn verify_ledger_finds_a_release_of_no_build_and_a_current_artifact_gone_from_the_store() {
    let scene = Scene::new();
    assert_eq!(scene.graven.run(["verify", "--ledger"]).code, 0);
    // A well-chained release of an artifact no build produced.
    let number = scene.plant_release(Digest::of(b"never built"));
    let run = scene.graven.run(["verify", "--ledger"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains(&format!("production v{number} names artifact")), "{run}");
    assert!(run.stdout.contains("which no build in the ledger produced"), "{run}");
    assert!(run.stdout.contains("is not in the store"), "the current release's artifact is not stored: {run}");

    let json = scene.graven.run(["verify", "--ledger", "--json"]).json();
    let kinds: Vec<&str> =
        json["problems"].as_array().unwrap().iter().map(|p| p["problem"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["build_missing", "artifact_missing"]);
}

#[test]
fn a_start_the_kernel_refuses_says_which_process_and_why_in_status_releases_and_the_log() {
    let scene = Scene::new();
    let mut runner = scene.start_runner();
    scene.wait_for_status(&|s| s["in_sync"] == true);
    // One string of 200 KiB: over the kernel's 128 KiB for any one string.
    let number = scene.plant_next_release(None, Some(&[("HUGE".to_owned(), "x".repeat(200 * 1024))].into()));
    let status = scene.wait_for_status(&|s| s["last_failure"]["number"] == number);
    let reason = status["last_failure"]["reason"].as_str().unwrap();
    assert!(reason.contains("could not start web.1") && reason.contains("E2BIG"), "{reason}");
    assert_eq!(status["running"]["version"], "v1");

    let releases = scene.graven.run(["releases", "--env", "production"]);
    assert!(releases.stdout.contains(&format!("! v{number}'s rollout failed on ")), "{releases}");
    assert!(releases.stdout.contains("E2BIG"), "{releases}");
    let json = scene.graven.run(["releases", "--env", "production", "--json"]).json();
    assert!(json[0]["rollout_failures"][0]["reason"].as_str().unwrap().contains("E2BIG"), "{json:#}");
    let version = format!("v{number}");
    let show = scene.graven.run(["release", "show", &version, "--env", "production"]);
    assert!(
        show.stdout.lines().any(|l| l.starts_with("rollout") && l.contains("failed on ") && l.contains("E2BIG")),
        "{show}"
    );
    let json = scene.graven.run(["release", "show", &version, "--env", "production", "--json"]).json();
    assert!(json["rollout_failures"][0]["reason"].as_str().unwrap().contains("E2BIG"), "{json:#}");

    let logs = scene.graven.run(["logs", "--env", "production"]);
    assert!(logs.stdout.contains(&format!("rollout of v{number} failed: could not start web.1")), "{logs}");

    let exec = scene.graven.run(["exec", "--env", "production", "--", "true"]);
    assert_eq!(exec.code, 1, "{exec}");
    assert!(exec.stderr.contains("E2BIG") && !exec.stderr.contains("PATH"), "{exec}");

    Scene::stop_runner(&mut runner);
}

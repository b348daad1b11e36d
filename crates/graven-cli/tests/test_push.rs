//! `graven push`: a build's image into a real registry on loopback
//! (Debian's docker-registry, the CNCF distribution server), only the
//! blobs it lacks, recorded in the ledger; skopeo reads back what graven
//! recorded. And every way a push can fail.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use graven_testutils::TestRepo;

use crate::common::Graven;
use crate::test_image::{busybox_app, tool};

/// A registry of the test's own, on a free loopback port, stopped and
/// removed when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one; with `user` (name, password), only that user may push.
    /// `None` (the test skips) outside CI when docker-registry is missing.
    fn start(user: Option<(&str, &str)>, read_only: bool) -> Option<Self> {
        let program = tool("docker-registry")?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            dir.path().join("data").display()
        );
        if read_only {
            config.push_str("  maintenance:\n    readonly:\n      enabled: true\n");
        }
        let _ = writeln!(config, "http:\n  addr: 127.0.0.1:{port}");
        if let Some((name, password)) = user {
            // The registry reads bcrypt hashes only: made by Python's crypt.
            let hashed = Command::new("python3")
                .args([
                    "-W",
                    "ignore",
                    "-c",
                    "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                    password,
                ])
                .output()
                .unwrap();
            assert!(hashed.status.success(), "{}", String::from_utf8_lossy(&hashed.stderr));
            let line = format!("{name}:{}", String::from_utf8_lossy(&hashed.stdout).trim());
            std::fs::write(dir.path().join("htpasswd"), line).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            let _ = writeln!(config, "auth:\n  htpasswd:\n    realm: graven-test\n    path: {}", htpasswd.display());
        }
        let path = dir.path().join("config.yml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(program)
            .arg("serve")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Self { child, port, _dir: dir };
        registry.wait_until_up();
        Some(registry)
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                if stream.read_to_string(&mut answer).is_ok() && answer.starts_with("HTTP/1.") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the registry did not answer on port {}", self.port);
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn commit(repo: &TestRepo) -> String {
    repo.git(&["rev-parse", "HEAD"]).trim().to_owned()
}

/// What `graven builds show HEAD --json` says was pushed.
fn pushes(graven: &Graven) -> Vec<serde_json::Value> {
    let show = graven.run(["builds", "show", "HEAD", "--json"]);
    assert_eq!(show.code, 0, "{show}");
    show.json()["pushes"].as_array().unwrap().clone()
}

/// skopeo's view of `reference` (`docker://…`), over plain HTTP.
fn inspect(skopeo: &Path, reference: &str, creds: Option<&str>) -> serde_json::Value {
    let mut command = Command::new(skopeo);
    command.args(["inspect", "--tls-verify=false"]);
    if let Some(creds) = creds {
        command.args(["--creds", creds]);
    }
    let output = command.arg(reference).output().unwrap();
    assert!(output.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_push_sends_what_the_registry_lacks_and_is_recorded() {
    let Some(skopeo) = tool("skopeo") else { return };
    let Some(registry) = Registry::start(None, false) else { return };
    // busybox, the bulk of it, in a layer of its own.
    let repo = busybox_app("[image]\nlayers = [\"bin\"]\n");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let destination = format!("{}/team/boxed", registry.address());

    let run = graven.run(["push", "HEAD", &destination, "--tag", "production", "--json"]);
    assert_eq!(run.code, 0, "{run}");
    let first = run.json();
    let head = commit(&repo);
    assert_eq!(first["tags"], serde_json::json!([head, "production"]));
    assert_eq!(first["sent"]["blobs"], 3, "two layers and the config: {first}");
    assert_eq!(first["skipped"]["blobs"], 0);
    let digest = first["digest"].as_str().unwrap().to_owned();
    assert_eq!(first["image"].as_str(), Some(format!("{destination}@{digest}").as_str()));

    // The registry has what graven recorded, under both tags, and it is the
    // image graven exports.
    for tag in [head.as_str(), "production"] {
        let seen = inspect(&skopeo, &format!("docker://{destination}:{tag}"), None);
        assert_eq!(seen["Digest"].as_str(), Some(digest.as_str()), "{tag}");
    }
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let exported = graven.run(["export", "HEAD", "--format", "oci", "-o", layout.to_str().unwrap(), "--json"]).json();
    assert_eq!(exported["image"].as_str(), Some(digest.as_str()));
    let recorded = pushes(&graven);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["image"], first["image"]);

    // Again: nothing to send but the manifest.
    let again = graven.run(["push", "HEAD", &destination, "--json"]);
    assert_eq!(again.code, 0, "{again}");
    let again = again.json();
    assert_eq!((again["sent"]["blobs"].as_u64(), again["skipped"]["blobs"].as_u64()), (Some(0), Some(3)), "{again}");
    assert_eq!(again["digest"].as_str(), Some(digest.as_str()));
    assert_eq!(pushes(&graven).len(), 2, "each push is recorded");

    // A change outside bin: only the last layer and the config go.
    repo.write("web", "#!/app/bin/busybox sh\necho changed\n");
    repo.commit("A change outside deps");
    graven.build_json::<&str>([]);
    let changed = graven.run(["push", "HEAD", &destination, "--json"]).json();
    assert_eq!((changed["sent"]["blobs"].as_u64(), changed["skipped"]["blobs"].as_u64()), (Some(2), Some(1)));
    assert!(
        changed["sent"]["bytes"].as_u64().unwrap() * 2 < first["sent"]["bytes"].as_u64().unwrap(),
        "the bin layer is not sent again: {changed} after {first}"
    );
}

#[test]
fn a_registry_that_asks_for_credentials_gets_them_or_the_push_fails() {
    let Some(skopeo) = tool("skopeo") else { return };
    let Some(registry) = Registry::start(Some(("pusher", "s3cret")), false) else { return };
    let repo = busybox_app("");
    let graven = Graven::in_repo(&repo).label(&registry.address(), "[REGISTRY]");
    graven.build_json::<&str>([]);
    let destination = format!("{}/boxed", registry.address());

    let refused = graven.run(["push", "HEAD", &destination]);
    insta::assert_snapshot!(refused, @r"
    exit code: 1
    ----- stdout -----
    ----- stderr -----
    error: the registry [REGISTRY] refused access to [REGISTRY]/boxed: it needs credentials graven does not have or that it does not accept
    hint: give --creds USER:PASSWORD, or log in first (docker login [REGISTRY], podman login [REGISTRY])
    ");
    let wrong = graven.run(["push", "HEAD", &destination, "--creds", "pusher:wrong"]);
    assert_eq!(wrong.code, 1, "{wrong}");
    assert!(wrong.stderr.contains("refused access"), "{wrong}");
    assert!(pushes(&graven).is_empty(), "a failed push is not recorded");

    // From an auth file, as `podman login` writes it.
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    // base64("pusher:s3cret")
    std::fs::write(&auth, format!(r#"{{"auths": {{"{}": {{"auth": "cHVzaGVyOnMzY3JldA=="}}}}}}"#, registry.address()))
        .unwrap();
    let from_file = graven.env("REGISTRY_AUTH_FILE", &auth).run(["push", "HEAD", &destination, "--json"]);
    assert_eq!(from_file.code, 0, "{from_file}");
    let digest = from_file.json()["digest"].as_str().unwrap().to_owned();
    let seen = inspect(&skopeo, &format!("docker://{destination}:{}", commit(&repo)), Some("pusher:s3cret"));
    assert_eq!(seen["Digest"].as_str(), Some(digest.as_str()));
}

#[test]
fn a_credential_helper_the_docker_config_names_is_asked_for_the_registry() {
    let Some(registry) = Registry::start(Some(("pusher", "s3cret")), false) else { return };
    let repo = busybox_app("");
    Graven::in_repo(&repo).build_json::<&str>([]);
    let destination = format!("{}/boxed", registry.address());
    // A helper as docker's are: the registry on stdin, credentials as JSON
    // on stdout, or "credentials not found" and exit 1. It notes what it
    // was asked.
    let bin = tempfile::tempdir().unwrap();
    let asked = bin.path().join("asked");
    std::fs::write(
        bin.path().join("docker-credential-graven-test"),
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\necho \"$server\" >> {asked}\n\
             if [ \"$server\" = {registry} ]; then echo '{{\"ServerURL\":\"'$server'\",\"Username\":\"pusher\",\"Secret\":\"s3cret\"}}'; \
             else echo 'credentials not found in native keychain'; exit 1; fi\n",
            asked = asked.display(),
            registry = registry.address(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.path().join("docker-credential-graven-test"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap());
    let config = tempfile::tempdir().unwrap();
    let with_config = |json: &str| {
        std::fs::write(config.path().join("config.json"), json).unwrap();
        Graven::in_repo(&repo).env("DOCKER_CONFIG", config.path()).env("PATH", &path)
    };

    // credHelpers, for this registry.
    let helped = with_config(&format!(r#"{{"credHelpers": {{"{}": "graven-test"}}}}"#, registry.address())).run([
        "push",
        "HEAD",
        &destination,
        "--json",
    ]);
    assert_eq!(helped.code, 0, "{helped}");
    assert!(!helped.stdout.contains("s3cret") && !helped.stderr.contains("s3cret"), "{helped}");
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), format!("{}\n", registry.address()));

    // credsStore, for every registry; one it has nothing for falls back
    // to the file's own entry.
    let stored = with_config(r#"{"credsStore": "graven-test"}"#).run(["push", "HEAD", &destination]);
    assert_eq!(stored.code, 0, "{stored}");
    let other = Registry::start(Some(("other", "pa55")), false).unwrap();
    let fallback = with_config(&format!(
        r#"{{"credsStore": "graven-test", "auths": {{"{}": {{"auth": "b3RoZXI6cGE1NQ=="}}}}}}"#,
        other.address()
    ))
    .run(["push", "HEAD", &format!("{}/boxed", other.address())]);
    assert_eq!(fallback.code, 0, "{fallback}");
    assert!(std::fs::read_to_string(&asked).unwrap().ends_with(&format!("{}\n", other.address())));

    // A helper that is not installed: named, with nothing pushed.
    let missing = with_config(r#"{"credsStore": "nowhere"}"#).run(["push", "HEAD", &destination]);
    assert_eq!(missing.code, 2, "{missing}");
    assert!(
        missing.stderr.contains("it names the credential helper nowhere, and docker-credential-nowhere is not on PATH"),
        "{missing}"
    );
}

#[test]
fn the_creds_flag_is_used_and_never_shown() {
    let Some(registry) = Registry::start(Some(("pusher", "s3cret")), false) else { return };
    let repo = busybox_app("");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let destination = format!("{}/boxed", registry.address());
    let run = graven.run(["push", "HEAD", &destination, "--creds", "pusher:s3cret"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(!run.stdout.contains("s3cret") && !run.stderr.contains("s3cret"), "{run}");
    let recorded = pushes(&graven);
    assert_eq!(recorded.len(), 1);
    assert!(!recorded[0].to_string().contains("s3cret"));
}

#[test]
fn an_unreachable_or_refusing_registry_fails_the_push_and_records_nothing() {
    let repo = busybox_app("");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let port = free_port();
    let nowhere = format!("127.0.0.1:{port}");
    let unreachable = graven.run(["push", "HEAD", &format!("{nowhere}/boxed")]);
    assert_eq!(unreachable.code, 1, "{unreachable}");
    assert!(
        unreachable.stderr.starts_with(&format!("error: could not reach the registry {nowhere}\n")),
        "{unreachable}"
    );
    assert!(unreachable.stderr.contains(&format!("hint: check that a registry listens at {nowhere}")), "{unreachable}");
    assert!(pushes(&graven).is_empty());

    let Some(registry) = Registry::start(None, true) else { return };
    let refused = graven.run(["push", "HEAD", &format!("{}/boxed", registry.address())]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains(&format!("the registry {} refused the push", registry.address())), "{refused}");
    assert!(pushes(&graven).is_empty());
}

#[test]
fn bad_push_requests_are_refused_before_anything_is_sent() {
    let repo = busybox_app("");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    insta::assert_snapshot!(graven.run(["push", "HEAD", "boxed"]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: 'boxed' is not a destination: it names no repository: write REGISTRY/REPOSITORY, like registry.example.com/shop
    ");
    insta::assert_snapshot!(graven.run(["push", "HEAD", "team/boxed"]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: 'team/boxed' is not a destination: it names no registry: the part before the first '/' must be a host (registry.example.com, 127.0.0.1:5000)
    ");
    insta::assert_snapshot!(graven.run(["push", "HEAD", "registry.example.com/boxed:v1"]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: 'registry.example.com/boxed:v1' is not a destination: it has a tag or digest: graven tags the image with its commit; add more with --tag
    ");
    insta::assert_snapshot!(graven.run(["push", "HEAD", "registry.example.com/boxed", "--tag", ".x"]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: --tag '.x' is not a tag
    hint: a tag is up to 128 of letters, digits, '_', '.' and '-', not starting with '.' or '-'
    ");
    let unknown = graven.run(["push", "0123456789abc", "registry.example.com/boxed"]);
    assert_eq!(unknown.code, 2, "{unknown}");
    assert!(pushes(&graven).is_empty());
}

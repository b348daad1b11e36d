//! `graven export --format oci|oci-archive|docker-archive`: images that
//! skopeo, umoci and podman accept, the same on any machine, with the
//! artifact at /app, layers that are cached and split by `[image] layers`,
//! a base image's layers below, and no config in them.

use std::path::{Path, PathBuf};
use std::process::Command;

use graven_testutils::TestRepo;

use crate::common::Graven;

/// `tool`'s path, if it is on PATH. Outside CI a missing one skips the
/// test, saying so; under CI (where the README's test command installs
/// it) it fails the test.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the image tests: {name} is not on PATH");
        eprintln!("{name} is not on PATH: skipping (./scripts/test installs it)");
    }
    found
}

/// A temporary directory whose path is lowercase: podman names an image
/// run from a layout by the layout's path, and a name must be lowercase.
fn lowercase_tempdir() -> tempfile::TempDir {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    tempfile::Builder::new()
        .prefix(&format!("graven-image-{}-{n}", std::process::id()))
        .rand_bytes(0)
        .tempdir()
        .expect("create a temporary directory")
}

/// Runs `program` with `args`; panics unless it succeeds; returns stdout.
fn run(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().expect("run a tool");
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An app whose artifact runs without a base image: a static busybox and
/// a script it runs, which prints its config.
pub(crate) fn busybox_app(graven_toml: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.write_executable("bin/busybox", std::fs::read("/bin/busybox").expect("busybox-static is installed"));
    repo.write_executable("web", "#!/app/bin/busybox sh\necho \"GREETING=$GREETING in $(/app/bin/busybox pwd)\"\n");
    repo.write("Procfile", "web: ./web\n");
    repo.write(".gitignore", "/.graven/\n");
    repo.write("graven.toml", format!("[app]\nname = \"boxed\"\n\n{graven_toml}"));
    repo.commit("A busybox app");
    repo
}

/// `graven export HEAD --format FORMAT -o OUT --json`, which must succeed.
fn export(graven: &Graven, format: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let out = out.to_str().unwrap();
    let mut args = vec!["export", "HEAD", "--format", format, "-o", out, "--json"];
    args.extend_from_slice(extra);
    let run = graven.run(&args);
    assert_eq!(run.code, 0, "{run}");
    run.json()
}

fn commit(repo: &TestRepo) -> String {
    repo.git(&["rev-parse", "HEAD"]).trim().to_owned()
}

#[test]
fn an_image_is_the_same_on_every_machine_and_skopeo_and_umoci_read_it() {
    let (Some(skopeo), Some(umoci)) = (tool("skopeo"), tool("umoci")) else { return };
    let out = lowercase_tempdir();
    let repo = busybox_app("");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let first = export(&graven, "oci", &out.path().join("one"), &[]);
    assert_eq!(first["layers"][0]["reused"], false);
    assert_eq!(first["tag"].as_str(), Some(commit(&repo).as_str()));

    // Another run: the layer is reused, the image the same.
    let second = export(&graven, "oci", &out.path().join("two"), &[]);
    assert_eq!(second["layers"][0]["reused"], true);
    assert_eq!(second["image"], first["image"]);

    // Another machine: the same commits in a repository elsewhere, another
    // home, nothing cached.
    let elsewhere = busybox_app("");
    assert_eq!(commit(&elsewhere), commit(&repo));
    let other = Graven::in_repo(&elsewhere);
    other.build_json::<&str>([]);
    let third = export(&other, "oci", &out.path().join("three"), &[]);
    assert_eq!(third["layers"][0]["reused"], false);
    assert_eq!(third["image"], first["image"], "the same artifact gives the same image anywhere");

    let reference = format!("oci:{}:{}", out.path().join("one").display(), commit(&repo));
    let inspected: serde_json::Value = serde_json::from_str(&run(&skopeo, &["inspect", &reference])).unwrap();
    assert_eq!(inspected["Digest"], first["image"]);
    assert_eq!(inspected["Labels"]["org.opencontainers.image.revision"].as_str(), Some(commit(&repo).as_str()));
    assert_eq!(inspected["Labels"]["dev.graven.artifact"], first["artifact"]);
    let config: serde_json::Value = serde_json::from_str(&run(&skopeo, &["inspect", "--config", &reference])).unwrap();
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["./web"]));
    // The commit's time, not the export's.
    assert_eq!(config["created"], "2026-01-01T00:00:00Z", "{config}");

    let bundle = out.path().join("bundle");
    let image = format!("{}:{}", out.path().join("one").display(), commit(&repo));
    run(&umoci, &["unpack", "--rootless", "--image", &image, bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    let top: Vec<String> =
        std::fs::read_dir(&rootfs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(top, ["app"], "without a base the image has only the artifact");
    assert!(rootfs.join("app/web").is_file());
    assert!(rootfs.join("app/bin/busybox").is_file());
}

#[test]
fn gc_caches_empties_the_layer_cache_but_not_while_an_export_or_push_holds_it() {
    let out = tempfile::tempdir().unwrap();
    let repo = busybox_app("");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let first = export(&graven, "oci", &out.path().join("one"), &[]);
    assert_eq!(first["layers"][0]["reused"], false);
    let cache = repo.path().join(".graven/cache/.image-layers");

    // Kept by a plain gc.
    assert_eq!(graven.run(["gc"]).code, 0);
    assert_eq!(export(&graven, "oci", &out.path().join("two"), &[])["layers"][0]["reused"], true);

    // Held by an export or a push in progress: left alone.
    let hold = std::fs::File::open(cache.join(".lock")).unwrap();
    rustix::fs::flock(&hold, rustix::fs::FlockOperation::LockShared).unwrap();
    let held = graven.run(["gc", "--caches"]);
    assert_eq!(held.code, 0, "{held}");
    assert!(held.stderr.contains("left the image layer cache: an export or a push is using it"), "{held}");
    drop(hold);
    assert_eq!(export(&graven, "oci", &out.path().join("three"), &[])["layers"][0]["reused"], true);

    let dry = graven.run(["gc", "--caches", "--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "{dry}");
    let layers = &dry.json()["image_layers"];
    assert_eq!(layers["in_use"], false, "{dry}");
    assert!(layers["bytes"].as_u64().unwrap() > 0, "{dry}");
    let gc = graven.run(["gc", "--caches"]);
    assert_eq!(gc.code, 0, "{gc}");
    assert!(gc.stdout.contains("deleted the image layer cache: "), "{gc}");
    let left: Vec<String> =
        std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, [".lock"]);

    // The next export makes its layer again, and the same image.
    let again = export(&graven, "oci", &out.path().join("four"), &[]);
    assert_eq!(again["layers"][0]["reused"], false);
    assert_eq!(again["image"], first["image"]);
}

#[test]
fn archives_are_byte_identical_and_podman_loads_and_runs_them() {
    let Some(podman) = tool("podman") else { return };
    let out = lowercase_tempdir();
    let repo = busybox_app("");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let layout = out.path().join("layout");
    export(&graven, "oci", &layout, &[]);
    let oci = export(&graven, "oci-archive", &out.path().join("app.oci.tar"), &[]);
    export(&graven, "oci-archive", &out.path().join("again.oci.tar"), &[]);
    assert_eq!(
        std::fs::read(out.path().join("app.oci.tar")).unwrap(),
        std::fs::read(out.path().join("again.oci.tar")).unwrap(),
        "the same image is the same archive"
    );
    let docker = export(&graven, "docker-archive", &out.path().join("app.docker.tar"), &[]);
    assert_eq!(oci["image"], docker["image"]);

    let podman = Podman::new(&podman, out.path());
    let head = commit(&repo);
    // From the layout, config given as podman gives it.
    let said = podman.run(&["run", "--rm", "-e", "GREETING=hello", &format!("oci:{}:{head}", layout.display())]);
    assert_eq!(said.trim(), "GREETING=hello in /app");
    // The artifact is read-only there too, and the image needs no writes.
    let said =
        podman.run(&["run", "--rm", "--read-only", "-e", "GREETING=ro", &format!("oci:{}:{head}", layout.display())]);
    assert_eq!(said.trim(), "GREETING=ro in /app");
    let said = podman.run(&[
        "run",
        "--rm",
        "--read-only",
        "--entrypoint",
        "/app/bin/busybox",
        &format!("oci:{}:{head}", layout.display()),
        "sh",
        "-c",
        "touch /app/x 2>&1 || echo refused",
    ]);
    assert!(said.contains("refused"), "{said}");

    // docker load's format, named APP:COMMIT.
    let loaded = podman.run(&["load", "-i", out.path().join("app.docker.tar").to_str().unwrap()]);
    assert!(loaded.contains(&format!("localhost/boxed:{head}")), "{loaded}");
    let said = podman.run(&["run", "--rm", "-e", "GREETING=loaded", &format!("localhost/boxed:{head}")]);
    assert_eq!(said.trim(), "GREETING=loaded in /app");
    let loaded = podman.run(&["load", "-i", out.path().join("app.oci.tar").to_str().unwrap()]);
    assert!(loaded.contains("Loaded image"), "{loaded}");
}

/// podman with storage of the test's own, run with runc and the limits
/// this machine allows (a `containers.conf` of the test's own).
struct Podman {
    program: PathBuf,
    root: PathBuf,
    conf: PathBuf,
}

impl Podman {
    fn new(program: &Path, dir: &Path) -> Self {
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\n[engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        Self { program: program.to_owned(), root: dir.join("podman"), conf }
    }

    fn run(&self, args: &[&str]) -> String {
        let root = self.root.join("root");
        let runroot = self.root.join("runroot");
        let output = Command::new(&self.program)
            .args(["--root", root.to_str().unwrap(), "--runroot", runroot.to_str().unwrap()])
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .expect("run podman");
        assert!(
            output.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // vfs storage is plain directories; nothing stays mounted.
        let _ = Command::new(&self.program)
            .args(["--root", self.root.join("root").to_str().unwrap()])
            .args(["--runroot", self.root.join("runroot").to_str().unwrap()])
            .args(["--storage-driver", "vfs", "system", "reset", "--force"])
            .env("CONTAINERS_CONF", &self.conf)
            .output();
    }
}

#[test]
fn a_layer_of_its_own_is_left_alone_by_a_change_outside_it() {
    let out = lowercase_tempdir();
    let repo = busybox_app("[image]\nlayers = [\"deps\", \"missing\"]\n");
    repo.write("deps/lib/big.txt", "dependency\n".repeat(10_000));
    repo.write("deps/README", "vendored\n");
    repo.commit("Vendored dependencies");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let first = export(&graven, "oci", &out.path().join("one"), &[]);
    let layers = first["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{first}");
    assert_eq!((layers[0]["of"].as_str(), layers[1]["of"].as_str()), (Some("/app/deps"), Some("/app")));
    let warnings = first["warnings"].to_string();
    assert!(warnings.contains("[image] layers names 'missing', which the artifact does not have"), "{warnings}");

    repo.write("web", "#!/app/bin/busybox sh\necho changed\n");
    repo.commit("A change outside deps");
    graven.build_json::<&str>([]);
    let second = export(&graven, "oci", &out.path().join("two"), &[]);
    let again = second["layers"].as_array().unwrap();
    assert_eq!(again[0]["digest"], layers[0]["digest"], "the deps layer is the same");
    assert_eq!(again[0]["reused"], true, "and was not made again");
    assert_ne!(again[1]["digest"], layers[1]["digest"]);
    assert_eq!(again[1]["reused"], false);

    // Each path is in exactly one layer.
    let names = |layer: &serde_json::Value| -> Vec<String> {
        let hex = layer["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
        let blob = std::fs::File::open(out.path().join("two/blobs/sha256").join(hex)).unwrap();
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(blob));
        archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect()
    };
    let deps = names(&again[0]);
    let rest = names(&again[1]);
    assert_eq!(deps, ["app/", "app/deps/", "app/deps/README", "app/deps/lib/", "app/deps/lib/big.txt"]);
    assert!(rest.contains(&"app/web".to_owned()) && !rest.iter().any(|name| name.starts_with("app/deps")), "{rest:?}");
}

/// A base image made with umoci: a busybox shell at /bin/sh and
/// /etc/ssl/certs, with its own PATH.
fn base_layout(umoci: &Path, dir: &Path) -> PathBuf {
    let layout = dir.join("base");
    let bundle = dir.join("base-bundle");
    let image = format!("{}:1", layout.display());
    run(umoci, &["init", "--layout", layout.to_str().unwrap()]);
    run(umoci, &["new", "--image", &image]);
    run(umoci, &["unpack", "--rootless", "--image", &image, bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc/ssl/certs")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    run(umoci, &["repack", "--image", &image, bundle.to_str().unwrap()]);
    run(umoci, &["config", "--image", &image, "--config.env", "PATH=/bin", "--config.env", "LANG=C.UTF-8"]);
    layout
}

#[test]
fn a_base_image_gives_its_layers_path_and_the_host_references_it_provides() {
    let Some(umoci) = tool("umoci") else { return };
    let out = lowercase_tempdir();
    let base = base_layout(&umoci, out.path());
    let repo = busybox_app("");
    std::os::unix::fs::symlink("/etc/ssl/certs", repo.path().join("certs")).unwrap();
    std::os::unix::fs::symlink("/usr/share/zoneinfo", repo.path().join("zoneinfo")).unwrap();
    repo.write("Procfile", "web: echo \"GREETING=$GREETING\"; ./web\n");
    repo.commit("Host references and a shell command");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);

    let alone = export(&graven, "oci", &out.path().join("alone"), &[]);
    let warnings = alone["warnings"].to_string();
    assert!(warnings.contains("/app/certs links to /etc/ssl/certs, which the image does not have"), "{warnings}");
    assert!(warnings.contains("needs /bin/sh, which the image does not have"), "{warnings}");

    let spec = format!("{}:1", base.display());
    let based = export(&graven, "oci", &out.path().join("based"), &["--base", &spec]);
    let warnings: Vec<String> =
        based["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_owned()).collect();
    assert_eq!(
        warnings,
        [
            "/app/zoneinfo links to /usr/share/zoneinfo, which the image does not have: give a base image that provides it (--base)"
        ],
        "the base provides /etc/ssl/certs and /bin/sh"
    );
    let layers = based["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["of"], "base");
    assert_eq!(layers[1]["digest"], alone["layers"][0]["digest"], "the artifact's layer is the same on any base");

    let hex = based["config"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("based/blobs/sha256").join(hex)).unwrap()).unwrap();
    assert_eq!(config["config"]["Env"], serde_json::json!(["PATH=/bin", "LANG=C.UTF-8"]));
    assert_eq!(config["config"]["Cmd"][0], "/bin/sh");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);

    if let Some(podman) = tool("podman") {
        let podman = Podman::new(&podman, out.path());
        let image = format!("oci:{}:{}", out.path().join("based").display(), commit(&repo));
        let said = podman.run(&["run", "--rm", "-e", "GREETING=based", &image]);
        assert_eq!(said, "GREETING=based\nGREETING=based in /app\n");
    }
}

#[test]
fn a_base_that_is_not_usable_is_refused_naming_it() {
    let Some(umoci) = tool("umoci") else { return };
    let out = lowercase_tempdir();
    let base = base_layout(&umoci, out.path());
    let repo = busybox_app("");
    let graven = Graven::in_repo(&repo).label(&out.path().display().to_string(), "[OUT]");
    graven.build_json::<&str>([]);
    let target = out.path().join("image");
    let target = target.to_str().unwrap();
    let attempt = |base: &str| graven.run(["export", "HEAD", "--format", "oci", "-o", target, "--base", base]);

    let missing = attempt(out.path().join("nowhere").to_str().unwrap());
    insta::assert_snapshot!(missing, @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: the base image [OUT]/nowhere does not exist: make one with `skopeo copy docker://IMAGE oci:[OUT]/nowhere:TAG`
    hint: --base takes an OCI layout directory, with :TAG if it has several
    ");
    let not_layout = attempt(repo.path().join("bin").to_str().unwrap());
    assert_eq!(not_layout.code, 2, "{not_layout}");
    assert!(not_layout.stderr.contains("is not a usable OCI layout: it has no oci-layout file"), "{not_layout}");
    let no_tag = attempt(&format!("{}:2", base.display()));
    insta::assert_snapshot!(no_tag, @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: the base image [OUT]/base has no tag '2' (it has: 1)
    hint: --base takes an OCI layout directory, with :TAG if it has several
    ");

    // A manifest changed after the index named it.
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(base.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let path = base.join("blobs/sha256").join(manifest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(b' ');
    std::fs::write(&path, bytes).unwrap();
    let tampered = attempt(base.to_str().unwrap());
    assert_eq!(tampered.code, 2, "{tampered}");
    assert!(tampered.stderr.contains("is not what its descriptor says"), "{tampered}");
    assert!(!out.path().join("image").exists(), "nothing is written");
}

#[test]
fn bad_export_requests_are_refused_and_write_nothing() {
    let out = lowercase_tempdir();
    let repo = busybox_app("");
    let graven = Graven::in_repo(&repo).label(&out.path().display().to_string(), "[OUT]");
    graven.build_json::<&str>([]);
    let taken = out.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("file"), "mine").unwrap();

    insta::assert_snapshot!(graven.run(["export", "HEAD", "--format", "oci", "-o", taken.to_str().unwrap()]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: [OUT]/taken exists and is not empty
    hint: give a new directory with -o, or remove this one first
    ");
    assert_eq!(std::fs::read_to_string(taken.join("file")).unwrap(), "mine");
    insta::assert_snapshot!(graven.run(["export", "HEAD", "--format", "oci", "-o", "-"]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: an oci layout is a directory, and cannot go to stdout
    hint: give a directory with -o DIR, or use --format oci-archive -o - for a tarball
    ");
    insta::assert_snapshot!(graven.run(["export", "HEAD", "--format", "tar", "-o", "x.tar", "--base", "b"]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: --base and --compression are for images; --format tar is an archive of the tree
    hint: use --format oci, oci-archive or docker-archive for an image
    ");
    let unknown = graven.run(["export", "0123456789abc", "--format", "oci", "-o", "new"]);
    assert_eq!(unknown.code, 2, "{unknown}");
    assert!(!repo.path().join("new").exists() && !repo.path().join("x.tar").exists());
}

#[test]
fn an_image_holds_no_config_value() {
    let out = lowercase_tempdir();
    let repo = busybox_app("");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    for (key, value) in [("GREETING", "a-greeting-value-7f3a"), ("API_TOKEN", "a-secret-value-9c1e")] {
        let run = graven.run(["config", "set", "--env", "production", &format!("{key}={value}")]);
        assert_eq!(run.code, 0, "{run}");
    }
    let run = graven.run(["release", "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");
    export(&graven, "oci-archive", &out.path().join("image.tar"), &[]);
    export(&graven, "oci-archive", &out.path().join("zstd.tar"), &["--compression", "zstd"]);
    for archive in ["image.tar", "zstd.tar"] {
        // Every blob, decompressed where it is a layer.
        let mut tar = tar::Archive::new(std::fs::File::open(out.path().join(archive)).unwrap());
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            let mut plain = Vec::new();
            if bytes.starts_with(&[0x1f, 0x8b]) {
                std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut plain).unwrap();
            } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                plain = zstd::decode_all(&bytes[..]).unwrap();
            } else {
                plain = bytes;
            }
            let text = String::from_utf8_lossy(&plain);
            assert!(!text.contains("a-greeting-value-7f3a") && !text.contains("a-secret-value-9c1e"));
            assert!(!text.contains("GREETING=a") && !text.contains("API_TOKEN"));
        }
    }
}

#[test]
fn labels_name_the_source_without_credentials_and_a_dirty_build_is_tagged_so() {
    let out = lowercase_tempdir();
    let repo = busybox_app("");
    repo.git(&["remote", "add", "origin", "https://deploy:t0ken@git.example.com/team/boxed.git"]);
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let clean = export(&graven, "oci", &out.path().join("clean"), &[]);
    let config = |layout: &str, image: &serde_json::Value| -> serde_json::Value {
        let hex = image["config"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
        serde_json::from_slice(&std::fs::read(out.path().join(layout).join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let labels = config("clean", &clean)["config"]["Labels"].clone();
    assert_eq!(labels["org.opencontainers.image.source"], "https://git.example.com/team/boxed.git");
    assert!(!labels.to_string().contains("t0ken"));
    assert_eq!(labels["dev.graven.dirty"], serde_json::Value::Null);

    repo.write("web", "#!/app/bin/busybox sh\necho uncommitted\n");
    let run = graven.run(["build", "--allow-dirty", "--json"]);
    assert_eq!(run.code, 0, "{run}");
    let artifact = run.json()["artifact"].as_str().unwrap().to_owned();
    let layout = out.path().join("dirty");
    let run = graven.run(["export", &artifact, "--format", "oci", "-o", layout.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 0, "{run}");
    let dirty = run.json();
    assert_eq!(dirty["tag"].as_str(), Some(format!("{}-dirty", commit(&repo)).as_str()), "not named as the commit");
    assert_eq!(config("dirty", &dirty)["config"]["Labels"]["dev.graven.dirty"], "true");
}

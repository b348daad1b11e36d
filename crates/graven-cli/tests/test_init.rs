//! `graven init`: a commented graven.toml, and graven's home ignored by git.

use graven_testutils::TestRepo;

use crate::common::Graven;
use crate::common::runner::{Runner, free_port, wait_for};

#[test]
fn init_writes_graven_toml_and_ignores_the_home() {
    let repo = TestRepo::new();
    repo.write("Procfile", "web: ./serve\nworker: ./work\nrelease: ./migrate\n");
    repo.write("Makefile", "all:\n\ttrue\n");
    repo.write(".gitignore", "/target");
    let graven = Graven::in_repo(&repo).label(&app_name(&repo), "[APP]");
    let run = graven.run(["init"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        wrote graven.toml for app '[APP]', with a recipe for Makefile
        added /.graven/ to .gitignore
        ----- stderr -----
        next: review graven.toml, commit it, and run graven build
        ");
    let toml = std::fs::read_to_string(repo.path().join("graven.toml")).unwrap();
    insta::assert_snapshot!(graven.relabel(&toml), @r#"
        # graven.toml: how graven builds and runs this app. Every setting is optional.

        [app]
        # The app's name in the ledger: a lowercase letter, then a-z, 0-9 and '-'.
        name = "[APP]"

        [build]
        # Run with `sh -c` in a clean export of the commit (no .git, nothing untracked),
        # with only PATH, HOME, LANG, TMPDIR, SOURCE_DATE_EPOCH (the commit time),
        # GRAVEN_COMMIT and what `env` and `pass_env` name: no runtime config.
        # Suggested because of Makefile; check it before you commit.
        command = "make"
        # The directory that becomes the artifact (default: the whole checkout).
        # output = "dist"
        # Paths left out of the artifact; a glob without '/' matches at any depth.
        # exclude = ["*.md", "tests/**"]
        # Variables for the build command, and variables let through from your shell.
        # env = { NODE_ENV = "production" }
        # pass_env = ["CI"]
        # Directories of the build's HOME (or /tmp) kept from build to build, never in
        # the artifact: package downloads are reused (graven gc --caches deletes them).
        # cache = ["~/.cache/pip"]
        # Whether the build may use the network (package installs).
        # network = true

        [run]
        # Process types from the Procfile: web, worker.
        # `release` runs once per release, before the new processes start.
        # An HTTP path that answers 2xx once a web process is ready.
        # health = "/healthz"
        # Whom the processes run as when graven runs as root (else root).
        # user = "www-data"

        [image]
        # Directories of the artifact in image layers of their own (graven export --format oci),
        # so that a push after a code change sends only the last layer.
        # layers = [".venv"]
        "#);
    let ignore = std::fs::read_to_string(repo.path().join(".gitignore")).unwrap();
    insta::assert_snapshot!(ignore, @r"
        /target
        # graven's ledger and store
        /.graven/
        ");

    // What init wrote is what build reads.
    repo.commit("graven init");
    let build = graven.build_json::<&str>([]);
    assert_eq!(build["dirty"], false, ".graven/ is ignored");
}

#[test]
fn init_twice_is_refused() {
    let repo = TestRepo::new();
    repo.write("Procfile", "web: ./serve\n");
    let graven = Graven::in_repo(&repo);
    assert_eq!(graven.run(["--app", "shop", "init"]).code, 0);
    let toml = std::fs::read_to_string(repo.path().join("graven.toml")).unwrap();
    let ignore = std::fs::read_to_string(repo.path().join(".gitignore")).unwrap();

    let run = graven.run(["init"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: [TEMP]/graven.toml already exists
        hint: edit it, or remove it and run graven init again
        ");
    assert_eq!(std::fs::read_to_string(repo.path().join("graven.toml")).unwrap(), toml, "graven.toml is unchanged");
    assert_eq!(std::fs::read_to_string(repo.path().join(".gitignore")).unwrap(), ignore, "unchanged");
    assert_eq!(ignore.matches("/.graven/").count(), 1, "{ignore}");
}

#[test]
fn init_keeps_an_existing_ignore_entry_and_notes_a_missing_procfile() {
    let repo = TestRepo::new();
    repo.write(".gitignore", "node_modules/\n.graven/\n");
    let graven = Graven::in_repo(&repo);
    let run = graven.run(["--app", "shop", "init"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        wrote graven.toml for app 'shop'
        ----- stderr -----
        note: there is no Procfile yet; add one (like `web: python3 app.py`) before graven build
        next: review graven.toml, commit it, and run graven build
        ");
    let ignore = std::fs::read_to_string(repo.path().join(".gitignore")).unwrap();
    assert_eq!(ignore, "node_modules/\n.graven/\n");
}

#[test]
fn init_outside_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let graven = Graven::in_dir(dir.path());
    let run = graven.run(["init"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: [TEMP] is not inside a git repository, and no graven home was given
        hint: run graven inside your app's repository, or pass --home DIR (or set GRAVEN_HOME)
        ");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
}

/// The app name init derives from the repository's directory.
fn app_name(repo: &TestRepo) -> String {
    graven::app::app_name_from_directory(&repo.path().file_name().unwrap().to_string_lossy())
}

/// Runs `graven init` in `repo`, commits what it wrote, builds, releases to
/// production and runs it; returns the runner once `GET /` shows `text`.
fn init_build_and_run(repo: &TestRepo, graven: &Graven, text: &str) -> Runner {
    let init = graven.run(["init"]);
    assert_eq!(init.code, 0, "{init}");
    repo.commit("graven init");
    let build = graven.run(["build"]);
    assert_eq!(build.code, 0, "{build}");
    let release = graven.run(["release", "--env", "production"]);
    assert_eq!(release.code, 0, "{release}");
    let port = free_port();
    let runner = Runner::start(graven, port, &[]);
    wait_for(port, "/", text);
    runner
}

/// Whether `program` is on PATH; says so when it is not, for a skipped test.
fn have(program: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("skipped: {program} is not installed on this machine");
    }
    found
}

/// A small HTTP server in Python on `$PORT` that answers `body_expr`.
fn python_server(body_expr: &str) -> String {
    format!(
        "import os\nfrom http.server import BaseHTTPRequestHandler, HTTPServer\n\n\
         class Handler(BaseHTTPRequestHandler):\n    def do_GET(self):\n        body = ({body_expr}).encode()\n        \
         self.send_response(200)\n        self.send_header('Content-Length', str(len(body)))\n        self.end_headers()\n        \
         self.wfile.write(body)\n\n\
         HTTPServer(('0.0.0.0', int(os.environ['PORT'])), Handler).serve_forever()\n"
    )
}

#[test]
fn the_python_template_builds_a_virtualenv_at_app_with_the_pip_cache_and_runs_from_it() {
    let repo = TestRepo::new();
    // A dependency as a wheel in the repository, so that pip needs no index.
    std::fs::create_dir(repo.path().join("wheels")).unwrap();
    let made = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import zipfile\n\
             with zipfile.ZipFile('wheels/greet-1.0-py3-none-any.whl', 'w') as z:\n    \
             z.writestr('greet/__init__.py', 'def hello():\\n    return \"hello from a wheel\"\\n')\n    \
             z.writestr('greet-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: greet\\nVersion: 1.0\\n')\n    \
             z.writestr('greet-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n    \
             z.writestr('greet-1.0.dist-info/RECORD', '')\n",
        )
        .current_dir(repo.path())
        .status()
        .unwrap();
    assert!(made.success());
    repo.write("requirements.txt", "./wheels/greet-1.0-py3-none-any.whl\n");
    repo.write("app.py", format!("import greet\n{}", python_server("greet.hello()")));
    let graven = Graven::in_repo(&repo);
    let mut runner = init_build_and_run(&repo, &graven, "hello from a wheel");
    let toml = std::fs::read_to_string(repo.path().join("graven.toml")).unwrap();
    assert!(toml.contains("cache = [\"~/.cache/pip\"]"), "{toml}");
    assert!(toml.contains("python3 -m venv /app/.venv"), "{toml}");
    assert_eq!(std::fs::read_to_string(repo.path().join("Procfile")).unwrap(), "web: .venv/bin/python app.py\n");
    assert!(has_cache_dir(&repo, "home/.cache/pip"), "pip's cache is kept");
    // The virtualenv's interpreter is the machine's: a host reference.
    let show = graven.run(["builds", "show", "HEAD", "--json"]).json();
    let references = show["host_references"].as_array().unwrap();
    assert!(references.iter().any(|r| r["path"] == ".venv/bin/python3"), "{show:#}");
    runner.terminate();

    // Its image: the virtualenv in a layer of its own, its interpreter a
    // host reference an image without a base lacks.
    assert!(toml.contains("layers = [\".venv\"]"), "{toml}");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("image");
    let image = graven.run(["export", "HEAD", "--format", "oci", "-o", layout.to_str().unwrap(), "--json"]).json();
    let layers: Vec<&str> = image["layers"].as_array().unwrap().iter().map(|l| l["of"].as_str().unwrap()).collect();
    assert_eq!(layers, ["/app/.venv", "/app"]);
    assert!(image["warnings"].to_string().contains("/app/.venv/bin/python3 links to"), "{image:#}");

    // The same commit, built in two clones at other paths: one artifact,
    // virtualenv, pip and all.
    let built = show["artifact"].as_str().unwrap().to_owned();
    for n in 0..2 {
        let clone = tempfile::Builder::new().prefix("graven-clone-").tempdir().unwrap();
        let path = clone.path().join(format!("elsewhere-{n}/app"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let output =
            std::process::Command::new("git").arg("clone").arg("-q").arg(repo.path()).arg(&path).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let build = Graven::in_dir(&path).build_json::<&str>([]);
        assert_eq!(build["artifact"], built, "a clone at {} built another artifact", path.display());
    }
}

/// Whether some app's cache directory has `key` in it.
fn has_cache_dir(repo: &TestRepo, key: &str) -> bool {
    std::fs::read_dir(repo.path().join(".graven/cache"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|app| app.path().join(key).is_dir())
}

#[test]
fn the_static_site_template_serves_the_checkout() {
    let repo = TestRepo::new();
    repo.write("index.html", "<h1>a static site</h1>\n");
    let graven = Graven::in_repo(&repo);
    let mut runner = init_build_and_run(&repo, &graven, "a static site");
    let procfile = std::fs::read_to_string(repo.path().join("Procfile")).unwrap();
    assert_eq!(procfile, "web: python3 -m http.server --bind 0.0.0.0 \"$PORT\"\n");
    runner.terminate();
}

#[test]
fn the_node_template_runs_npm_ci_and_the_build_script_with_the_npm_cache() {
    if !have("npm") {
        return;
    }
    let repo = TestRepo::new();
    repo.write(
        "package.json",
        r#"{"name": "hello-node", "version": "1.0.0", "private": true,
  "scripts": {"build": "node build.js", "start": "node server.js"}}
"#,
    );
    repo.write(
        "package-lock.json",
        r#"{"name": "hello-node", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
  "packages": {"": {"name": "hello-node", "version": "1.0.0"}}}
"#,
    );
    repo.write("build.js", "require('fs').writeFileSync('built.txt', 'built by npm run build');\n");
    repo.write(
        "server.js",
        "const fs = require('fs');\nrequire('http').createServer((req, res) => res.end(fs.readFileSync('built.txt')))\n  .listen(process.env.PORT);\n",
    );
    let graven = Graven::in_repo(&repo);
    let mut runner = init_build_and_run(&repo, &graven, "built by npm run build");
    let toml = std::fs::read_to_string(repo.path().join("graven.toml")).unwrap();
    assert!(toml.contains("command = \"npm ci --no-audit --no-fund && npm run build\""), "{toml}");
    assert!(has_cache_dir(&repo, "home/.npm"), "npm's cache is kept");
    assert!(toml.contains("layers = [\"node_modules\"]"), "{toml}");
    runner.terminate();
}

#[test]
fn the_rust_template_builds_the_program_into_bin_with_the_registry_cache() {
    if !have("cargo") {
        return;
    }
    let repo = TestRepo::new();
    repo.write("Cargo.toml", "[package]\nname = \"hello-rust\"\nversion = \"0.1.0\"\nedition = \"2021\"\n");
    repo.write(
        "src/main.rs",
        r#"use std::io::{Read, Write};
fn main() {
    let port = std::env::var("PORT").unwrap();
    let listener = std::net::TcpListener::bind(("0.0.0.0", port.parse::<u16>().unwrap())).unwrap();
    for stream in listener.incoming() {
        let mut stream = stream.unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nhello from rust");
    }
}
"#,
    );
    // rustup's toolchains, wherever this machine has them.
    let rustup = std::env::var_os("RUSTUP_HOME")
        .or_else(|| std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".rustup").into()));
    let mut graven = Graven::in_repo(&repo);
    if let Some(rustup) = rustup.filter(|path| std::path::Path::new(path).is_dir()) {
        graven = graven.env("RUSTUP_HOME", rustup);
    }
    let lock =
        std::process::Command::new("cargo").args(["generate-lockfile", "--offline"]).current_dir(repo.path()).status();
    let lock = lock.unwrap();
    assert!(lock.success(), "cargo generate-lockfile");
    let mut runner = init_build_and_run(&repo, &graven, "hello from rust");
    let toml = std::fs::read_to_string(repo.path().join("graven.toml")).unwrap();
    assert!(toml.contains("cache = [\"~/.cargo/registry\", \"~/.cargo/git\"]"), "{toml}");
    assert_eq!(std::fs::read_to_string(repo.path().join("Procfile")).unwrap(), "web: bin/hello-rust\n");
    let unpacked = graven.unpack("HEAD");
    assert!(unpacked.path().join("tree/bin/hello-rust").is_file());
    assert!(!unpacked.path().join("tree/target").exists(), "the target directory stays out of the artifact");
    runner.terminate();
}

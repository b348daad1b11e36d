//! `graven init`: a commented `graven.toml`, and `.graven/` ignored by git.

use std::fmt::Write as _;
use std::path::Path;

use clap::Args;
use graven::app::{AppSettings, PROCFILE, Procfile, SETTINGS_FILE};
use graven::build::app_name;
use graven::home::DEFAULT_HOME;

use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Write a commented graven.toml for this repository.
///
/// Reads the Procfile (if there is one) and looks at what the project is,
/// then writes graven.toml with every setting explained and a recipe that
/// works in the build sandbox, and adds .graven/ (where graven keeps its
/// ledger and store) to .gitignore. Commit what it writes.
///
/// Recognised, first match wins:
///   Cargo.toml        cargo build --release --locked; programs in bin/;
///                     the cargo registry cached
///   package.json      npm ci, and npm run build if there is that script;
///                     the npm cache
///   requirements.txt  a virtualenv at /app/.venv, pip install -r, every
///                     module compiled; the pip cache
///   go.mod, Gemfile, Makefile
///   index.html        a static site, served by python3 -m http.server
///
/// Without a Procfile, init writes one when it knows how the project runs
/// (bin/<package> for Rust, npm start, .venv/bin/python app.py, the static
/// server).
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct InitArgs {}

pub(crate) fn cmd_init(settings: &Settings, _args: &InitArgs) -> Result<(), CommandError> {
    let repo = settings.repo()?;
    let root = repo.root();
    let settings_path = root.join(SETTINGS_FILE);
    if settings_path.exists() {
        return Err(CommandError::bad_input(format!("{} already exists", settings_path.display()))
            .hint("edit it, or remove it and run graven init again"));
    }
    let procfile = match std::fs::read_to_string(root.join(PROCFILE)) {
        Ok(text) => Some(Procfile::parse(&text).map_err(|e| CommandError::bad_input(e).hint("fix the Procfile"))?),
        Err(_) => None,
    };
    let name = settings.app_flag.clone().unwrap_or_else(|| app_name(repo, &AppSettings::default()));
    let found = detect(root);
    let mut procfile = procfile;
    let mut wrote_procfile = false;
    if procfile.is_none()
        && let Some(line) = found.as_ref().and_then(|t| t.procfile.as_ref())
    {
        let path = root.join(PROCFILE);
        std::fs::write(&path, format!("{line}\n"))
            .map_err(|e| CommandError::failed(format!("could not write {}: {e}", path.display())))?;
        procfile = Procfile::parse(line).ok();
        wrote_procfile = true;
    }
    let text = template(&name, procfile.as_ref(), found.as_ref());
    std::fs::write(&settings_path, text)
        .map_err(|e| CommandError::failed(format!("could not write {}: {e}", settings_path.display())))?;
    match &found {
        Some(found) => ui::out(format!("wrote {SETTINGS_FILE} for app '{name}', with a recipe for {}", found.found)),
        None => ui::out(format!("wrote {SETTINGS_FILE} for app '{name}'")),
    }
    if wrote_procfile {
        ui::out(format!(
            "wrote {PROCFILE}: {}",
            found.as_ref().and_then(|t| t.procfile.as_deref()).unwrap_or_default()
        ));
    }

    let ignore_path = root.join(".gitignore");
    let ignore = std::fs::read_to_string(&ignore_path).unwrap_or_default();
    let entry = format!("/{DEFAULT_HOME}/");
    let already = ignore.lines().map(str::trim).any(|line| {
        [DEFAULT_HOME.to_owned(), format!("{DEFAULT_HOME}/"), format!("/{DEFAULT_HOME}"), entry.clone()]
            .contains(&line.to_owned())
    });
    if !already {
        let mut updated = ignore.clone();
        if !updated.is_empty() && !updated.ends_with('\n') {
            updated.push('\n');
        }
        let _ = writeln!(updated, "# graven's ledger and store\n{entry}");
        std::fs::write(&ignore_path, updated)
            .map_err(|e| CommandError::failed(format!("could not write {}: {e}", ignore_path.display())))?;
        ui::out(format!("added {entry} to .gitignore"));
    }
    for note in found.iter().flat_map(|t| &t.notes) {
        ui::note(format!("note: {note}"));
    }
    if procfile.is_none() {
        ui::note(format!("note: there is no {PROCFILE} yet; add one (like `web: python3 app.py`) before graven build"));
    }
    ui::note(format!("next: review {SETTINGS_FILE}, commit it, and run graven build"));
    Ok(())
}

/// What `graven init` suggests for the kind of project it finds: a recipe
/// that works in the build sandbox, and the Procfile line to run it.
#[derive(Default)]
struct Template {
    /// The file that gave the project away.
    found: &'static str,
    command: Option<String>,
    /// Lines of explanation above the command.
    about: Vec<String>,
    env: Vec<(&'static str, String)>,
    pass_env: Vec<&'static str>,
    cache: Vec<&'static str>,
    /// `[image] layers`: the directories that change less than the code.
    layers: Vec<&'static str>,
    /// A Procfile to write if there is none.
    procfile: Option<String>,
    /// Said once init is done: what the user still has to do.
    notes: Vec<String>,
}

/// The template for the project at `root`; `None` if none is recognised.
fn detect(root: &Path) -> Option<Template> {
    let has = |file: &str| root.join(file).exists();
    if has("Cargo.toml") {
        return Some(rust(root));
    }
    if has("package.json") {
        return Some(node(root));
    }
    if has("requirements.txt") {
        return Some(python(root));
    }
    let simple = |found, command: &str, cache: Vec<&'static str>| Template {
        found,
        command: Some(command.to_owned()),
        cache,
        ..Template::default()
    };
    if has("go.mod") {
        return Some(simple("go.mod", "go build -trimpath -o bin/ ./...", vec!["~/go/pkg/mod", "~/.cache/go-build"]));
    }
    if has("Gemfile") {
        return Some(simple("Gemfile", "bundle config set --local deployment true && bundle install", vec![]));
    }
    if has("Makefile") {
        return Some(simple("Makefile", "make", vec![]));
    }
    has("index.html").then(|| Template {
        found: "index.html",
        about: vec!["A static site: the checkout is the artifact, served by the web process.".to_owned()],
        procfile: Some("web: python3 -m http.server --bind 0.0.0.0 \"$PORT\"".to_owned()),
        ..Template::default()
    })
}

/// Python with `requirements.txt`: a virtualenv at `/app/.venv`, where it
/// also runs, and every module compiled.
fn python(root: &Path) -> Template {
    let command = "python3 -m venv /app/.venv && /app/.venv/bin/pip install --no-input -r requirements.txt && \
                   /app/.venv/bin/python -m compileall -q -x \"/[.]venv/\" .";
    let procfile = root.join("app.py").exists().then(|| "web: .venv/bin/python app.py".to_owned());
    Template {
        found: "requirements.txt",
        command: Some(command.to_owned()),
        about: vec![
            "The virtualenv is made at /app/.venv, where the app runs: its scripts work there.".to_owned(),
            "Run its programs as .venv/bin/python, .venv/bin/gunicorn… in the Procfile.".to_owned(),
        ],
        env: vec![("PIP_DISABLE_PIP_VERSION_CHECK", "1".to_owned())],
        cache: vec!["~/.cache/pip"],
        layers: vec![".venv"],
        notes: if procfile.is_none() {
            vec!["run the app from the virtualenv in the Procfile, like `web: .venv/bin/gunicorn app:app`".to_owned()]
        } else {
            Vec::new()
        },
        procfile,
        ..Template::default()
    }
}

/// Node: `npm ci`, then `npm run build` if `package.json` has that script.
fn node(root: &Path) -> Template {
    let package: serde_json::Value = std::fs::read_to_string(root.join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let script = |name: &str| package["scripts"][name].is_string();
    let mut command = "npm ci --no-audit --no-fund".to_owned();
    if script("build") {
        command.push_str(" && npm run build");
    }
    let mut notes = Vec::new();
    if !root.join("package-lock.json").exists() {
        notes.push("npm ci installs exactly package-lock.json: run npm install once and commit it".to_owned());
    }
    let procfile = if script("start") {
        Some("web: npm start".to_owned())
    } else {
        notes.push("add a Procfile line that starts the server, like `web: node server.js`".to_owned());
        None
    };
    Template {
        found: "package.json",
        command: Some(command),
        about: vec!["npm ci installs what package-lock.json says, into /app/node_modules.".to_owned()],
        cache: vec!["~/.npm"],
        layers: vec!["node_modules"],
        procfile,
        notes,
        ..Template::default()
    }
}

/// Rust: a release build, its programs copied to `bin/`; the target
/// directory stays in the sandbox's `/tmp`, out of the artifact.
fn rust(root: &Path) -> Template {
    let command = "cargo build --release --locked && mkdir -p bin && \
                   find /tmp/target/release -maxdepth 1 -type f -perm -u+x -exec cp {} bin/ \\;";
    let mut template = Template {
        found: "Cargo.toml",
        command: Some(command.to_owned()),
        about: vec!["The programs are built in /tmp/target and copied to /app/bin.".to_owned()],
        env: vec![("CARGO_TARGET_DIR", "/tmp/target".to_owned())],
        cache: vec!["~/.cargo/registry", "~/.cargo/git"],
        ..Template::default()
    };
    // rustup finds its toolchains in ~/.rustup, and the sandbox's HOME is
    // not the user's: say where they are.
    if std::env::var_os("RUSTUP_HOME").is_some() {
        template.pass_env.push("RUSTUP_HOME");
    } else if let Some(rustup) = std::env::var_os("HOME").map(|home| Path::new(&home).join(".rustup"))
        && rustup.is_dir()
    {
        template.env.push(("RUSTUP_HOME", rustup.display().to_string()));
        template.about.push("RUSTUP_HOME: the build's HOME is /tmp/home, so rustup is told where it is.".to_owned());
    }
    if !root.join("Cargo.lock").exists() {
        template.notes.push("--locked needs Cargo.lock: run cargo generate-lockfile and commit it".to_owned());
    }
    match package_name(root) {
        Some(name) => template.procfile = Some(format!("web: bin/{name}")),
        None => template.notes.push("add a Procfile line that runs your program, like `web: bin/server`".to_owned()),
    }
    template
}

/// `[package] name` of the `Cargo.toml` at `root`.
fn package_name(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).ok()?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name").map(str::trim_start) {
            let value = value.strip_prefix('=')?.trim().trim_matches('"');
            return Some(value.to_owned());
        }
    }
    None
}

/// `value` as a TOML basic string.
fn quoted(value: &str) -> String {
    serde_json::to_string(value).expect("strings serialise")
}

fn template(name: &str, procfile: Option<&Procfile>, build: Option<&Template>) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# graven.toml: how graven builds and runs this app. Every setting is optional.");
    let _ = writeln!(text, "\n[app]\n# The app's name in the ledger: a lowercase letter, then a-z, 0-9 and '-'.");
    let _ = writeln!(text, "name = \"{name}\"");
    let _ = writeln!(text, "\n[build]");
    let _ = writeln!(text, "# Run with `sh -c` in a clean export of the commit (no .git, nothing untracked),");
    let _ = writeln!(text, "# with only PATH, HOME, LANG, TMPDIR, SOURCE_DATE_EPOCH (the commit time),");
    let _ = writeln!(text, "# GRAVEN_COMMIT and what `env` and `pass_env` name: no runtime config.");
    if let Some(template) = build {
        let _ = writeln!(text, "# Suggested because of {}; check it before you commit.", template.found);
        for line in &template.about {
            let _ = writeln!(text, "# {line}");
        }
    }
    if let Some(command) = build.and_then(|t| t.command.as_ref()) {
        let _ = writeln!(text, "command = {}", quoted(command));
    } else {
        let _ = writeln!(text, "# Without a command, the checkout itself is the artifact.");
        let _ = writeln!(text, "# command = \"make\"");
    }
    let _ = writeln!(text, "# The directory that becomes the artifact (default: the whole checkout).");
    let _ = writeln!(text, "# output = \"dist\"");
    let _ = writeln!(text, "# Paths left out of the artifact; a glob without '/' matches at any depth.");
    let _ = writeln!(text, "# exclude = [\"*.md\", \"tests/**\"]");
    let _ = writeln!(text, "# Variables for the build command, and variables let through from your shell.");
    let env = build.map(|t| t.env.as_slice()).unwrap_or_default();
    if env.is_empty() {
        let _ = writeln!(text, "# env = {{ NODE_ENV = \"production\" }}");
    } else {
        let pairs: Vec<String> = env.iter().map(|(key, value)| format!("{key} = {}", quoted(value))).collect();
        let _ = writeln!(text, "env = {{ {} }}", pairs.join(", "));
    }
    let pass_env = build.map(|t| t.pass_env.as_slice()).unwrap_or_default();
    if pass_env.is_empty() {
        let _ = writeln!(text, "# pass_env = [\"CI\"]");
    } else {
        let names: Vec<String> = pass_env.iter().map(|name| quoted(name)).collect();
        let _ = writeln!(text, "pass_env = [{}]", names.join(", "));
    }
    let _ = writeln!(text, "# Directories of the build's HOME (or /tmp) kept from build to build, never in");
    let _ = writeln!(text, "# the artifact: package downloads are reused (graven gc --caches deletes them).");
    let cache = build.map(|t| t.cache.as_slice()).unwrap_or_default();
    if cache.is_empty() {
        let _ = writeln!(text, "# cache = [\"~/.cache/pip\"]");
    } else {
        let paths: Vec<String> = cache.iter().map(|path| quoted(path)).collect();
        let _ = writeln!(text, "cache = [{}]", paths.join(", "));
    }
    let _ = writeln!(text, "# Whether the build may use the network (package installs).");
    let _ = writeln!(text, "# network = true");
    let _ = writeln!(text, "\n[run]");
    match procfile {
        Some(procfile) if !procfile.is_empty() => {
            let processes: Vec<&str> = procfile.processes().map(|p| p.name).collect();
            let _ = writeln!(text, "# Process types from the Procfile: {}.", processes.join(", "));
            if procfile.release_phase().is_some() {
                let _ = writeln!(text, "# `release` runs once per release, before the new processes start.");
            }
        }
        _ => {
            let _ = writeln!(text, "# Process types come from the Procfile (`web: python3 app.py`).");
        }
    }
    let _ = writeln!(text, "# An HTTP path that answers 2xx once a web process is ready.");
    let _ = writeln!(text, "# health = \"/healthz\"");
    let _ = writeln!(text, "# Whom the processes run as when graven runs as root (else root).");
    let _ = writeln!(text, "# user = \"www-data\"");
    let _ = writeln!(text, "\n[image]");
    let _ = writeln!(text, "# Directories of the artifact in image layers of their own (graven export --format oci),");
    let _ = writeln!(text, "# so that a push after a code change sends only the last layer.");
    let layers = build.map(|t| t.layers.as_slice()).unwrap_or_default();
    if layers.is_empty() {
        let _ = writeln!(text, "# layers = [\".venv\"]");
    } else {
        let paths: Vec<String> = layers.iter().map(|path| quoted(path)).collect();
        let _ = writeln!(text, "layers = [{}]", paths.join(", "));
    }
    text
}

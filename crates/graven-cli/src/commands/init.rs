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
/// Reads the Procfile (if there is one) and looks for a known build tool, then
/// writes graven.toml with every setting explained, and adds .graven/ (where
/// graven keeps its ledger and store) to .gitignore. Commit both files.
#[derive(Args, Debug)]
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
    let text = template(&name, procfile.as_ref(), detect_build(root));
    std::fs::write(&settings_path, text)
        .map_err(|e| CommandError::failed(format!("could not write {}: {e}", settings_path.display())))?;
    ui::out(format!("wrote {SETTINGS_FILE} for app '{name}'"));

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
    if procfile.is_none() {
        ui::note(format!("note: there is no {PROCFILE} yet; add one (like `web: python3 app.py`) before graven build"));
    }
    ui::note(format!("next: review {SETTINGS_FILE}, commit it, and run graven build"));
    Ok(())
}

/// A build command for the build tool found at the root, if any.
fn detect_build(root: &Path) -> Option<(&'static str, &'static str)> {
    const TOOLS: [(&str, &str); 6] = [
        ("Cargo.toml", "cargo build --release --locked"),
        ("package.json", "npm ci && npm run build"),
        ("go.mod", "go build -trimpath -o bin/ ./..."),
        ("requirements.txt", "python3 -m pip install --no-cache-dir --target vendor -r requirements.txt"),
        ("Gemfile", "bundle install --deployment"),
        ("Makefile", "make"),
    ];
    TOOLS.into_iter().find(|(file, _)| root.join(file).exists())
}

fn template(name: &str, procfile: Option<&Procfile>, build: Option<(&str, &str)>) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# graven.toml: how graven builds and runs this app. Every setting is optional.");
    let _ = writeln!(text, "\n[app]\n# The app's name in the ledger: a lowercase letter, then a-z, 0-9 and '-'.");
    let _ = writeln!(text, "name = \"{name}\"");
    let _ = writeln!(text, "\n[build]");
    let _ = writeln!(text, "# Run with `sh -c` in a clean export of the commit (no .git, nothing untracked),");
    let _ = writeln!(text, "# with only PATH, HOME, LANG, TMPDIR, SOURCE_DATE_EPOCH (the commit time),");
    let _ = writeln!(text, "# GRAVEN_COMMIT and what `env` and `pass_env` name: no runtime config.");
    if let Some((file, command)) = build {
        let _ = writeln!(text, "# Suggested because of {file}; check it before you commit:");
        let _ = writeln!(text, "command = \"{command}\"");
    } else {
        let _ = writeln!(text, "# Without a command, the checkout itself is the artifact.");
        let _ = writeln!(text, "# command = \"make\"");
    }
    let _ = writeln!(text, "# The directory that becomes the artifact (default: the whole checkout).");
    let _ = writeln!(text, "# output = \"dist\"");
    let _ = writeln!(text, "# Paths left out of the artifact; a glob without '/' matches at any depth.");
    let _ = writeln!(text, "# exclude = [\"*.md\", \"tests/**\"]");
    let _ = writeln!(text, "# Variables for the build command, and variables let through from your shell.");
    let _ = writeln!(text, "# env = {{ NODE_ENV = \"production\" }}");
    let _ = writeln!(text, "# pass_env = [\"CI\"]");
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
    text
}

//! `graven quickstart`: the example app, built on this machine, in a minute.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use graven::git::Repo;

use crate::commands::build::{BuildArgs, cmd_build};
use crate::commands::builds::{BuildsArgs, cmd_builds};
use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// The example app, compiled into the binary so the quickstart needs nothing
/// but graven, git and python3.
const HELLO: &[(&str, &str)] = &[
    (".gitignore", include_str!("../../../../examples/hello/.gitignore")),
    ("Procfile", include_str!("../../../../examples/hello/Procfile")),
    ("README.md", include_str!("../../../../examples/hello/README.md")),
    ("app.py", include_str!("../../../../examples/hello/app.py")),
    ("build.py", include_str!("../../../../examples/hello/build.py")),
    ("buildinfo.py", include_str!("../../../../examples/hello/buildinfo.py")),
    ("graven.toml", include_str!("../../../../examples/hello/graven.toml")),
    ("release.py", include_str!("../../../../examples/hello/release.py")),
    ("templates/index.html.in", include_str!("../../../../examples/hello/templates/index.html.in")),
    ("worker.py", include_str!("../../../../examples/hello/worker.py")),
];

/// Build the example app in a new git repository, to see graven work.
///
/// Copies the example app (a small Python web app) into a new git repository,
/// commits it, builds it with `graven build`, and lists `graven builds`. The
/// repository is kept, so you can go on there with other graven commands.
#[derive(Args, Debug)]
pub(crate) struct QuickstartArgs {
    /// Where to create the example repository [default: a new temporary directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub(crate) fn cmd_quickstart(args: &QuickstartArgs) -> Result<(), CommandError> {
    let dir = match &args.dir {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_some()) {
                return Err(CommandError::bad_input(format!("{} already exists and is not empty", dir.display()))
                    .hint("give a new or empty directory with --dir"));
            }
            dir.clone()
        }
        None => tempfile::Builder::new()
            .prefix("graven-quickstart-")
            .tempdir()
            .map_err(|e| CommandError::failed(format!("could not create a temporary directory: {e}")))?
            .keep(),
    };
    ui::note(format!("==> copying the example app into a new git repository at {}", dir.display()));
    write_example(&dir)?;
    git(&dir, &["init", "--quiet", "--initial-branch=main"])?;
    git(&dir, &["config", "user.name", "graven quickstart"])?;
    git(&dir, &["config", "user.email", "quickstart@graven.invalid"])?;
    git(&dir, &["add", "--all"])?;
    git(&dir, &["commit", "--quiet", "-m", "The example app"])?;

    let repo = Repo::discover(&dir)?;
    let settings = Settings::for_repo(repo);
    ui::note("\n==> graven build");
    cmd_build(&settings, &BuildArgs::default())?;
    ui::note("\n==> graven builds");
    cmd_builds(&settings, &BuildsArgs::default())?;
    ui::note(format!("\nThe example app's repository is {}; try graven commands there.", dir.display()));
    Ok(())
}

fn write_example(dir: &Path) -> Result<(), CommandError> {
    for (path, text) in HELLO {
        let path = dir.join(path);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("example paths have parents"))?;
            std::fs::write(&path, text)
        };
        write().map_err(|e| CommandError::failed(format!("could not write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<(), CommandError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| CommandError::failed(format!("could not run git: {e}")).hint("install git"))?;
    if !output.status.success() {
        return Err(CommandError::failed(format!(
            "`git {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

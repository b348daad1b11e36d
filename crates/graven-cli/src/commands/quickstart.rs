//! `graven quickstart`: the example app, built on this machine, in a minute.

use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{Args, Parser as _};
use graven::git::Repo;
use graven::run::runner::{Runner, RunnerOptions, http_get};

use crate::commands::{Cli, dispatch};
use crate::error::CommandError;
use crate::settings::{Settings, host};
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

/// Build, release and run the example app, to see graven work.
///
/// Copies the example app (a small Python web app) into a new git repository,
/// commits it, builds it, sets a config variable in a "staging" environment,
/// releases the build there, runs it with graven run, fetches its page and
/// shows graven status; then it keeps serving until Ctrl-C. The repository
/// is kept, so you can go on there with other graven commands.
#[derive(Args, Debug)]
pub(crate) struct QuickstartArgs {
    /// Where to create the example repository [default: a new temporary directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// The port the example app is served on
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    port: u16,

    /// Stop after the demonstration instead of serving until Ctrl-C
    #[arg(long)]
    no_serve: bool,
}

pub(crate) fn cmd_quickstart(args: &QuickstartArgs) -> Result<(), CommandError> {
    // Before anything is built: a port another program holds would make the
    // demonstration fetch that program's page.
    // Where the runner will listen: every address.
    if let Err(error) = std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, args.port)) {
        return Err(CommandError::bad_input(format!("port {} is not free: {error}", args.port))
            .hint("another program listens there: run the quickstart with --port and a free port, e.g. --port 18080"));
    }
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
    // The quickstart needs nothing installed: without bubblewrap it shows
    // graven without the sandbox, and says so.
    let sandbox = match graven::sandbox::Sandbox::new() {
        Ok(sandbox) => Some(sandbox),
        Err(why) => {
            ui::note(format!(
                "==> {why}: the quickstart builds and runs without the sandbox (/app); apt-get install bubblewrap to see it with"
            ));
            None
        }
    };
    let build: &[&str] = if sandbox.is_some() { &["build"] } else { &["build", "--no-sandbox"] };
    for args in std::iter::once(build).chain(DEMONSTRATION.iter().copied()) {
        let shown: Vec<String> =
            args.iter().map(|arg| if arg.contains(' ') { format!("'{arg}'") } else { (*arg).to_owned() }).collect();
        ui::note(format!("\n==> graven {}", shown.join(" ")));
        // Parsed like the user's own command line, so the quickstart shows
        // exactly what those commands do.
        let cli = Cli::try_parse_from(std::iter::once("graven").chain(args.iter().copied()))
            .map_err(|e| CommandError::failed(format!("the quickstart's own command is wrong: {e}")))?;
        dispatch(&settings, &cli.command)?;
    }
    serve(&settings, args, sandbox)?;
    ui::note(format!(
        "\nThe example app's repository is {}: cd there and try graven config, rollback, diff, releases and run.",
        dir.display()
    ));
    Ok(())
}

/// The commands the quickstart runs after `build`, in order.
const DEMONSTRATION: &[&[&str]] = &[
    &["builds"],
    &["config", "set", "GREETING=Hello from graven", "--env", "staging"],
    &["release", "--env", "staging"],
    &["releases", "--env", "staging"],
];

/// Runs the staging release as `graven run` does, fetches its page, shows
/// `graven status`, and serves until Ctrl-C (or stops, with `--no-serve`).
fn serve(
    settings: &Settings,
    args: &QuickstartArgs,
    sandbox: Option<graven::sandbox::Sandbox>,
) -> Result<(), CommandError> {
    let port = args.port;
    ui::note(format!("\n==> graven run --env staging --port {port}"));
    let ledger = settings.ledger()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let options = RunnerOptions {
        app: settings.app()?,
        env: "staging".to_owned(),
        formation: graven::model::Formation::default(),
        port: Some(port),
        host: host(),
        mount: sandbox.map(|sandbox| graven::run::AppMount::new(sandbox, &settings.home)),
        // The example, on the user's own machine: as whoever runs it.
        user: None,
    };
    let stop = crate::commands::run::stop_on_signals()?;
    let print = Arc::new(|line: &str| ui::out(line));
    let mut runner = Runner::new(ledger, store, &settings.home, options, print).map_err(CommandError::failed)?;
    std::thread::scope(|scope| {
        let running = scope.spawn(|| runner.run(&stop));
        let demonstration = demonstrate(settings, port, &running);
        if args.no_serve || demonstration.is_err() {
            stop.store(true, Ordering::Relaxed);
        } else {
            ui::note(format!("\nserving http://localhost:{port}/ until Ctrl-C"));
        }
        let ran = running
            .join()
            .unwrap_or_else(|_| Err(graven::run::RunError::Proxy { port, why: "the runner panicked".to_owned() }));
        ran.map_err(|e| CommandError::failed(e).hint("port busy? run the quickstart with --port and a free port"))?;
        demonstration
    })
}

/// Waits for the page, shows it and the status.
fn demonstrate<T>(
    settings: &Settings,
    port: u16,
    running: &std::thread::ScopedJoinHandle<'_, T>,
) -> Result<(), CommandError> {
    let start = std::time::Instant::now();
    let page = loop {
        if running.is_finished() {
            return Err(CommandError::failed("graven run stopped before the app served its page"));
        }
        if let Some((200, page)) = http_get(port, "/?format=text", std::time::Duration::from_secs(5)) {
            break page;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            return Err(CommandError::failed(format!("the example app did not answer on port {port} within 60 s")));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    ui::note(format!("\n==> curl http://localhost:{port}/?format=text"));
    ui::out(page.trim_end());
    wait_until_recorded(settings)?;
    ui::note("\n==> graven status --env staging");
    let cli = Cli::try_parse_from(["graven", "status", "--env", "staging"])
        .map_err(|e| CommandError::failed(format!("the quickstart's own command is wrong: {e}")))?;
    dispatch(settings, &cli.command)?;
    Ok(())
}

/// The runner records that a release runs just after its proxy starts
/// serving it, so the page can come a moment before the record: wait for
/// the record (a few seconds at most; status then tells what is wrong), so
/// that status shows what the page did.
fn wait_until_recorded(settings: &Settings) -> Result<(), CommandError> {
    let app = settings.app()?;
    let ledger = settings.ledger()?;
    let ledger = &*ledger;
    let Some(desired) = ledger.current_release(&app, "staging").map_err(CommandError::failed)? else { return Ok(()) };
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(5) {
        let states = ledger.run_states(&app, "staging").map_err(CommandError::failed)?;
        if states.first().and_then(|state| state.running.as_ref()).is_some_and(|running| running.id == desired.id) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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

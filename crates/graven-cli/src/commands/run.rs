//! `graven run`: the supervisor that runs an environment's current release.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;
use graven::run::process::kill_leftovers;
use graven::run::runner::{RunLock, Runner, RunnerOptions, groups_file};

use crate::commands::env::EnvArg;
use crate::error::CommandError;
use crate::settings::{Settings, host};
use crate::ui;

/// Run the environment's current release, and keep it running
///
/// A foreground supervisor: runs the processes of the environment's newest
/// release from its read-only tree, restarts any that exit (with backoff),
/// and switches to every new release (deploy, config change, rollback,
/// promote) within a second, without downtime: it listens on the public
/// port and proxies to the web processes, starts the new release's
/// processes, waits until they are healthy, switches, then stops the old
/// ones once their connections drain. A release whose release phase fails,
/// or whose web processes never become healthy, is not switched to: the old
/// one keeps serving, and graven status shows why. Stops on Ctrl-C or
/// SIGTERM, stopping every process it started.
///
/// How many processes of each type run is the environment's formation,
/// set with graven scale and applied live; --formation overrides it for
/// this runner.
///
/// Run as root, graven runs the processes as the user that --user or the
/// release's graven.toml [run] user names (its uid, its groups, no
/// capabilities), with a HOME and TMPDIR of its own; without one they run
/// as root, and graven run says so once.
///
/// Needs only the ledger and the store (--home, --app), not the repository.
///
/// Examples:
///   graven run --env production
///   graven run --env production --user www-data
///   graven run --env staging --formation web=2,worker=1 --port 9000
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    env: EnvArg,

    /// Process counts for this runner, over the environment's formation
    /// (graven scale), type by type, e.g. web=2,worker=1 [default: the
    /// environment's formation; one of each type it does not name]
    #[arg(long, value_name = "TYPE=N,...")]
    formation: Option<String>,

    /// The public port [default: graven.toml's [run] port, else 8080]
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,

    /// Run processes with their tree where it lies, not read-only at /app
    ///
    /// For machines that cannot make namespaces: processes then run in the
    /// tree's own directory, and one running as root can change it and the
    /// store behind it. `graven status` says so.
    #[arg(long)]
    no_sandbox: bool,

    /// Run every process as this user (a name or a uid), over the
    /// release's [run] user; needs graven to run as root
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

/// The user `--user` names, checked before anything starts.
pub(crate) fn user_arg(name: Option<&str>, no_sandbox: bool) -> Result<Option<graven::user::RunAs>, CommandError> {
    let Some(name) = name else { return Ok(None) };
    if no_sandbox {
        return Err(CommandError::bad_input("--user needs the sandbox, which gives the user its own HOME and TMPDIR")
            .hint("leave out --no-sandbox, or --user"));
    }
    graven::user::RunAs::lookup(name).map(Some).map_err(|e| match e {
        graven::user::UserError::NoSuchUser { .. } => CommandError::bad_input(format!("--user: {e}"))
            .hint(format!("create it (useradd --system --no-create-home {name}), or name one that exists")),
        graven::user::UserError::NotRoot { .. } => CommandError::bad_input(format!("--user: {e}"))
            .hint("run graven as root to run processes as another user, or leave out --user"),
        graven::user::UserError::Missing { .. } => CommandError::failed(format!("--user: {e}")),
    })
}

/// Warns, once, when root's processes would run as root: no `--user`, and
/// the current release names no `[run] user`.
fn warn_if_root(
    user: Option<&graven::user::RunAs>,
    ledger: &dyn graven::ledger::Ledger,
    store: &dyn graven::store::Store,
    app: &str,
    env: &str,
) {
    if user.is_some() || !rustix::process::geteuid().is_root() {
        return;
    }
    let named = ledger
        .current_release(app, env)
        .ok()
        .flatten()
        .and_then(|release| graven::run::artifact_of(store, &release).ok())
        .is_some_and(|artifact| artifact.run.user.is_some());
    if !named {
        ui::note(
            "warning: graven runs as root, and neither --user nor the release's [run] user names a user: \
             the app's processes run as root (with /app read-only); name one, like --user www-data",
        );
    }
}

pub(crate) fn cmd_run(settings: &Settings, args: &RunArgs) -> Result<(), CommandError> {
    let env = args.env.name()?;
    let formation = match &args.formation {
        Some(text) => graven::model::Formation::parse([text.as_str()]).map_err(|e| {
            CommandError::bad_input(format!("--formation: {e}")).hint("write it like --formation web=2,worker=1")
        })?,
        None => graven::model::Formation::default(),
    };
    let user = user_arg(args.user.as_deref(), args.no_sandbox)?;
    let app = settings.app()?;
    let ledger = settings.ledger()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let _lock = RunLock::acquire(&settings.home, &app, env).map_err(|e| match e {
        graven::run::RunError::AlreadyRunning { .. } => {
            CommandError::bad_input(e).hint("stop that runner first; one runner per app, environment and home")
        }
        other => CommandError::failed(other),
    })?;
    // A runner killed outright leaves its processes running: stop them.
    match kill_leftovers(&groups_file(&settings.home, &app, env)) {
        Ok(killed) if !killed.is_empty() => {
            ui::note(format!(
                "stopped {} left by a runner that did not stop cleanly",
                ui::count_of(killed.len() as u64, "process group")
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(CommandError::failed(e)),
    }

    let stop = stop_on_signals()?;
    let mount = if args.no_sandbox {
        None
    } else {
        let sandbox =
            graven::sandbox::Sandbox::new().map_err(|e| crate::error::sandbox_error(e, "graven run --no-sandbox"))?;
        Some(graven::run::AppMount::new(sandbox, &settings.home))
    };
    warn_if_root(user.as_ref(), ledger, store, &app, env);
    let options = RunnerOptions { app, env: env.to_owned(), formation, port: args.port, host: host(), mount, user };
    let print = Arc::new(|line: &str| ui::out(line));
    let mut runner = Runner::new(ledger, store, &settings.home, options, print).map_err(CommandError::failed)?;
    runner.run(&stop).map_err(|e| match e {
        graven::run::RunError::Proxy { .. } => CommandError::bad_input(e)
            .hint("stop whatever listens there, or give another port with --port or graven.toml [run] port"),
        other => CommandError::failed(other),
    })
}

/// A flag that SIGINT and SIGTERM set: the runner stops when it is.
pub(crate) fn stop_on_signals() -> Result<Arc<AtomicBool>, CommandError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| CommandError::failed(format!("could not handle signal {signal}: {e}")))?;
    }
    Ok(stop)
}

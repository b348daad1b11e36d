//! `graven logs`: what an environment's processes printed under `graven run`,
//! the last lines or as they come.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use graven::run::logs;

use crate::commands::env::EnvArg;
use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Show what an environment's processes printed
///
/// Prints the last lines the processes of the environment printed under
/// graven run, oldest first, across rotated log files, each as
/// `HH:MM:SS web.1 | text` (times in UTC). With PROCESS, only the lines of
/// that process type (web: web.1, web.2 …) or of that process (web.1).
/// With --follow, keeps printing lines as they are written, across log
/// rotations, until interrupted; if there is no log yet, waits for one.
///
/// Examples:
///   graven logs --env production
///   graven logs --env production -n 20 web
///   graven logs --env staging -f worker.1
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    env: EnvArg,

    /// Keep printing lines as they are written, until interrupted
    #[arg(long, short = 'f')]
    follow: bool,

    /// How many of the last lines to print
    #[arg(long = "lines", short = 'n', value_name = "N", default_value_t = 100)]
    lines: usize,

    /// Only this process type's lines (web), or this process's (web.1)
    #[arg(value_name = "PROCESS")]
    process: Option<String>,
}

pub(crate) fn cmd_logs(settings: &Settings, args: &LogsArgs) -> Result<(), CommandError> {
    let env = args.env.name()?;
    let process = args.process.as_deref();
    if let Some(process) = process {
        check_process(process)?;
    }
    let app = settings.app()?;
    let dir = settings.home.run_dir(&app, env);
    if !logs::has_logs(&dir) {
        let note = format!("no logs for {env} yet: graven run --env {env} writes them");
        if !args.follow {
            ui::note(note);
            return Ok(());
        }
        ui::note(format!("{note}; waiting for them"));
    }
    if !args.follow {
        let lines = logs::tail(&dir, args.lines, process).map_err(CommandError::failed)?;
        if let (Some(process), true, true) = (process, lines.is_empty(), args.lines > 0) {
            ui::note(format!("no lines of {process} in the logs of {env}"));
        }
        for line in lines {
            if print(&line).is_err() {
                break;
            }
        }
        return Ok(());
    }
    // Ends when stdout closes (`graven logs -f | head`), or at Ctrl-C, which
    // ends the process: nothing needs cleaning up.
    let stop = AtomicBool::new(false);
    logs::follow(&dir, args.lines, process, &stop, |line| {
        if print(line).is_err() {
            stop.store(true, Ordering::Relaxed);
        }
    })
    .map_err(CommandError::failed)
}

/// Prints a log line on stdout, flushed at once. Unlike [`ui::out`], it
/// reports a closed stdout, so that following stops when the reader has gone.
fn print(line: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// A process type (`web`) or a process (`web.1`): Procfile names are
/// a-z, 0-9, '_' and '-'.
fn check_process(process: &str) -> Result<(), CommandError> {
    let (name, number) = process.split_once('.').map_or((process, None), |(name, n)| (name, Some(n)));
    let name_ok =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    let number_ok = number.is_none_or(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if name_ok && number_ok {
        return Ok(());
    }
    Err(CommandError::bad_input(format!("'{process}' is not a process type or a process"))
        .hint("give a process type of the Procfile, like web, or one process, like web.1"))
}

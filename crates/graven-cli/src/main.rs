//! `graven`: parse the command line, run the command, map the outcome to an
//! exit code (0 ok, 1 failed, 2 bad usage or input).

mod commands;
mod error;
mod output;
mod settings;
mod ui;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // A file-size limit (`ulimit -f`) must be a write error that graven
    // reports, naming the file, not a signal that kills it half-way: with a
    // handler installed, the write fails with EFBIG instead. Children get
    // the default back when they exec.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match commands::run(&cli) {
        Ok(code) => code,
        Err(error) => {
            eprint!("{}", error.render());
            error.exit_code()
        }
    }
}

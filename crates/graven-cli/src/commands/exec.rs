//! `graven exec`: a one-off admin process in a release's tree and environment.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitCode;

use clap::Args;
use graven::release::ReleaseError;

use crate::commands::env::EnvArg;
use crate::commands::release::parse_version;
use crate::error::CommandError;
use crate::settings::Settings;

/// Run a one-off command in a release's tree and environment
///
/// Runs CMD with the release's read-only tree as its working directory and
/// exactly the environment its processes get: the release's config,
/// GRAVEN_APP, GRAVEN_ENV, GRAVEN_RELEASE, GRAVEN_COMMIT, GRAVEN_ARTIFACT,
/// GRAVEN_PROCESS=run.1, PATH and a private TMPDIR; nothing else of your
/// shell's. For migrations and consoles. Its exit code is graven's.
///
/// Examples:
///   graven exec --env production -- python3 manage.py migrate
///   graven exec --env staging --release v41 -- sh -c 'echo $GREETING'
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    env: EnvArg,

    /// The release to run in [default: the current one]
    #[arg(long, value_name = "vN")]
    release: Option<String>,

    /// The command and its arguments
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub(crate) fn cmd_exec(settings: &Settings, args: &ExecArgs) -> Result<ExitCode, CommandError> {
    let env = args.env.name()?;
    let app = settings.app()?;
    let ledger = settings.ledger()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let release = match &args.release {
        Some(version) => {
            let number = parse_version(version)?;
            ledger
                .release(&app, env, number)
                .map_err(CommandError::failed)?
                .ok_or(ReleaseError::UnknownRelease { env: env.to_owned(), number })?
        }
        None => ledger
            .current_release(&app, env)
            .map_err(CommandError::failed)?
            .ok_or_else(|| ReleaseError::NoRelease { env: env.to_owned() })?,
    };
    let config = ledger.config_version(&release.config).map_err(CommandError::failed)?.ok_or_else(|| {
        CommandError::failed(format!("the config version of {} is missing from the ledger", release.version()))
            .hint("run graven verify --ledger")
    })?;
    let artifact = graven::run::artifact_of(store, &release).map_err(crate::error::run_error)?;
    let tree = graven::run::materialise(store, &settings.home, &release, &artifact).map_err(crate::error::run_error)?;
    let tmp = tempfile::Builder::new()
        .prefix("graven-exec-")
        .tempdir()
        .map_err(|e| CommandError::failed(format!("could not create a TMPDIR for the command: {e}")))?;
    let mut environment = graven::run::process_environment(&release, &config, "run.1");
    environment.insert("TMPDIR".to_owned(), tmp.path().as_os_str().to_owned());
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let status = std::process::Command::new(program)
        .args(rest)
        .current_dir(&tree.path)
        .env_clear()
        .envs(&environment)
        .status()
        .map_err(|e| {
            let program = program.to_string_lossy();
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    CommandError::bad_input(format!("could not run {program}: {e}"))
                        .hint("the command runs with the release's PATH; give a program that is on it, or its path")
                }
                _ => CommandError::failed(format!("could not run {program}: {}", graven::run::explain_spawn_error(e))),
            }
        })?;
    // The command's own outcome is graven's: its exit code, or 128 + the
    // signal that ended it, as a shell reports it.
    let code = status.code().or_else(|| status.signal().map(|signal| 128 + signal)).unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

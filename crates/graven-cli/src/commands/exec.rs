//! `graven exec`: a one-off admin process in a release's tree and environment.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitCode;

use clap::Args;

use crate::commands::env::EnvArg;
use crate::error::CommandError;
use crate::settings::Settings;

/// Run a one-off command in a release's tree and environment
///
/// Runs CMD with the release's read-only tree as its working directory and
/// exactly the environment its processes get: the release's config,
/// GRAVEN_APP, GRAVEN_ENV, GRAVEN_RELEASE, GRAVEN_COMMIT, GRAVEN_ARTIFACT,
/// GRAVEN_PROCESS=run.1, PATH, the environment's HOME and a private TMPDIR;
/// nothing else of your shell's. For migrations and consoles. Its exit code
/// is graven's.
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

    /// Run it in the tree where it lies, not read-only at /app
    ///
    /// For machines that cannot make namespaces: the command can then
    /// change the tree (and, as root, the store behind it).
    #[arg(long)]
    no_sandbox: bool,

    /// Run it as this user (a name or a uid), over the release's [run]
    /// user; needs graven to run as root
    #[arg(long, value_name = "NAME")]
    user: Option<String>,

    /// The command and its arguments
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub(crate) fn cmd_exec(settings: &Settings, args: &ExecArgs) -> Result<ExitCode, CommandError> {
    let env = args.env.name()?;
    let flag_user = crate::commands::run::user_arg(args.user.as_deref(), args.no_sandbox)?;
    let app = settings.app()?;
    let ledger = settings.ledger()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let (release, config) = crate::commands::release::release_and_config(ledger, &app, env, args.release.as_deref())?;
    let artifact = graven::run::artifact_of(store, &release).map_err(crate::error::run_error)?;
    // Without the sandbox there is no HOME of its own to give a user.
    let named = artifact.run.user.as_deref().filter(|_| !args.no_sandbox);
    let user = graven::user::RunAs::of_release(flag_user.as_ref(), named).map_err(|e| {
        CommandError::failed(format!("{}'s [run] user: {e}", release.version()))
            .hint("create that user on this machine, or give another with --user")
    })?;
    let tree = graven::run::materialise(store, &settings.home, &release, &artifact).map_err(crate::error::run_error)?;
    let tmp = tempfile::Builder::new()
        .prefix("graven-exec-")
        .tempdir()
        .map_err(|e| CommandError::failed(format!("could not create a TMPDIR for the command: {e}")))?;
    let mut environment = graven::run::process_environment(&release, &config, "run.1");
    environment.insert("TMPDIR".to_owned(), tmp.path().as_os_str().to_owned());
    // The environment's processes' HOME, as the runner gives it.
    let home = graven::run::process_home(&settings.home, &app, env)
        .map_err(|e| CommandError::failed(format!("could not create the processes' HOME: {e}")))?;
    environment.insert("HOME".to_owned(), home.into_os_string());
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let not_found = |e: &dyn std::fmt::Display| {
        CommandError::bad_input(format!("could not run {}: {e}", program.to_string_lossy()))
            .hint("the command runs with the release's PATH; give a program that is on it, or its path")
    };
    let mut command = if args.no_sandbox {
        let mut command = std::process::Command::new(program);
        command.args(rest).current_dir(&tree.path);
        command
    } else {
        // Not checked first: that would cost as much as the start itself.
        let sandbox = graven::sandbox::Sandbox::find()
            .map_err(|e| crate::error::sandbox_error(e, "graven exec --no-sandbox -- CMD"))?;
        // bwrap would say it could not find the program only as its own
        // exit code: look first, as the shell would, from /app.
        if !is_runnable(program, environment.get("PATH"), &tree.path) {
            return Err(not_found(&"No such file or directory (os error 2)"));
        }
        let mount = graven::run::AppMount::new(sandbox, &settings.home);
        let mount = match &user {
            Some(user) => {
                let home = environment.get("HOME").map(std::path::PathBuf::from).unwrap_or_default();
                mount.as_user(user, &[&home, tmp.path()]).map_err(|e| {
                    CommandError::failed(format!("could not give {} its HOME and TMPDIR: {e}", user.name))
                })?
            }
            None => mount,
        };
        mount.program(program, rest, &tree.path)
    };
    let status = command.env_clear().envs(&environment).status().map_err(|e| {
        let program = program.to_string_lossy();
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => not_found(&e),
            _ => CommandError::failed(format!(
                "could not run {program}: {}",
                graven::error_chain(&graven::run::explain_spawn_error(e))
            )),
        }
    })?;
    // The command's own outcome is graven's: its exit code, or 128 + the
    // signal that ended it, as a shell reports it.
    let code = status.code().or_else(|| status.signal().map(|signal| 128 + signal)).unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Whether `program` names an executable file: a path (relative to the
/// tree, which is the working directory), or a name on `path`, as the
/// command will see them with the tree at /app.
fn is_runnable(program: &std::ffi::OsStr, path: Option<&OsString>, tree: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    // Where a path inside the sandbox is on this machine.
    let on_host = |inside: &std::path::Path| match inside.strip_prefix(graven::sandbox::APP) {
        Ok(rest) => tree.join(rest),
        Err(_) => tree.join(inside),
    };
    let executable = |inside: &std::path::Path| {
        std::fs::metadata(on_host(inside)).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    let program = std::path::Path::new(program);
    if program.components().count() > 1 || program.is_absolute() {
        return executable(program);
    }
    path.is_some_and(|path| std::env::split_paths(path).any(|dir| executable(&dir.join(program))))
}

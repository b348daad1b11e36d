//! `graven config`: show and change an environment's config.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use graven::release::ConfigChange;

use crate::commands::env::EnvArg;
use crate::commands::wait::WaitArgs;
use crate::error::CommandError;
use crate::output::ConfigJson;
use crate::settings::Settings;
use crate::ui;

/// Show or change an environment's config
///
/// Config is the environment's variables, kept apart from the code: never in
/// an artifact, given to processes in their environment. Every change makes
/// one new, immutable config version and, if the environment has a release,
/// a new release (kind "config") with the current artifact and the new
/// config. Secret values are masked (••••••) in every output unless --reveal.
///
/// A secret is given as a bare KEY with --secret: its value is read from
/// standard input (typed without echo on a terminal, one line per KEY from
/// a pipe), so that it never appears on a command line, in shell history or
/// in /proc/PID/cmdline.
///
/// Examples:
///   graven config --env production
///   graven config set --secret DATABASE_URL --env production
///   printf '%s\n' "$TOKEN" | graven config set --secret API_TOKEN --env production
///   graven config set DEBUG=0 --env staging
///   graven config unset DEBUG --env staging
///   graven config import production.env --env production
#[derive(Args, Debug)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = true)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: Option<ConfigCommand>,

    #[command(flatten)]
    env: EnvArg,

    /// Show secret values
    #[arg(long)]
    reveal: bool,

    /// Print the config as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Set variables: one new config version for all of them
    Set(SetArgs),
    /// Remove variables: one new config version for all of them
    Unset(UnsetArgs),
    /// Set the variables of a dotenv file: one new config version
    Import(ImportArgs),
}

#[derive(Args, Debug)]
struct SetArgs {
    /// KEY=VALUE pairs; with --secret, bare KEYs whose values are read from
    /// standard input
    #[arg(required = true, value_name = "KEY=VALUE|KEY")]
    pairs: Vec<String>,
    /// Mark these variables secret: masked in all output, and refused if an
    /// artifact contains their value. A bare KEY reads its value from
    /// standard input
    #[arg(long)]
    secret: bool,
    #[command(flatten)]
    env: EnvArg,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Args, Debug)]
struct UnsetArgs {
    /// Keys to remove
    #[arg(required = true, value_name = "KEY")]
    keys: Vec<String>,
    #[command(flatten)]
    env: EnvArg,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// A dotenv file: KEY=VALUE lines, comments, quotes, `export` prefixes
    file: PathBuf,
    /// Mark every imported variable secret
    #[arg(long)]
    secret: bool,
    #[command(flatten)]
    env: EnvArg,
    #[command(flatten)]
    wait: WaitArgs,
}

pub(crate) fn cmd_config(settings: &Settings, args: &ConfigArgs) -> Result<(), CommandError> {
    match &args.command {
        None => show(settings, args),
        Some(ConfigCommand::Set(set)) => {
            let pairs = pairs_of(set)?;
            change(settings, &set.env, &ConfigChange { set: pairs, unset: Vec::new(), secret: set.secret }, set.wait)
        }
        Some(ConfigCommand::Unset(unset)) => {
            let change_set = ConfigChange { set: Vec::new(), unset: unset.keys.clone(), secret: false };
            change(settings, &unset.env, &change_set, unset.wait)
        }
        Some(ConfigCommand::Import(import)) => {
            let text = std::fs::read_to_string(&import.file).map_err(|e| {
                CommandError::bad_input(format!("cannot read {}: {e}", import.file.display()))
                    .hint("give the path of a dotenv file (KEY=VALUE lines)")
            })?;
            let pairs = graven::release::dotenv::parse(&text).map_err(|e| {
                CommandError::bad_input(format!("{}: {e}", import.file.display()))
                    .hint("fix the file and import it again")
            })?;
            if pairs.is_empty() {
                return Err(CommandError::bad_input(format!("{} sets no variables", import.file.display())));
            }
            change(
                settings,
                &import.env,
                &ConfigChange { set: pairs, unset: Vec::new(), secret: import.secret },
                import.wait,
            )
        }
    }
}

/// The variables `config set` was given. No error repeats an argument that
/// could be a value: a bare word may be a secret typed in the wrong place.
fn pairs_of(set: &SetArgs) -> Result<Vec<(String, String)>, CommandError> {
    let mut pairs = Vec::new();
    for (index, pair) in set.pairs.iter().enumerate() {
        let position = index + 1;
        if let Some((key, value)) = pair.split_once('=') {
            pairs.push((key.to_owned(), value.to_owned()));
            continue;
        }
        if !set.secret {
            return Err(CommandError::bad_input(format!(
                "argument {position} of config set has no '=' (not shown: it may be a value)"
            ))
            .hint("write KEY=VALUE; for a secret, graven config set --secret KEY reads the value from standard input; to remove a variable, graven config unset KEY"));
        }
        if !graven::app::is_variable_name(pair) {
            return Err(CommandError::bad_input(format!(
                "argument {position} of config set --secret is not a config key (not shown: it may be a value)"
            ))
            .hint(
                "give the key alone, graven config set --secret KEY, and type the value when asked (or pipe it in)",
            ));
        }
        pairs.push((pair.clone(), read_value(pair)?));
    }
    Ok(pairs)
}

/// Reads the value of `key` from standard input: one line, typed without
/// echo on a terminal.
fn read_value(key: &str) -> Result<String, CommandError> {
    let stdin = std::io::stdin();
    let failed =
        |e: std::io::Error| CommandError::failed(format!("could not read the value of {key} from standard input: {e}"));
    let mut line = String::new();
    let read = if rustix::termios::isatty(&stdin) {
        ui::prompt(&format!("value of {key} (not shown): "));
        let saved = rustix::termios::tcgetattr(&stdin).map_err(|e| failed(e.into()))?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)
            .map_err(|e| failed(e.into()))?;
        let read = stdin.read_line(&mut line);
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
        ui::note("");
        read
    } else {
        stdin.read_line(&mut line)
    };
    if read.map_err(failed)? == 0 {
        return Err(CommandError::bad_input(format!("standard input ended before the value of {key}")).hint(format!(
            "pipe one line per bare key, e.g. printf '%s\\n' \"$VALUE\" | graven config set --secret {key}"
        )));
    }
    let value = line.strip_suffix('\n').unwrap_or(&line);
    Ok(value.strip_suffix('\r').unwrap_or(value).to_owned())
}

fn show(settings: &Settings, args: &ConfigArgs) -> Result<(), CommandError> {
    let env = args.env.name()?;
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let current = ledger.current_config(&app, env).map_err(CommandError::failed)?;
    if args.json {
        ui::out_json(&ConfigJson::new(env, current.as_ref(), args.reveal));
        return Ok(());
    }
    let Some(config) = current else {
        ui::note(format!(
            "environment '{env}' has no config yet; set some with graven config set KEY=VALUE --env {env}"
        ));
        return Ok(());
    };
    if config.vars.is_empty() {
        ui::note(format!("environment '{env}' has an empty config ({})", config.id.short()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = config
        .vars
        .iter()
        .map(|(key, value)| {
            let secret = if config.secret.contains(key) { "  (secret)" } else { "" };
            // One line per variable: line breaks in a value are shown escaped.
            let value = graven::release::config::shown(key, value, &config.secret, args.reveal).replace('\n', "\\n");
            vec![key.clone(), format!("{value}{secret}")]
        })
        .collect();
    ui::out(ui::table(&rows));
    Ok(())
}

fn change(settings: &Settings, env: &EnvArg, change: &ConfigChange, wait: WaitArgs) -> Result<(), CommandError> {
    let env = env.name()?;
    let open = settings.open_stage()?;
    let (app, stage) = (&open.app, open.stage());
    let outcome = stage.change_config(env, change)?;
    if outcome.created_env {
        ui::note(format!("created environment '{env}'"));
    }
    let config = outcome.config.expect("a config change makes a config version");
    ui::out(format!("{} in {env}: config {}", config.description, config.id.short()));
    if let Some(release) = outcome.release {
        ui::out(format!("released {} {} in {env} ({})", app, release.version(), release.description));
        wait.wait_for(settings, &*open.ledger, app, env, &release, false)
    } else {
        ui::note(format!("{env} has no release yet: the config applies from the first graven release --env {env}"));
        Ok(())
    }
}

//! `graven diff`: what changed between two releases — commits, files,
//! config keys — and whether a release phase ran between them.

use clap::Args;
use graven::git::{LogEntry, Repo};
use graven::ledger::Ledger;
use graven::model::{ConfigVersion, Release};
use graven::release::diff::{ReleaseDiff, diff_releases};
use graven::release::{MASK, ReleaseError};

use crate::commands::env::EnvArg;
use crate::commands::release::parse_version;
use crate::error::CommandError;
use crate::output::ReleaseJson;
use crate::settings::Settings;
use crate::ui;

/// How many paths, keys or commits each section lists before "… and N more".
const LISTED: usize = 50;

/// Show what changed between two releases.
///
/// Shows the two releases, the commits between them (git log, when run
/// inside the app's repository), the files their artifacts differ in, the
/// config keys that were added, removed or changed (secret values masked
/// unless --reveal), and the releases between them whose release phase
/// (the `release` process type: migrations) ran, as the runners recorded
/// it, so a rollback across a migration is visible.
///
/// A release is vN in the environment given by --env, or ENV:vN in another.
///
/// Examples:
///   graven diff v41 v42 --env production
///   graven diff staging:v17 production:v42
///   graven diff v40 staging:v17 --env production --json
// Verbatim, so that each example keeps its own line; the summary is given
// apart, without the period, as clap gives it for the other commands.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment, about = "Show what changed between two releases")]
pub(crate) struct DiffArgs {
    /// The release to compare from: v41 (in --env) or ENV:v41
    #[arg(value_name = "FROM")]
    from: String,

    /// The release to compare to: v42 (in --env) or ENV:v42
    #[arg(value_name = "TO")]
    to: String,

    #[command(flatten)]
    env: EnvArg,

    /// Show secret config values
    #[arg(long)]
    reveal: bool,

    /// Print the comparison as JSON on stdout: every path, key and commit
    #[arg(long)]
    json: bool,
}

/// A release named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReleaseRef {
    env: String,
    number: u64,
}

/// Parses `v42`, `42` (in `--env`) or `production:v42`.
fn parse_release_ref(text: &str, env: &EnvArg) -> Result<ReleaseRef, CommandError> {
    let Some((env_name, version)) = text.split_once(':') else {
        let number = parse_version(text)?;
        return Ok(ReleaseRef { env: env.name()?.to_owned(), number });
    };
    graven::release::check_env_name(env_name).map_err(|e| {
        CommandError::bad_input(format!("'{text}': {e}")).hint("write a release as v42, or as ENV:v42 (production:v42)")
    })?;
    let number = parse_version(version).map_err(|_| {
        CommandError::bad_input(format!("'{text}' does not end in a release version"))
            .hint("write a release as v42, or as ENV:v42 (production:v42)")
    })?;
    Ok(ReleaseRef { env: env_name.to_owned(), number })
}

/// Looks a release up; an unknown environment or number is bad input.
fn find_release(ledger: &dyn Ledger, app: &str, reference: &ReleaseRef) -> Result<Release, CommandError> {
    let ReleaseRef { env, number } = reference;
    if let Some(release) = ledger.release(app, env, *number).map_err(CommandError::failed)? {
        return Ok(release);
    }
    crate::commands::env::require_existing(ledger, app, env)?;
    Err(CommandError::bad_input(ReleaseError::UnknownRelease { env: env.clone(), number: *number })
        .hint(format!("`graven releases --env {env}` lists its releases")))
}

/// The commits between the two releases' commits.
enum Commits {
    /// Both releases run the same commit.
    Same,
    /// `git log from..to` (added) and `git log to..from` (removed).
    Range { added: Vec<LogEntry>, removed: Vec<LogEntry> },
    /// Not known here, and why.
    Unavailable(String),
}

fn commits_between(repo: Option<&Repo>, from: &str, to: &str) -> Commits {
    if from == to {
        return Commits::Same;
    }
    let Some(repo) = repo else {
        return Commits::Unavailable("run graven diff inside the app's repository to list them".to_owned());
    };
    match (repo.log(from, to), repo.log(to, from)) {
        (Ok(added), Ok(removed)) => Commits::Range { added, removed },
        (Err(_), _) | (_, Err(_)) => {
            Commits::Unavailable("this repository does not have both commits; git fetch may bring them".to_owned())
        }
    }
}

pub(crate) fn cmd_diff(settings: &Settings, args: &DiffArgs) -> Result<(), CommandError> {
    let from_ref = parse_release_ref(&args.from, &args.env)?;
    let to_ref = parse_release_ref(&args.to, &args.env)?;
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let from = find_release(ledger, &app, &from_ref)?;
    let to = find_release(ledger, &app, &to_ref)?;
    let diff = diff_releases(ledger, store, &from, &to)?;
    let commits = commits_between(settings.repo.as_ref(), &from.commit, &to.commit);
    let is_current = |release: &Release| -> Result<bool, CommandError> {
        let newest = ledger.current_release(&app, &release.env).map_err(CommandError::failed)?;
        Ok(newest.is_some_and(|r| r.number == release.number))
    };
    let (from_current, to_current) = (is_current(&from)?, is_current(&to)?);
    if args.json {
        ui::out_json(&DiffJson::new(&from, from_current, &to, to_current, &diff, &commits));
        return Ok(());
    }
    let mut lines = vec![ui::table(&[release_row("from", &from, from_current), release_row("to", &to, to_current)])];
    lines.push(String::new());
    commit_lines(&commits, &from, &to, &mut lines);
    file_lines(&diff, &from, &to, &mut lines);
    config_lines(&diff, args.reveal, &mut lines);
    lines.push(release_phase_line(&diff, &from, &to));
    ui::out(lines.join("\n"));
    Ok(())
}

fn release_row(label: &str, release: &Release, current: bool) -> Vec<String> {
    vec![
        label.to_owned(),
        format!("{} of {}{}", release.version(), release.env, if current { " (current)" } else { "" }),
        format!("commit {}", ui::short_commit(&release.commit)),
        format!("artifact {}", release.artifact.short()),
        format!("config {}", release.config.short()),
    ]
}

/// Pushes `items`, at most [`LISTED`] of them, then "… and N more".
fn push_listed(items: impl ExactSizeIterator<Item = String>, lines: &mut Vec<String>) {
    let total = items.len();
    lines.extend(items.take(LISTED).map(|item| format!("  {item}")));
    if total > LISTED {
        lines.push(format!("  … and {} more", total - LISTED));
    }
}

fn commit_lines(commits: &Commits, from: &Release, to: &Release, lines: &mut Vec<String>) {
    let range = format!("{}..{}", ui::short_commit(&from.commit), ui::short_commit(&to.commit));
    match commits {
        Commits::Same => lines.push(format!("commits: same commit {}", ui::short_commit(&to.commit))),
        Commits::Unavailable(why) => lines.push(format!("commits: {range}, not listed: {why}")),
        Commits::Range { added, removed } => {
            lines.push(format!("commits: {} added, {} removed ({range})", added.len(), removed.len()));
            let show = |sign: char| {
                move |entry: &LogEntry| format!("{sign} {} {}", ui::short_commit(&entry.commit), entry.subject)
            };
            push_listed(added.iter().map(show('+')), lines);
            push_listed(removed.iter().map(show('-')), lines);
        }
    }
}

fn file_lines(diff: &ReleaseDiff, from: &Release, to: &Release, lines: &mut Vec<String>) {
    let files = &diff.files;
    if from.artifact == to.artifact {
        lines.push("files: same artifact".to_owned());
        return;
    }
    lines.push(format!(
        "files: {} added, {} removed, {} changed",
        ui::count(files.added.len() as u64),
        ui::count(files.removed.len() as u64),
        ui::count(files.changed.len() as u64)
    ));
    push_listed(files.added.iter().map(|p| format!("+ {p}")), lines);
    push_listed(files.removed.iter().map(|p| format!("- {p}")), lines);
    push_listed(files.changed.iter().map(|p| format!("~ {p}")), lines);
}

/// `value`, or the mask if `secret` and not `reveal`.
fn shown(value: &str, secret: bool, reveal: bool) -> &str {
    if secret && !reveal { MASK } else { value }
}

fn config_lines(diff: &ReleaseDiff, reveal: bool, lines: &mut Vec<String>) {
    let (old, new) = (&diff.from_config, &diff.to_config);
    if old.id == new.id {
        lines.push("config: same config version".to_owned());
        return;
    }
    let config = &diff.config;
    lines.push(format!(
        "config: {} added, {} removed, {} changed",
        config.added.len(),
        config.removed.len(),
        config.changed.len()
    ));
    let value = |version: &ConfigVersion, key: &str, secret: bool| {
        shown(version.vars.get(key).map_or("", String::as_str), secret, reveal).to_owned()
    };
    push_listed(
        config.added.iter().map(|key| format!("+ {key}: {}", value(new, key, new.secret.contains(key)))),
        lines,
    );
    push_listed(
        config.removed.iter().map(|key| format!("- {key}: {}", value(old, key, old.secret.contains(key)))),
        lines,
    );
    push_listed(
        config.changed.iter().map(|key| {
            let (was_secret, is_secret) = (old.secret.contains(key), new.secret.contains(key));
            // A value that became secret was probably secret before, too.
            let secret = was_secret || is_secret;
            let note = match (was_secret, is_secret) {
                (false, true) => " (now secret)",
                (true, false) => " (no longer secret)",
                _ => "",
            };
            format!("~ {key}: {} → {}{note}", value(old, key, secret), value(new, key, secret))
        }),
        lines,
    );
}

fn release_phase_line(diff: &ReleaseDiff, from: &Release, to: &Release) -> String {
    let phase = &diff.release_phase;
    let env = if from.env == to.env { String::new() } else { format!("{} ", phase.env) };
    let versions = |numbers: &[u64]| numbers.iter().map(|n| format!("v{n}")).collect::<Vec<_>>().join(", ");
    let mut said = Vec::new();
    if phase.ran() {
        said.push(format!("ran in {env}{}", versions(&phase.ran_in)));
    }
    if !phase.not_run.is_empty() {
        said.push(format!(
            "not run for {env}{}, which no runner rolled out (superseded, or not yet)",
            versions(&phase.not_run)
        ));
    }
    if !phase.unknown.is_empty() {
        said.push(format!("unknown for {env}{}, made before graven recorded release phases", versions(&phase.unknown)));
    }
    if said.is_empty() {
        "release phase: did not run".to_owned()
    } else {
        format!("release phase: {}", said.join("; "))
    }
}

/// `graven diff --json`.
#[derive(serde::Serialize)]
struct DiffJson<'a> {
    from: ReleaseJson<'a>,
    to: ReleaseJson<'a>,
    /// `git log from..to`, newest first; `[]` for the same commit; `null`
    /// when the repository is not at hand or lacks the commits.
    commits: Option<Vec<CommitJson<'a>>>,
    /// `git log to..from`: commits the first release has and the second
    /// does not (a diff backwards in history); like `commits`.
    commits_removed: Option<Vec<CommitJson<'a>>>,
    files: ChangesJson<'a>,
    config: ChangesJson<'a>,
    release_phase: bool,
    release_phase_env: &'a str,
    release_phase_ran_in: &'a [u64],
    release_phase_not_run: &'a [u64],
    release_phase_unknown: &'a [u64],
}

#[derive(serde::Serialize)]
struct CommitJson<'a> {
    commit: &'a str,
    subject: &'a str,
}

#[derive(serde::Serialize)]
struct ChangesJson<'a> {
    added: &'a [String],
    removed: &'a [String],
    changed: &'a [String],
}

impl<'a> DiffJson<'a> {
    fn new(
        from: &'a Release,
        from_current: bool,
        to: &'a Release,
        to_current: bool,
        diff: &'a ReleaseDiff,
        commits: &'a Commits,
    ) -> Self {
        let json = |entries: &'a [LogEntry]| {
            entries.iter().map(|e| CommitJson { commit: &e.commit, subject: &e.subject }).collect::<Vec<_>>()
        };
        let (added, removed) = match commits {
            Commits::Same => (Some(Vec::new()), Some(Vec::new())),
            Commits::Range { added, removed } => (Some(json(added)), Some(json(removed))),
            Commits::Unavailable(_) => (None, None),
        };
        Self {
            from: ReleaseJson::new(from, from_current),
            to: ReleaseJson::new(to, to_current),
            commits: added,
            commits_removed: removed,
            files: ChangesJson { added: &diff.files.added, removed: &diff.files.removed, changed: &diff.files.changed },
            config: ChangesJson {
                added: &diff.config.added,
                removed: &diff.config.removed,
                changed: &diff.config.changed,
            },
            release_phase: diff.release_phase.ran(),
            release_phase_env: &diff.release_phase.env,
            release_phase_ran_in: &diff.release_phase.ran_in,
            release_phase_not_run: &diff.release_phase.not_run,
            release_phase_unknown: &diff.release_phase.unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: Option<&str>) -> EnvArg {
        EnvArg { env: name.map(str::to_owned) }
    }

    #[test]
    fn parses_release_references() {
        let production = env(Some("production"));
        assert_eq!(
            parse_release_ref("v42", &production).unwrap(),
            ReleaseRef { env: "production".to_owned(), number: 42 }
        );
        assert_eq!(
            parse_release_ref("7", &production).unwrap(),
            ReleaseRef { env: "production".to_owned(), number: 7 }
        );
        assert_eq!(
            parse_release_ref("staging:v17", &env(None)).unwrap(),
            ReleaseRef { env: "staging".to_owned(), number: 17 }
        );
        for bad in ["v0", "vx", "", "Prod:v1", "staging:", "staging:x", ":v1", "v-1"] {
            let error = parse_release_ref(bad, &production).unwrap_err();
            assert_eq!(error.exit_code(), std::process::ExitCode::from(2), "{bad}");
        }
        assert!(parse_release_ref("v1", &env(None)).unwrap_err().render().contains("no environment given"));
    }
}

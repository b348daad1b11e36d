//! One error type for every command: what went wrong, why (the cause
//! chain), what to do (hints), and the exit code that tells scripts which
//! kind of failure it was.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::process::ExitCode;

use graven::build::{BuildError, IngestError, ResolveError};
use graven::git::GitError;
use graven::release::ReleaseError;

/// Whether the user gave bad input or an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Bad usage or input: exit code 2. Nothing was changed.
    BadInput,
    /// The operation failed: exit code 1.
    Failed,
}

/// A command's failure, ready to print.
#[derive(Debug)]
pub(crate) struct CommandError {
    kind: ErrorKind,
    error: Box<dyn StdError + Send + Sync>,
    hints: Vec<String>,
}

impl CommandError {
    /// Bad input (exit 2).
    pub(crate) fn bad_input(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self { kind: ErrorKind::BadInput, error: error.into(), hints: Vec::new() }
    }

    /// A failed operation (exit 1).
    pub(crate) fn failed(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self { kind: ErrorKind::Failed, error: error.into(), hints: Vec::new() }
    }

    /// Adds a `hint:` line.
    #[must_use]
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        match self.kind {
            ErrorKind::BadInput => ExitCode::from(2),
            ErrorKind::Failed => ExitCode::from(1),
        }
    }

    /// The text printed on stderr.
    pub(crate) fn render(&self) -> String {
        let mut text = format!("error: {}\n", self.error);
        let mut source = self.error.source();
        let mut shown = self.error.to_string();
        while let Some(cause) = source {
            // Libraries often repeat their cause in their own message (an
            // HTTP client's errors do, three deep): say each thing once.
            let cause_text = cause.to_string();
            if !shown.contains(&cause_text) {
                let _ = writeln!(text, "  caused by: {cause_text}");
            }
            shown = cause_text;
            source = cause.source();
        }
        for hint in &self.hints {
            let _ = writeln!(text, "hint: {hint}");
        }
        text
    }
}

impl From<GitError> for CommandError {
    fn from(error: GitError) -> Self {
        match error {
            GitError::NotARepository { .. } => Self::bad_input(error)
                .hint("run graven inside your app's git repository, or pass --home DIR and --app NAME"),
            GitError::UnknownRevision { .. } => {
                Self::bad_input(error).hint("give a commit, branch or tag that `git rev-parse` knows")
            }
            GitError::NoCommits { .. } => Self::bad_input(error).hint("commit your app first: graven builds commits"),
            GitError::Spawn(_) => Self::failed(error).hint("install git and make sure it is on PATH"),
            GitError::Failed { .. } | GitError::Unpack { .. } => Self::failed(error),
        }
    }
}

impl From<ResolveError> for CommandError {
    fn from(error: ResolveError) -> Self {
        match error {
            ResolveError::NotFound { .. } => Self::bad_input(error).hint(
                "`graven builds` lists the builds; give an artifact id, a prefix of 7 or more hex digits, or a commit",
            ),
            ResolveError::NotBuilt { .. } => Self::bad_input(error).hint("build it first: graven build <rev>"),
            ResolveError::Ambiguous { .. } => Self::bad_input(error).hint("give more digits of the artifact id"),
            ResolveError::Ledger(e) => Self::failed(e),
        }
    }
}

impl From<BuildError> for CommandError {
    fn from(error: BuildError) -> Self {
        match error {
            BuildError::Git(e) => e.into(),
            BuildError::Dirty { .. } => Self::bad_input(error)
                .hint("commit or stash the changes, or add them to .gitignore; or build them anyway with --allow-dirty (the build is then marked dirty for good)"),
            BuildError::MissingProcfile { .. } => Self::bad_input(error)
                .hint("add a Procfile with one line per process type, like `web: python3 app.py`, and commit it"),
            BuildError::Procfile(_) => Self::bad_input(error).hint("fix the Procfile and commit it"),
            BuildError::Settings(_) => Self::bad_input(error).hint("fix graven.toml and commit it"),
            BuildError::OutputMissing { .. } => Self::bad_input(error)
                .hint("make the build command create it, or fix [build] output in graven.toml"),
            BuildError::Ingest(ref ingest) => match ingest {
                IngestError::Io { .. } | IngestError::Store(_) | IngestError::Changed { .. } => Self::failed(error),
                _ => Self::bad_input(error),
            },
            BuildError::CommandFailed { ref tail, ref status, .. } => {
                let mut text = String::new();
                if !tail.is_empty() {
                    let _ = writeln!(text, "its last {} of output:", if tail.len() == 1 { "line".to_owned() } else { format!("{} lines", tail.len()) });
                    for line in tail {
                        let _ = writeln!(text, "  | {line}");
                    }
                }
                let not_found = status.code() == Some(127);
                let mut e = Self::failed(Annotated { error: Box::new(error), extra: text.trim_end().to_owned() });
                if not_found {
                    e = e.hint("the build runs with a scrubbed environment: only PATH, HOME, LANG, TMPDIR, SOURCE_DATE_EPOCH, GRAVEN_COMMIT and what [build] env and pass_env name");
                }
                e.hint("nothing was stored; fix the build and run graven build again")
            }
            BuildError::NotReproducible { .. } => Self::failed(error).hint(
                "look at the bytes named: a clock, a random name, a listing in no fixed order, or a path of the build machine (with --no-sandbox) are the usual sources",
            ),
            BuildError::Sandbox(error) => {
                sandbox_error(error, "graven build --no-sandbox (the build is then marked unsandboxed for good)")
            }
            BuildError::Publish { .. } => Self::failed(error).hint(
                "the build is stored on this machine and not yet in the ledger: run the same graven build again to send it (only what the shared store lacks is sent)",
            ),
            BuildError::Cache { .. } => Self::failed(error)
                .hint("nothing was stored; graven build --no-cache builds without the caches, and graven gc --caches deletes them"),
            BuildError::CommandSpawn(_) | BuildError::Store(_) | BuildError::Ledger(_) | BuildError::WorkDir { .. } => {
                Self::failed(error)
            }
        }
    }
}

/// An error with more lines after its message.
#[derive(Debug)]
struct Annotated {
    error: Box<dyn StdError + Send + Sync>,
    extra: String,
}

impl std::fmt::Display for Annotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.extra.is_empty() { write!(f, "{}", self.error) } else { write!(f, "{}\n{}", self.error, self.extra) }
    }
}

impl StdError for Annotated {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.error.source()
    }
}

impl From<ReleaseError> for CommandError {
    fn from(error: ReleaseError) -> Self {
        match error {
            ReleaseError::BadEnvName { .. } | ReleaseError::BadKey { .. } | ReleaseError::BadValue { .. } => {
                Self::bad_input(error)
            }
            ReleaseError::ValueTooLarge { .. } => Self::bad_input(error)
                .hint("config holds settings, not data: keep large values in a file or a store and put where they are in config"),
            ReleaseError::ConfigTooLarge { ref env, .. } => {
                let hint = format!("`graven config --env {env}` lists what is set; unset what is no longer needed");
                Self::bad_input(error).hint(hint)
            }
            ReleaseError::UnknownKey { ref env, .. } => {
                let hint = format!("`graven config --env {env}` lists the keys");
                Self::bad_input(error).hint(hint)
            }
            ReleaseError::NoRelease { ref env } => {
                let hint = format!("release a build first: graven release --env {env}");
                Self::bad_input(error).hint(hint)
            }
            ReleaseError::UnknownRelease { ref env, .. } => {
                let hint = format!("`graven releases --env {env}` lists the releases");
                Self::bad_input(error).hint(hint)
            }
            ReleaseError::NothingToRollBackTo { .. } | ReleaseError::RollbackIsNoOp { .. } => Self::bad_input(error),
            ReleaseError::ArtifactMissing { ref commit, .. } => {
                let commit = commit.clone();
                Self::failed(error).hint(format!(
                    "graven gc collected it, or the store was changed: rebuild commit {commit} with `graven build {commit} --force` (the same recipe gives the same artifact) and try again"
                ))
            }
            ReleaseError::SecretInArtifact { .. } => Self::bad_input(error).hint(
                "config must never be baked into a build: remove the value from the files above (they come from the build), rebuild, and release the new build",
            ),
            ReleaseError::Artifact(_) | ReleaseError::Compare { .. } | ReleaseError::Store(_) => Self::failed(error),
            ReleaseError::Ledger(e) => Self::failed(e),
        }
    }
}

/// The sandbox cannot be made: how to make it, or `without` to go on
/// without it.
pub(crate) fn sandbox_error(error: graven::sandbox::SandboxError, without: &str) -> CommandError {
    let fix = match error {
        graven::sandbox::SandboxError::Missing => {
            "install bubblewrap: apt-get install bubblewrap (Debian, Ubuntu), dnf install bubblewrap (Fedora)"
        }
        graven::sandbox::SandboxError::Unavailable { .. } => {
            "the kernel or its policy forbids this user new namespaces: allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu, kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap), or run graven as root"
        }
        graven::sandbox::SandboxError::Setup { .. } => {
            "the machine's mounts kept changing while bwrap copied them (containers starting and stopping do this); nothing was stored: run the same command again"
        }
    };
    CommandError::failed(error).hint(fix).hint(format!("or go on without the sandbox: {without}"))
}

/// A run-stage failure: damaged store content is a failed operation.
pub(crate) fn run_error(error: graven::run::RunError) -> CommandError {
    match error {
        graven::run::RunError::Damaged { .. } => CommandError::failed(error)
            .hint("the store's copy of this artifact is damaged: graven verify BUILD names the files; rebuild the commit with graven build --force"),
        other => CommandError::failed(other),
    }
}

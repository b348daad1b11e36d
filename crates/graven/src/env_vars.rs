//! Every environment variable graven reads, named once.
//!
//! Commands take settings from flags first, then these variables, then
//! `graven.toml`. Nothing else in graven calls `std::env::var` with a literal.

/// Where graven keeps its ledger, store and run state (`--home`).
/// Default: `.graven/` at the root of the repository.
pub const GRAVEN_HOME: &str = "GRAVEN_HOME";

/// The app name (`--app`). Default: `graven.toml [app] name`, else the name
/// of the repository's directory.
pub const GRAVEN_APP: &str = "GRAVEN_APP";

/// Who made a build or release. Default: git's `user.email`, else `user@host`.
pub const GRAVEN_AUTHOR: &str = "GRAVEN_AUTHOR";

/// Selects the ledger by URL (as `--ledger-url` does): `sqlite:PATH` for an
/// embedded ledger elsewhere; `postgres://…` names the team ledger, which
/// this version refuses (naming the URL without its password) rather than
/// quietly write to a different one. Unset: the home's embedded ledger.
pub const GRAVEN_LEDGER: &str = "GRAVEN_LEDGER";

/// Selects the store by URL (as `--store-url` does): `file:PATH` for a local
/// store elsewhere; `s3://bucket/prefix` names the team store, refused like
/// [`GRAVEN_LEDGER`]'s. Unset: the home's local store.
pub const GRAVEN_STORE: &str = "GRAVEN_STORE";

/// Test-only: names a fail point at which graven stops itself (see
/// `fail_point`). Unset in normal use.
pub const GRAVEN_FAIL_POINT: &str = "GRAVEN_FAIL_POINT";

/// Variables set for the build command, besides `[build] env` and `pass_env`.
pub mod build {
    /// The commit being built (40 hex digits).
    pub const GRAVEN_COMMIT: &str = "GRAVEN_COMMIT";
    /// The commit time, in seconds since the epoch, for reproducible tools.
    pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
}

/// The environment for commands that take `--env`.
pub const GRAVEN_ENV: &str = "GRAVEN_ENV";

/// Variables set for every process of a release (and `graven exec`),
/// besides the release's config and `PATH`.
pub mod process {
    /// The app's name.
    pub const GRAVEN_APP: &str = "GRAVEN_APP";
    /// The environment's name.
    pub const GRAVEN_ENV: &str = "GRAVEN_ENV";
    /// The release, as `v42`.
    pub const GRAVEN_RELEASE: &str = "GRAVEN_RELEASE";
    /// The commit the artifact was built from.
    pub const GRAVEN_COMMIT: &str = "GRAVEN_COMMIT";
    /// The artifact id.
    pub const GRAVEN_ARTIFACT: &str = "GRAVEN_ARTIFACT";
    /// The process's name, as `web.1` (`run.1` for `graven exec`).
    pub const GRAVEN_PROCESS: &str = "GRAVEN_PROCESS";
}

/// The password of the PostgreSQL ledger when its URL has none, as libpq
/// reads it.
pub const PGPASSWORD: &str = "PGPASSWORD";

/// The PostgreSQL password file, as libpq reads it (default `~/.pgpass`).
pub const PGPASSFILE: &str = "PGPASSFILE";

/// The user's home directory: where `~/.pgpass` is.
pub const HOME: &str = "HOME";

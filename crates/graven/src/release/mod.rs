//! The release stage: an artifact plus one environment's config becomes an
//! immutable, numbered release.
//!
//! Every change is appended, never made in place: a config change, a
//! deploy, a rollback and a promotion each create a new release (Heroku's
//! semantics), and all of them go through [`Ledger::append`], which numbers
//! them without gaps or duplicates however many writers there are. This
//! module decides what to append; the ledger stores it.

pub mod chain;
pub mod config;
pub mod diff;
pub mod dotenv;
pub mod gc;
mod scan;

use std::collections::BTreeMap;

pub use config::{ConfigChange, MASK};

use crate::Digest;
use crate::ledger::{Append, EnvState, Ledger, LedgerError};
use crate::model::{Artifact, BuildRecord, ConfigVersion, PromotedFrom, Release, ReleaseKind};
use crate::store::{ArtifactError, ManifestError};
use crate::store::{ObjectKind, Store, StoreError};
use crate::time;

/// A release-stage operation that could not be done. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// An environment name that is not allowed.
    #[error("'{name}' is not a valid environment name: use a lowercase letter, then up to 62 of a-z, 0-9 and '-'")]
    BadEnvName {
        /// The name given.
        name: String,
    },
    /// A config key that is not a variable name.
    #[error("'{key}' is not a valid config key: use letters, digits and '_', not starting with a digit")]
    BadKey {
        /// The key given.
        key: String,
    },
    /// A config value that cannot be an environment variable.
    #[error("the value of {key} cannot be used: {why}")]
    BadValue {
        /// Its key.
        key: String,
        /// Why not.
        why: &'static str,
    },
    /// A config value over [`config::MAX_VALUE_BYTES`].
    #[error(
        "the value of {key} has {bytes} bytes: a config value may have at most {} (32 KiB)",
        config::MAX_VALUE_BYTES
    )]
    ValueTooLarge {
        /// Its key.
        key: String,
        /// Its size.
        bytes: usize,
    },
    /// A change that would make an environment's config larger than
    /// [`config::MAX_CONFIG_BYTES`].
    #[error(
        "the config of {env} would have {bytes} bytes: an environment's config may have at most {} (64 KiB), counted as KEY=VALUE per variable",
        config::MAX_CONFIG_BYTES
    )]
    ConfigTooLarge {
        /// The environment.
        env: String,
        /// The size it would have.
        bytes: usize,
    },
    /// `unset` of a key that is not set.
    #[error("{key} is not set in {env}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The environment.
        env: String,
    },
    /// The environment has no release yet.
    #[error("environment '{env}' has no release yet")]
    NoRelease {
        /// The environment.
        env: String,
    },
    /// No such release.
    #[error("environment '{env}' has no release v{number}")]
    UnknownRelease {
        /// The environment.
        env: String,
        /// The number asked for.
        number: u64,
    },
    /// A rollback with nothing before the current release.
    #[error("environment '{env}' has only one release (v{current}): there is nothing to roll back to")]
    NothingToRollBackTo {
        /// The environment.
        env: String,
        /// The current release.
        current: u64,
    },
    /// A rollback to exactly what is running.
    #[error(
        "v{target} has the same artifact and config as the current release v{current}: rolling back to it would change nothing"
    )]
    RollbackIsNoOp {
        /// The release asked for.
        target: u64,
        /// The current release.
        current: u64,
    },
    /// The artifact is not (or no longer) in the store.
    #[error("artifact {id} is no longer in the store")]
    ArtifactMissing {
        /// The artifact.
        id: Digest,
        /// The commit it was built from.
        commit: String,
    },
    /// The artifact's record, a listing or a blob is missing or invalid.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Two artifacts could not be compared: a listing of one of them is
    /// missing or invalid.
    #[error("artifact {from} could not be compared with {to}")]
    Compare {
        /// The older artifact.
        from: Digest,
        /// The newer artifact.
        to: Digest,
        /// Which listing, and what is wrong with it.
        #[source]
        source: Box<ManifestError>,
    },
    /// The artifact holds a secret config value.
    #[error("artifact {id} contains the value of secret config {}:\n{}", keys(found), listing(found))]
    SecretInArtifact {
        /// The artifact.
        id: Digest,
        /// Each secret key found, with the paths that contain its value.
        found: BTreeMap<String, Vec<String>>,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn keys(found: &BTreeMap<String, Vec<String>>) -> String {
    found.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn listing(found: &BTreeMap<String, Vec<String>>) -> String {
    let mut lines = Vec::new();
    for (key, paths) in found {
        for path in paths.iter().take(crate::LISTED_PATHS) {
            lines.push(format!("  {path} ({key})"));
        }
        if paths.len() > crate::LISTED_PATHS {
            lines.push(format!("  … and {} more ({key})", paths.len() - crate::LISTED_PATHS));
        }
    }
    lines.join("\n")
}

/// Checks an environment name: `[a-z][a-z0-9-]{0,62}`.
pub fn check_env_name(name: &str) -> Result<(), ReleaseError> {
    if crate::app::is_valid_app_name(name) { Ok(()) } else { Err(ReleaseError::BadEnvName { name: name.to_owned() }) }
}

/// Who and where: what every release-stage operation needs.
#[derive(Clone, Copy)]
pub struct Stage<'a> {
    /// The ledger.
    pub ledger: &'a dyn Ledger,
    /// The store holding the artifacts.
    pub store: &'a dyn Store,
    /// The app.
    pub app: &'a str,
    /// Who is acting.
    pub author: &'a str,
    /// The machine they act from, recorded in every release.
    pub host: &'a str,
}

/// What an operation appended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The new config version, if one was made.
    pub config: Option<ConfigVersion>,
    /// The new release, if one was made.
    pub release: Option<Release>,
    /// Whether the environment was created by this operation.
    pub created_env: bool,
}

/// Why a release is made: its kind, with what a rollback or a promotion
/// records of where it came from.
enum Origin {
    Deploy,
    Config,
    Rollback { of: u64 },
    Promote { from: PromotedFrom },
}

/// An artifact about to be released with a config: checked before the
/// append.
struct Pairing {
    artifact: Digest,
    config: ConfigVersion,
    /// Whether the artifact is new to the ledger's releases, and so must be
    /// checked whole (every listing, every blob's size), not only scanned
    /// for the config's secrets.
    new: bool,
}

/// How many times an operation is retried when the environment changed
/// between its checks and its transaction.
const RACE_RETRIES: usize = 20;

impl Stage<'_> {
    /// Creates release vN of `env` with `build`'s artifact and the env's
    /// current config (`graven release`).
    pub fn deploy(&self, env: &str, build: &BuildRecord, message: Option<&str>) -> Result<Outcome, ReleaseError> {
        check_env_name(env)?;
        let artifact = build.build.artifact;
        require_artifact(self.store, &artifact, &build.build.commit)?;
        let description =
            message.map_or_else(|| format!("Deploy {}", crate::git::short_commit(&build.build.commit)), str::to_owned);
        self.append_checked(env, |state, now| {
            let config = self.config_or_empty(state, env, now);
            let release = self.next_release(
                state,
                env,
                now,
                Origin::Deploy,
                artifact,
                &build.build.commit,
                &config.0,
                &description,
            );
            Ok((
                Append { config: config.1, release: Some(release) },
                Some(Pairing { artifact, config: config.0, new: true }),
            ))
        })
    }

    /// Makes one new config version of `env` from `change`, and, if the env
    /// has a release, a new release with it (`graven config set|unset|import`).
    pub fn change_config(&self, env: &str, change: &ConfigChange) -> Result<Outcome, ReleaseError> {
        check_env_name(env)?;
        change.validate()?;
        self.append_checked(env, |state, now| {
            let (current, _) = self.config_or_empty(state, env, now);
            let mut vars = current.vars.clone();
            let mut secret = current.secret.clone();
            let description = change.apply(env, &mut vars, &mut secret)?;
            let mut config = ConfigVersion {
                id: Digest::of(b""),
                app: self.app.to_owned(),
                env: env.to_owned(),
                number: state.next_config_number,
                parent: state.config.as_ref().map(|c| c.id),
                vars,
                secret,
                author: self.author.to_owned(),
                created_at: now.to_owned(),
                description: description.clone(),
            };
            config.id = config.computed_id();
            let release = state.release.as_ref().map(|current| {
                self.next_release(
                    state,
                    env,
                    now,
                    Origin::Config,
                    current.artifact,
                    &current.commit,
                    &config,
                    &description,
                )
            });
            // The current release's artifact was checked whole when it was released.
            let scan = release.as_ref().map(|r| Pairing { artifact: r.artifact, config: config.clone(), new: false });
            Ok((Append { config: Some(config), release }, scan))
        })
    }

    /// A new release of `env` with release `target`'s artifact and config
    /// (default: the release the current one replaced).
    pub fn rollback(&self, env: &str, target: Option<u64>) -> Result<Outcome, ReleaseError> {
        check_env_name(env)?;
        let current = self
            .ledger
            .current_release(self.app, env)?
            .ok_or_else(|| ReleaseError::NoRelease { env: env.to_owned() })?;
        let target_number = match target {
            Some(number) => number,
            None if current.number > 1 => current.number - 1,
            None => return Err(ReleaseError::NothingToRollBackTo { env: env.to_owned(), current: current.number }),
        };
        let target = self
            .ledger
            .release(self.app, env, target_number)?
            .ok_or(ReleaseError::UnknownRelease { env: env.to_owned(), number: target_number })?;
        require_artifact(self.store, &target.artifact, &target.commit)?;
        let target_config = config_of(self.ledger, &target)?;
        let description = format!("Rollback to v{}", target.number);
        self.append_checked(env, |state, now| {
            let current = state.release.as_ref().ok_or_else(|| ReleaseError::NoRelease { env: env.to_owned() })?;
            if current.artifact == target.artifact && current.config == target.config {
                return Err(ReleaseError::RollbackIsNoOp { target: target.number, current: current.number });
            }
            let release = self.next_release(
                state,
                env,
                now,
                Origin::Rollback { of: target.number },
                target.artifact,
                &target.commit,
                &target_config,
                &description,
            );
            // The artifact and config were released together before: no scan.
            Ok((Append { config: None, release: Some(release) }, None))
        })
    }

    /// A release in `to` with `from`'s current artifact and `to`'s own
    /// current config (`graven promote`).
    pub fn promote(&self, from: &str, to: &str) -> Result<Outcome, ReleaseError> {
        check_env_name(from)?;
        check_env_name(to)?;
        let source = self
            .ledger
            .current_release(self.app, from)?
            .ok_or_else(|| ReleaseError::NoRelease { env: from.to_owned() })?;
        require_artifact(self.store, &source.artifact, &source.commit)?;
        let description = format!("Promote {from} v{}", source.number);
        self.append_checked(to, |state, now| {
            let config = self.config_or_empty(state, to, now);
            let release = self.next_release(
                state,
                to,
                now,
                Origin::Promote { from: PromotedFrom { env: from.to_owned(), number: source.number } },
                source.artifact,
                &source.commit,
                &config.0,
                &description,
            );
            // Released in the source environment: checked whole then.
            let pairing = Pairing { artifact: source.artifact, config: config.0, new: false };
            Ok((Append { config: config.1, release: Some(release) }, Some(pairing)))
        })
    }

    /// The env's current config, or a new empty version #1 to create.
    fn config_or_empty(&self, state: &EnvState, env: &str, now: &str) -> (ConfigVersion, Option<ConfigVersion>) {
        if let Some(config) = &state.config {
            return (config.clone(), None);
        }
        let mut config = ConfigVersion {
            id: Digest::of(b""),
            app: self.app.to_owned(),
            env: env.to_owned(),
            number: state.next_config_number,
            parent: None,
            vars: BTreeMap::new(),
            secret: std::collections::BTreeSet::new(),
            author: self.author.to_owned(),
            created_at: now.to_owned(),
            description: "Empty config".to_owned(),
        };
        config.id = config.computed_id();
        (config.clone(), Some(config))
    }

    #[expect(clippy::too_many_arguments, reason = "every field of a release, named at the call")]
    fn next_release(
        &self,
        state: &EnvState,
        env: &str,
        now: &str,
        origin: Origin,
        artifact: Digest,
        commit: &str,
        config: &ConfigVersion,
        description: &str,
    ) -> Release {
        let (kind, rollback_of, promoted_from) = match origin {
            Origin::Deploy => (ReleaseKind::Deploy, None, None),
            Origin::Config => (ReleaseKind::Config, None, None),
            Origin::Rollback { of } => (ReleaseKind::Rollback, Some(of), None),
            Origin::Promote { from } => (ReleaseKind::Promote, None, Some(from)),
        };
        let mut release = Release {
            id: Digest::of(b""),
            app: self.app.to_owned(),
            env: env.to_owned(),
            number: state.release.as_ref().map_or(1, |r| r.number + 1),
            kind,
            artifact,
            config: config.id,
            parent: state.release.as_ref().map(|r| r.id),
            commit: commit.to_owned(),
            author: self.author.to_owned(),
            host: Some(self.host.to_owned()),
            created_at: now.to_owned(),
            description: description.to_owned(),
            rollback_of,
            promoted_from,
        };
        release.id = release.computed_id();
        release
    }

    /// Appends what `decide` returns, made on the environment as it is now.
    /// A decision that pairs an artifact with a config is checked first
    /// (the whole artifact, then the secret scan), outside the write
    /// transaction: a check of a large artifact must not hold the ledger's
    /// lock. The append is then one short transaction that takes the
    /// decision only if the environment is still what it was made on; if
    /// another writer changed it meanwhile, the decision is made again.
    fn append_checked(
        &self,
        env: &str,
        mut decide: impl FnMut(&EnvState, &str) -> Result<(Append, Option<Pairing>), ReleaseError>,
    ) -> Result<Outcome, ReleaseError> {
        let mut checked: Option<(Digest, Digest)> = None;
        for _ in 0..RACE_RETRIES {
            let state = self.ledger.env_state(self.app, env)?;
            let now = time::now_rfc3339();
            let (append, pairing) = decide(&state, &now)?;
            if let Some(Pairing { artifact, config, new }) = pairing
                && checked != Some((artifact, config.id))
            {
                let found = scan::check_pairing(self.store, &artifact, &config, new)?;
                if !found.is_empty() {
                    return Err(ReleaseError::SecretInArtifact { id: artifact, found });
                }
                checked = Some((artifact, config.id));
            }
            let result = self.ledger.append(self.app, env, &now, &mut |current| {
                if *current == state {
                    Ok(append.clone())
                } else {
                    Err(LedgerError::Conflict {
                        doing: "appending a release",
                        source: "the environment changed since the decision was made".into(),
                    })
                }
            });
            match result {
                Ok(append) => {
                    return Ok(Outcome { config: append.config, release: append.release, created_env: !state.exists });
                }
                Err(LedgerError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(LedgerError::Conflict {
            doing: "appending a release",
            source: format!("the environment changed {RACE_RETRIES} times while graven decided; try again").into(),
        }
        .into())
    }
}

/// Loads the artifact record of `release`, for commands that show what a
/// release runs.
pub fn artifact_of(store: &dyn Store, release: &Release) -> Result<Artifact, ReleaseError> {
    load_artifact(store, &release.artifact)
}

/// Loads artifact `id`'s record.
fn load_artifact(store: &dyn Store, id: &Digest) -> Result<Artifact, ReleaseError> {
    Ok(Artifact::load(store, id)?)
}

/// Artifact `id` (built from `commit`) must still be in the store: a
/// collected one is an error that says how to get it back.
fn require_artifact(store: &dyn Store, id: &Digest, commit: &str) -> Result<(), ReleaseError> {
    if store.has_object(ObjectKind::Artifact, id)? {
        Ok(())
    } else {
        Err(ReleaseError::ArtifactMissing { id: *id, commit: commit.to_owned() })
    }
}

/// The config version `release` names, which the ledger must have.
fn config_of(ledger: &dyn Ledger, release: &Release) -> Result<ConfigVersion, ReleaseError> {
    ledger.config_version(&release.config)?.ok_or_else(|| {
        LedgerError::Corrupt {
            what: format!("release {} {}", release.env, release.version()),
            why: "its config version is missing".to_owned(),
        }
        .into()
    })
}

//! `graven verify --ledger`: recomputes every release's and config
//! version's id from its stored fields and checks every parent link, so a
//! row edited behind graven's back (triggers dropped, the file patched) is
//! found and named; and checks that every release names a build the
//! ledger recorded, and that each environment's current release has its
//! artifact record in the store (older ones may have been collected).

use std::collections::HashSet;

use crate::Digest;
use crate::ledger::{Ledger, LedgerError};
use crate::store::{ObjectKind, Store, StoreError};

/// One break in the hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// A release whose fields no longer give its id.
    ReleaseEdited {
        /// The environment.
        env: String,
        /// The release's number.
        number: u64,
        /// The id stored.
        stored: Digest,
        /// The id its fields give.
        computed: Digest,
    },
    /// A release whose parent is not the release before it.
    BrokenLink {
        /// The environment.
        env: String,
        /// The release's number.
        number: u64,
        /// What the parent should be: the id of the release before it.
        expected: Option<Digest>,
        /// What it is.
        found: Option<Digest>,
    },
    /// Release numbers with a gap or a duplicate.
    Numbering {
        /// The environment.
        env: String,
        /// The number expected.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// A config version whose fields no longer give its id.
    ConfigEdited {
        /// The environment.
        env: String,
        /// The config version's number.
        number: u64,
        /// The id stored.
        stored: Digest,
    },
    /// A release whose artifact no build of the ledger produced.
    BuildMissing {
        /// The environment.
        env: String,
        /// The release's number.
        number: u64,
        /// The artifact it names.
        artifact: Digest,
    },
    /// A current release whose artifact record is not in the store: `gc`
    /// never collects it, so the store lost it.
    ArtifactMissing {
        /// The environment.
        env: String,
        /// The release's number.
        number: u64,
        /// The artifact it names.
        artifact: Digest,
    },
    /// A release whose config version is not in the ledger.
    ConfigMissing {
        /// The environment.
        env: String,
        /// The release's number.
        number: u64,
        /// The config version it names.
        config: Digest,
    },
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |d: &Option<Digest>| d.as_ref().map_or_else(|| "none".to_owned(), Digest::short);
        match self {
            Self::ReleaseEdited { env, number, stored, computed } => write!(
                f,
                "{env} v{number} was changed after it was written: its id is {} but its fields hash to {}",
                stored.short(),
                computed.short()
            ),
            Self::BrokenLink { env, number, expected, found } => write!(
                f,
                "{env} v{number} does not follow the release before it: its parent is {}, expected {}",
                short(found),
                short(expected)
            ),
            Self::Numbering { env, expected, found } => {
                write!(f, "{env} has release v{found} where v{expected} should be: a release is missing or duplicated")
            }
            Self::ConfigEdited { env, number, stored } => {
                write!(f, "{env} config version #{number} ({}) was changed after it was written", stored.short())
            }
            Self::BuildMissing { env, number, artifact } => {
                write!(f, "{env} v{number} names artifact {}, which no build in the ledger produced", artifact.short())
            }
            Self::ArtifactMissing { env, number, artifact } => write!(
                f,
                "{env} v{number} is current, but the record of its artifact {} is not in the store",
                artifact.short()
            ),
            Self::ConfigMissing { env, number, config } => {
                write!(f, "{env} v{number} names config version {}, which is not in the ledger", config.short())
            }
        }
    }
}

/// What `verify_ledger` checked and found.
#[derive(Debug, Clone, Default)]
pub struct ChainReport {
    /// Environments checked.
    pub environments: u64,
    /// Releases checked.
    pub releases: u64,
    /// Config versions checked.
    pub config_versions: u64,
    /// Every break found.
    pub problems: Vec<ChainProblem>,
}

/// Why the ledger could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum VerifyLedgerError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks every environment of `app`.
pub fn verify_ledger(ledger: &dyn Ledger, store: &dyn Store, app: &str) -> Result<ChainReport, VerifyLedgerError> {
    let mut report = ChainReport::default();
    let built: HashSet<Digest> = ledger.builds(app)?.into_iter().map(|record| record.build.artifact).collect();
    for env in ledger.environments(app)? {
        report.environments += 1;
        let configs = ledger.config_versions(app, &env)?;
        report.config_versions += configs.len() as u64;
        for config in &configs {
            if config.computed_id() != config.id {
                report.problems.push(ChainProblem::ConfigEdited {
                    env: env.clone(),
                    number: config.number,
                    stored: config.id,
                });
            }
        }
        let mut releases = ledger.releases(app, &env, None)?;
        releases.reverse();
        report.releases += releases.len() as u64;
        let mut previous: Option<Digest> = None;
        for (index, release) in releases.iter().enumerate() {
            let expected_number = index as u64 + 1;
            if release.number != expected_number {
                report.problems.push(ChainProblem::Numbering {
                    env: env.clone(),
                    expected: expected_number,
                    found: release.number,
                });
            }
            let computed = release.computed_id();
            if computed != release.id {
                report.problems.push(ChainProblem::ReleaseEdited {
                    env: env.clone(),
                    number: release.number,
                    stored: release.id,
                    computed,
                });
            }
            if release.parent != previous {
                report.problems.push(ChainProblem::BrokenLink {
                    env: env.clone(),
                    number: release.number,
                    expected: previous,
                    found: release.parent,
                });
            }
            if !configs.iter().any(|c| c.id == release.config) {
                report.problems.push(ChainProblem::ConfigMissing {
                    env: env.clone(),
                    number: release.number,
                    config: release.config,
                });
            }
            if !built.contains(&release.artifact) {
                report.problems.push(ChainProblem::BuildMissing {
                    env: env.clone(),
                    number: release.number,
                    artifact: release.artifact,
                });
            }
            previous = Some(release.id);
        }
        if let Some(current) = releases.last()
            && !store.has_object(ObjectKind::Artifact, &current.artifact)?
        {
            report.problems.push(ChainProblem::ArtifactMissing {
                env: env.clone(),
                number: current.number,
                artifact: current.artifact,
            });
        }
    }
    Ok(report)
}

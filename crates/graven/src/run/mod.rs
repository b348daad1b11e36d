//! The run stage, from the release's side: a release's tree laid out on
//! disk, read-only, and checked against its manifest (materialise and
//! drift), and the environment a release's processes get.
//!
//! Processes run with a materialised tree as their working directory and
//! only the release's config, plus graven's own variables, in their
//! environment: what runs is exactly the artifact with exactly its config.
//! The supervisor that keeps processes running comes on top of this.

mod drift;
mod environment;
pub mod logs;
mod materialise;
pub mod plan;
pub mod process;
pub mod proxy;
mod rollout;
pub mod runner;
pub mod status;

pub use crate::shell::explain_spawn_error;
pub use drift::{Drift, DriftKind, check_tree};
pub use environment::{process_environment, process_home};
pub use materialise::{Tree, artifact_of, materialise, tree_path};
pub use process::AppMount;

use crate::Digest;
use crate::store::ManifestError;
use crate::store::StoreError;

/// A failure of the run stage.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The artifact's record, a listing or a blob is missing or invalid.
    #[error(transparent)]
    Artifact(#[from] crate::store::ArtifactError),
    /// A freshly materialised tree does not match its manifest: the store
    /// holds damaged blobs.
    #[error("the tree of {version} does not match artifact {id}: {} damaged, first {}", drift.len(), drift.first().map_or("", |d| d.path.as_str()))]
    Damaged {
        /// The release, e.g. `v42`.
        version: String,
        /// The artifact.
        id: Digest,
        /// Every difference found.
        drift: Vec<Drift>,
    },
    /// A manifest listing could not be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The public port could not be listened on.
    #[error("could not listen on port {port}: {why}")]
    Proxy {
        /// The port.
        port: u16,
        /// Why.
        why: String,
    },
    /// Another runner holds the lock.
    #[error("a runner is already running for this app and environment (pid {pid}, lock {})", lock.display())]
    AlreadyRunning {
        /// The other runner's pid, as its lock file says.
        pid: String,
        /// The lock file.
        lock: std::path::PathBuf,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The filesystem failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What graven was doing.
        action: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

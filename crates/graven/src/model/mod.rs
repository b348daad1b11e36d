//! The shared model: the types that two stages or two backends share, owned
//! by no stage and below both `ledger` and `store` (as jj keeps its object
//! types beneath every backend). Pure data and its validating parsers: no
//! I/O, nothing from a stage, a store or a ledger.
//!
//! - [`Artifact`] and its [`Listing`]s: an immutable tree and how to run it;
//! - [`NewBuild`] / [`BuildRecord`]: what the ledger records of a build;
//! - [`ConfigVersion`] and [`Release`]: the release stage's immutable,
//!   hash-chained records;
//! - [`Formation`]: how many processes of each type an environment runs;
//! - [`RunState`]: what a runner reports of itself.

mod artifact;
mod build;
mod formation;
pub mod manifest;
mod release;
mod run_state;

pub use artifact::{ARTIFACT_FORMAT, Artifact, RecordProblem};
pub use build::{BuildRecord, NewBuild, NewPush, PushRecord};
pub use formation::{Formation, FormationError, FormationRecord, MAX_PROCESSES, RestartRecord};
pub use manifest::{Entry, EntryKind, FlatTree, Listing, ListingProblem, leaves_tree};
pub use release::{ConfigVersion, PromotedFrom, Release, ReleaseKind};
pub use run_state::{
    Failure, FailureCause, ProcessState, ProcessStatus, ReleasePhaseRun, ReleasePhaseRuns, RolloutReport, RolloutStage,
    RunState, RunnerState, RunningRelease,
};

//! graven keeps the three twelve-factor stages strictly apart:
//!
//! ```text
//!   git commit ──build──▶ artifact (immutable, content-addressed, sha256)
//!                               │
//!   environment config ──release──▶ release vN (artifact + config snapshot)
//!                                         │
//!                                   ──run──▶ processes (code read-only, config in env)
//! ```
//!
//! - [`build`] turns one commit into an [`Artifact`](model::Artifact): a clean
//!   export of the commit, the build command run with a scrubbed environment,
//!   and the output ingested into a [`Store`](store::Store) as a Merkle tree of
//!   directory listings (the [`manifest`](model::manifest)).
//! - [`release`] pairs an artifact with an environment's config as an
//!   immutable, numbered, hash-chained [`Release`](model::Release).
//! - [`run`] makes a machine's processes match an environment's current
//!   release.
//! - the [`ledger`] records builds, config versions and releases
//!   in append-only tables, and each runner's report of what it runs.
//! - [`export`] writes an artifact as a byte-identical archive.
//!
//! The stages reach storage only through two traits, [`Store`](store::Store)
//! and [`Ledger`](ledger::Ledger), each with an embedded default backend.
//! The types they share — artifacts, listings, builds, config versions,
//! releases, run state — are the [`model`], below the stages and the
//! backends alike.
//! This crate never prints: it returns values and typed errors, and reports
//! progress through [`build::BuildObserver`].
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod app;
pub mod build;
pub mod digest;
pub mod env_vars;
pub mod export;
mod fail_point;
mod fs_tree;
pub mod git;
pub mod home;
pub mod image;
pub mod kube;
pub mod ledger;
pub mod model;
pub mod release;
pub mod run;
pub mod sandbox;
mod shell;
pub mod store;
pub mod time;
pub mod url;
pub mod user;

pub use digest::Digest;

/// How many paths an error lists before it says "and N more".
pub const LISTED_PATHS: usize = 10;

/// An error and every cause below it, one line: `what: why: why`. For
/// text that outlives the error (a runner's recorded failure, a report);
/// the CLI prints the chain itself.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The constant modification time of every file graven writes into a store,
/// a materialised tree or an export, and of the clean export a build starts
/// from: 1970-01-01T00:00:01Z.
///
/// One constant, rather than the commit time, because a stored file is
/// shared by every artifact that holds the same bytes, hard-linked into
/// each of their trees: one inode cannot carry two commits' times. And the
/// build sees the time the tree will have when it runs, so what it derives
/// from a source's mtime (a timestamp `.pyc`) is still valid then. It is 1
/// rather than 0 because some tools read an mtime of 0 as "unknown" (Nix
/// made the same choice).
pub const NORMALISED_MTIME: u64 = 1;

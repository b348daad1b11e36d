//! What the ledger records of a build: the commit, the artifact it
//! produced, who and where, how long. Not part of the artifact: two builds
//! of one tree are one artifact with two records.

use crate::Digest;

/// A build about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBuild {
    /// The app built.
    pub app: String,
    /// The artifact it produced.
    pub artifact: Digest,
    /// The commit built (40 hex digits).
    pub commit: String,
    /// Whether the working tree's uncommitted changes were built.
    pub dirty: bool,
    /// Whether the build command ran in the sandbox (`--no-sandbox` and
    /// builds from before the sandbox: not).
    pub sandboxed: bool,
    /// The digest of the build recipe (command, env, output, exclude).
    pub recipe: Digest,
    /// Who ran the build.
    pub author: String,
    /// The machine it ran on.
    pub host: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Regular files in the artifact.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Bytes the store did not have before (blobs and listings).
    pub new_bytes: u64,
    /// Whole build, in milliseconds.
    pub duration_ms: u64,
    /// The build command alone.
    pub build_command_ms: u64,
    /// Ingest alone: from walking the output until the store has made it
    /// durable (its sync included).
    pub ingest_ms: u64,
    /// The build command's output.
    pub log: String,
}

/// A recorded build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    /// Position in the ledger: later builds have larger numbers.
    pub seq: i64,
    /// Everything recorded, the log excepted.
    pub build: NewBuild,
}

/// A push of a build's image to a registry, about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPush {
    /// The app.
    pub app: String,
    /// The artifact whose image was pushed.
    pub artifact: Digest,
    /// Its commit (40 hex digits).
    pub commit: String,
    /// Where: `REGISTRY/REPOSITORY` (`registry.example.com/shop`).
    pub repository: String,
    /// The tags it was given, the commit first.
    pub tags: Vec<String>,
    /// The image's digest: its manifest's.
    pub digest: Digest,
    /// Who pushed it.
    pub author: String,
    /// RFC 3339.
    pub created_at: String,
}

impl NewPush {
    /// The image by digest: `REGISTRY/REPOSITORY@sha256:…`, what a
    /// Kubernetes manifest names.
    pub fn image(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

/// A recorded push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRecord {
    /// Position in the ledger: later pushes have larger numbers.
    pub seq: u64,
    /// Everything recorded.
    pub push: NewPush,
}

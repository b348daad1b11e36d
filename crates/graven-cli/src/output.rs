//! The JSON shapes of `--json` output (DESIGN.md): fields may be added,
//! never renamed.

use graven::ledger::BuildRecord;

/// `build` and each element of `builds`.
#[derive(serde::Serialize)]
pub(crate) struct BuildJson<'a> {
    pub(crate) artifact: String,
    pub(crate) commit: &'a str,
    pub(crate) dirty: bool,
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    pub(crate) new_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) new_manifest_bytes: Option<u64>,
    pub(crate) reused: bool,
    pub(crate) duration_ms: u64,
    pub(crate) build_command_ms: u64,
    pub(crate) ingest_ms: u64,
    pub(crate) app: &'a str,
    pub(crate) recipe: String,
    pub(crate) author: &'a str,
    pub(crate) host: &'a str,
    pub(crate) started_at: &'a str,
    pub(crate) finished_at: &'a str,
}

impl<'a> BuildJson<'a> {
    pub(crate) fn new(record: &'a BuildRecord) -> Self {
        let build = &record.build;
        Self {
            artifact: build.artifact.to_string(),
            commit: &build.commit,
            dirty: build.dirty,
            files: build.files,
            bytes: build.bytes,
            new_bytes: build.new_bytes,
            new_manifest_bytes: None,
            reused: false,
            duration_ms: build.duration_ms,
            build_command_ms: build.build_command_ms,
            ingest_ms: build.ingest_ms,
            app: &build.app,
            recipe: build.recipe.to_string(),
            author: &build.author,
            host: &build.host,
            started_at: &build.started_at,
            finished_at: &build.finished_at,
        }
    }
}

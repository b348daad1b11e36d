//! The JSON shapes of `--json` output (DESIGN.md): fields may be added,
//! never renamed.

use graven::model::BuildRecord;

/// `build` and each element of `builds`.
#[derive(serde::Serialize)]
pub(crate) struct BuildJson<'a> {
    pub(crate) artifact: String,
    pub(crate) commit: &'a str,
    pub(crate) dirty: bool,
    /// Whether the build command ran in the sandbox.
    pub(crate) sandboxed: bool,
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
    /// In `builds`: whether graven gc deleted the artifact from the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) collected: Option<bool>,
    /// In `build` with a shared store: what was sent to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) upload: Option<graven::store::Transfer>,
    /// In `build` and `builds show`: the symlinks that lead out of /app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host_references: Option<Vec<HostReference>>,
}

/// A symlink of an artifact that leads out of /app.
#[derive(serde::Serialize)]
pub(crate) struct HostReference {
    pub(crate) path: String,
    pub(crate) target: String,
}

impl HostReference {
    pub(crate) fn all(references: &[(String, String)]) -> Vec<Self> {
        references.iter().map(|(path, target)| Self { path: path.clone(), target: target.clone() }).collect()
    }
}

impl<'a> BuildJson<'a> {
    pub(crate) fn new(record: &'a BuildRecord) -> Self {
        let build = &record.build;
        Self {
            artifact: build.artifact.to_string(),
            commit: &build.commit,
            dirty: build.dirty,
            sandboxed: build.sandboxed,
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
            upload: None,
            host_references: None,
            author: &build.author,
            host: &build.host,
            started_at: &build.started_at,
            finished_at: &build.finished_at,
            collected: None,
        }
    }
}

/// `release` and each element of `releases`.
#[derive(serde::Serialize)]
pub(crate) struct ReleaseJson<'a> {
    pub(crate) id: String,
    pub(crate) app: &'a str,
    pub(crate) env: &'a str,
    pub(crate) number: u64,
    pub(crate) version: String,
    pub(crate) kind: &'static str,
    pub(crate) artifact: String,
    pub(crate) config: String,
    pub(crate) parent: Option<String>,
    pub(crate) commit: &'a str,
    pub(crate) author: &'a str,
    /// The machine it was made from, if recorded.
    pub(crate) host: Option<&'a str>,
    pub(crate) created_at: &'a str,
    pub(crate) description: &'a str,
    pub(crate) rollback_of: Option<u64>,
    pub(crate) promoted_from: Option<&'a graven::model::PromotedFrom>,
    pub(crate) current: bool,
}

impl<'a> ReleaseJson<'a> {
    pub(crate) fn new(release: &'a graven::model::Release, current: bool) -> Self {
        Self {
            id: release.id.to_string(),
            app: &release.app,
            env: &release.env,
            number: release.number,
            version: release.version(),
            kind: release.kind.name(),
            artifact: release.artifact.to_string(),
            config: release.config.to_string(),
            parent: release.parent.map(|p| p.to_string()),
            commit: &release.commit,
            author: &release.author,
            host: release.host.as_deref(),
            created_at: &release.created_at,
            description: &release.description,
            rollback_of: release.rollback_of,
            promoted_from: release.promoted_from.as_ref(),
            current,
        }
    }
}

/// `config`.
#[derive(serde::Serialize)]
pub(crate) struct ConfigJson<'a> {
    pub(crate) env: &'a str,
    pub(crate) version: Option<String>,
    pub(crate) vars: std::collections::BTreeMap<&'a str, &'a str>,
    pub(crate) secret: Vec<&'a str>,
}

impl<'a> ConfigJson<'a> {
    pub(crate) fn new(env: &'a str, config: Option<&'a graven::model::ConfigVersion>, reveal: bool) -> Self {
        let Some(config) = config else {
            return Self { env, version: None, vars: std::collections::BTreeMap::new(), secret: Vec::new() };
        };
        Self {
            env,
            version: Some(config.id.to_string()),
            vars: config
                .vars
                .iter()
                .map(|(k, v)| (k.as_str(), graven::release::config::shown(k, v, &config.secret, reveal)))
                .collect(),
            secret: config.secret.iter().map(String::as_str).collect(),
        }
    }
}

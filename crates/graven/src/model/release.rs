//! The two immutable records of the release stage: config versions and
//! releases. Each is identified by the sha256 of its canonical JSON, which
//! includes its parent's id: an environment's history is a hash chain, so
//! a row changed behind graven's back no longer matches its id.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::Digest;

/// What made a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseKind {
    /// A new artifact (`graven release`).
    Deploy,
    /// A config change (`graven config set|unset|import`).
    Config,
    /// An earlier release's artifact and config again (`graven rollback`).
    Rollback,
    /// Another environment's artifact (`graven promote`).
    Promote,
}

impl ReleaseKind {
    /// The kind's name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Config => "config",
            Self::Rollback => "rollback",
            Self::Promote => "promote",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Deploy, Self::Config, Self::Rollback, Self::Promote].into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for ReleaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a promoted release came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PromotedFrom {
    /// The source environment.
    pub env: String,
    /// The source release's number.
    pub number: u64,
}

/// An immutable, numbered release: one artifact with one config version, in
/// one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `sha256:` of the canonical record (every field below).
    pub id: Digest,
    /// The app.
    pub app: String,
    /// The environment.
    pub env: String,
    /// 1, 2, … within the environment, without gaps.
    pub number: u64,
    /// What made it.
    pub kind: ReleaseKind,
    /// The artifact it runs.
    pub artifact: Digest,
    /// The config version it runs with.
    pub config: Digest,
    /// The release it replaced, if any.
    pub parent: Option<Digest>,
    /// The commit the artifact was built from.
    pub commit: String,
    /// Who made it.
    pub author: String,
    /// The machine it was made from (`None` for releases made before
    /// graven recorded it: their ids stay what they were).
    pub host: Option<String>,
    /// When, RFC 3339.
    pub created_at: String,
    /// What it is for.
    pub description: String,
    /// For a rollback: the number of the release rolled back to.
    pub rollback_of: Option<u64>,
    /// For a promotion: where the artifact came from.
    pub promoted_from: Option<PromotedFrom>,
}

/// The canonical form of a release: every field but the id, keys sorted.
#[derive(Serialize)]
struct CanonicalRelease<'a> {
    app: &'a str,
    artifact: &'a Digest,
    author: &'a str,
    commit: &'a str,
    config: &'a Digest,
    created_at: &'a str,
    description: &'a str,
    env: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    kind: ReleaseKind,
    number: u64,
    parent: Option<&'a Digest>,
    promoted_from: Option<&'a PromotedFrom>,
    rollback_of: Option<u64>,
}

impl Release {
    /// `v42`.
    pub fn version(&self) -> String {
        format!("v{}", self.number)
    }

    /// The canonical record's bytes: compact JSON, keys sorted.
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(&CanonicalRelease {
            app: &self.app,
            artifact: &self.artifact,
            author: &self.author,
            commit: &self.commit,
            config: &self.config,
            created_at: &self.created_at,
            description: &self.description,
            env: &self.env,
            host: self.host.as_deref(),
            kind: self.kind,
            number: self.number,
            parent: self.parent.as_ref(),
            promoted_from: self.promoted_from.as_ref(),
            rollback_of: self.rollback_of,
        })
        .expect("release records always serialise")
    }

    /// The id the record's contents give: equal to `id` unless the record
    /// was changed.
    pub fn computed_id(&self) -> Digest {
        Digest::of(&self.canonical_json())
    }
}

/// One immutable version of an environment's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigVersion {
    /// `sha256:` of the canonical record (every field below).
    pub id: Digest,
    /// The app.
    pub app: String,
    /// The environment.
    pub env: String,
    /// 1, 2, … within the environment.
    pub number: u64,
    /// The version it replaced, if any.
    pub parent: Option<Digest>,
    /// The variables.
    pub vars: BTreeMap<String, String>,
    /// Which variables are secret: masked in every output.
    pub secret: BTreeSet<String>,
    /// Who made it.
    pub author: String,
    /// When, RFC 3339.
    pub created_at: String,
    /// What changed, e.g. "Set DATABASE_URL".
    pub description: String,
}

#[derive(Serialize)]
struct CanonicalConfig<'a> {
    app: &'a str,
    author: &'a str,
    created_at: &'a str,
    description: &'a str,
    env: &'a str,
    number: u64,
    parent: Option<&'a Digest>,
    secret: &'a BTreeSet<String>,
    vars: &'a BTreeMap<String, String>,
}

impl ConfigVersion {
    /// The canonical record's bytes: compact JSON, keys sorted.
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(&CanonicalConfig {
            app: &self.app,
            author: &self.author,
            created_at: &self.created_at,
            description: &self.description,
            env: &self.env,
            number: self.number,
            parent: self.parent.as_ref(),
            secret: &self.secret,
            vars: &self.vars,
        })
        .expect("config versions always serialise")
    }

    /// The id the record's contents give.
    pub fn computed_id(&self) -> Digest {
        Digest::of(&self.canonical_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> Release {
        let mut release = Release {
            id: Digest::of(b""),
            app: "hello".to_owned(),
            env: "production".to_owned(),
            number: 2,
            kind: ReleaseKind::Rollback,
            artifact: Digest::of(b"artifact"),
            config: Digest::of(b"config"),
            parent: Some(Digest::of(b"parent")),
            commit: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            author: "dev@example.com".to_owned(),
            host: None,
            created_at: "2026-11-27T12:00:00Z".to_owned(),
            description: "Rollback to v1".to_owned(),
            rollback_of: Some(1),
            promoted_from: None,
        };
        release.id = release.computed_id();
        release
    }

    #[test]
    fn the_release_record_is_canonical_and_chains_to_its_parent() {
        let release = release();
        let json = String::from_utf8(release.canonical_json()).unwrap();
        let expected = format!(
            concat!(
                r#"{{"app":"hello","artifact":"{}","author":"dev@example.com","#,
                r#""commit":"0123456789abcdef0123456789abcdef01234567","config":"{}","#,
                r#""created_at":"2026-11-27T12:00:00Z","description":"Rollback to v1","env":"production","#,
                r#""kind":"rollback","number":2,"parent":"{}","promoted_from":null,"rollback_of":1}}"#
            ),
            Digest::of(b"artifact"),
            Digest::of(b"config"),
            Digest::of(b"parent")
        );
        assert_eq!(json, expected);
        let mut other = release.clone();
        other.parent = Some(Digest::of(b"another parent"));
        assert_ne!(other.computed_id(), release.id, "the parent is part of the id");
    }

    #[test]
    fn every_field_is_part_of_the_id() {
        let release = release();
        let mut changed = release.clone();
        changed.artifact = Digest::of(b"other");
        assert_ne!(changed.computed_id(), release.id);
        let mut changed = release.clone();
        changed.description = "Edited".to_owned();
        assert_ne!(changed.computed_id(), release.id);
        let mut changed = release.clone();
        changed.host = Some("laptop".to_owned());
        assert_ne!(changed.computed_id(), release.id, "the host, once recorded, is part of the id");
        let mut changed = release;
        changed.rollback_of = None;
        assert_ne!(changed.computed_id(), changed.id);
    }

    #[test]
    fn a_release_without_a_host_keeps_the_id_it_had_before_hosts_were_recorded() {
        // The record above, as graven wrote it before releases had a host:
        // no "host" key, so the same bytes and the same id.
        let release = release();
        assert!(!String::from_utf8(release.canonical_json()).unwrap().contains("host"));
        let with_host = Release { host: Some("laptop".to_owned()), ..release };
        let json = String::from_utf8(with_host.canonical_json()).unwrap();
        assert!(json.contains(r#""env":"production","host":"laptop","kind":"rollback""#), "{json}");
    }
}

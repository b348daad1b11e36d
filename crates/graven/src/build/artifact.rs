//! The artifact record: the root of an artifact's manifest plus how to run
//! it (the Procfile's process types and `graven.toml [run]`), as in a Heroku
//! slug. The artifact id is the sha256 of this record's canonical JSON.

use std::collections::BTreeMap;

use crate::Digest;
use crate::app::RunSettings;
use crate::store::{ObjectKind, Store, StoreError};

/// The version of the artifact record format, written into every record.
pub const ARTIFACT_FORMAT: u32 = 1;

/// An artifact: its tree and how to run it. Immutable; identified by
/// [`Artifact::id`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    // Fields in alphabetical order: the record is canonical JSON.
    /// The record format's version.
    pub format: u32,
    /// Process types from the commit's Procfile, `release` included.
    pub process_types: BTreeMap<String, String>,
    /// The digest of the manifest's root listing.
    pub root: Digest,
    /// `graven.toml [run]` settings.
    pub run: RunSettings,
}

impl Artifact {
    /// The record's canonical bytes: compact JSON, keys sorted.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("artifact records always serialise")
    }

    /// The artifact id: the sha256 of the canonical record.
    pub fn id(&self) -> Digest {
        Digest::of(&self.to_canonical_json())
    }

    /// Reads artifact `id` from `store`, checking it against its id.
    pub fn load(store: &dyn Store, id: &Digest) -> Result<Self, ArtifactError> {
        let bytes = store.get_object(ObjectKind::Artifact, id)?;
        if Digest::of(&bytes) != *id {
            return Err(ArtifactError::Corrupt { id: *id, why: "its contents do not match its id".to_owned() });
        }
        serde_json::from_slice(&bytes).map_err(|e| ArtifactError::Corrupt { id: *id, why: e.to_string() })
    }
}

/// An artifact record that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The store failed, or does not have the record.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record is not what its id says.
    #[error("artifact {id} is corrupt: {why}")]
    Corrupt {
        /// The artifact.
        id: Digest,
        /// What is wrong with it.
        why: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_canonical_and_its_digest_is_the_id() {
        let artifact = Artifact {
            format: ARTIFACT_FORMAT,
            process_types: BTreeMap::from([
                ("web".to_owned(), "python3 app.py".to_owned()),
                ("release".to_owned(), "./migrate".to_owned()),
            ]),
            root: Digest::of(b"{\"entries\":[]}"),
            run: RunSettings { health: Some("/healthz".to_owned()), port: Some(8080), ..RunSettings::default() },
        };
        let json = String::from_utf8(artifact.to_canonical_json()).unwrap();
        let root = Digest::of(b"{\"entries\":[]}");
        assert_eq!(
            json,
            format!(
                r#"{{"format":1,"process_types":{{"release":"./migrate","web":"python3 app.py"}},"root":"{root}","run":{{"health":"/healthz","port":8080}}}}"#
            )
        );
        assert_eq!(artifact.id(), Digest::of(json.as_bytes()));
    }
}

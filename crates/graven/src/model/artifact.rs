//! The artifact record: the root of an artifact's manifest plus how to run
//! it (the Procfile's process types and `graven.toml [run]`), as in a Heroku
//! slug. The artifact id is the sha256 of this record's canonical JSON.

use std::collections::BTreeMap;

use crate::Digest;
use crate::app::{ImageSettings, RunSettings};

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
    /// `graven.toml [image]` settings; left out of the record when unset,
    /// so that artifacts from before them keep their ids.
    #[serde(default, skip_serializing_if = "ImageSettings::is_empty")]
    pub image: ImageSettings,
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

    /// Parses and validates an artifact record's stored bytes, which must
    /// hash to `id`: the format graven writes, process type names as a
    /// Procfile allows, commands and run settings that can be used, and the
    /// bytes canonical JSON.
    pub fn parse(bytes: &[u8], id: &Digest) -> Result<Self, RecordProblem> {
        if Digest::of(bytes) != *id {
            return Err(RecordProblem::WrongDigest);
        }
        let artifact: Self = serde_json::from_slice(bytes).map_err(RecordProblem::NotARecord)?;
        if artifact.format != ARTIFACT_FORMAT {
            return Err(RecordProblem::Format { found: artifact.format });
        }
        for (name, command) in &artifact.process_types {
            if !is_process_name(name) {
                return Err(RecordProblem::ProcessName { name: name.clone() });
            }
            if command.trim().is_empty() || command.contains('\0') {
                return Err(RecordProblem::Command { name: name.clone() });
            }
        }
        if let Some(health) = &artifact.run.health
            && !(health.starts_with('/') && health.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(RecordProblem::Health { health: health.clone() });
        }
        if let Err(problem) = artifact.image.check() {
            return Err(RecordProblem::Image { problem });
        }
        if artifact.to_canonical_json() != bytes {
            return Err(RecordProblem::NotCanonical);
        }
        Ok(artifact)
    }
}

/// Whether `name` can name a process type: what a Procfile accepts.
fn is_process_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// What is wrong with an artifact record's bytes.
#[derive(Debug, thiserror::Error)]
pub enum RecordProblem {
    /// The bytes do not hash to the artifact's id.
    #[error("its bytes do not hash to its id")]
    WrongDigest,
    /// Not JSON, or not an artifact record's shape.
    #[error("it is not an artifact record")]
    NotARecord(#[source] serde_json::Error),
    /// A format this graven does not know.
    #[error("it has format {found}; this graven reads format {ARTIFACT_FORMAT}")]
    Format {
        /// The format found.
        found: u32,
    },
    /// A process type name a Procfile could not have.
    #[error("process type {name:?} is not a valid name: use a-z, 0-9, '_' and '-'")]
    ProcessName {
        /// The name, as stored.
        name: String,
    },
    /// An empty command, or one with a NUL byte.
    #[error("process type '{name}' has an empty command or one with a NUL byte")]
    Command {
        /// The process type.
        name: String,
    },
    /// A health check that is not an HTTP path.
    #[error("run health {health:?} is not an HTTP path starting with '/'")]
    Health {
        /// The value, as stored.
        health: String,
    },
    /// Image settings that could not have passed `graven.toml`'s checks.
    #[error("its image settings are invalid: {problem}")]
    Image {
        /// What is wrong.
        problem: String,
    },
    /// Valid, but not the canonical bytes of what it says.
    #[error("it is not canonical JSON (docs/FORMAT.md): key order, spacing or escapes differ")]
    NotCanonical,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_canonical_and_its_digest_is_the_id() {
        let artifact = Artifact {
            format: ARTIFACT_FORMAT,
            image: ImageSettings::default(),
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

//! The formation: how many processes of each Procfile type an environment
//! runs (`web=2 worker=1`). Stored per environment in the ledger, not part
//! of a release: scaling makes no release, and a rollback keeps it.

use std::collections::BTreeMap;
use std::fmt;

/// Process counts by type. A type it does not name runs one process; `0`
/// runs none.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Formation(pub BTreeMap<String, u32>);

/// The most processes of one type graven starts.
pub const MAX_PROCESSES: u32 = 100;

impl Formation {
    /// How many processes of type `kind` run.
    pub fn count(&self, kind: &str) -> u32 {
        self.0.get(kind).copied().unwrap_or(1)
    }

    /// Parses `web=2 worker=1` (or comma-separated), as `graven scale` and
    /// `graven run --formation` take it.
    pub fn parse<'a>(parts: impl IntoIterator<Item = &'a str>) -> Result<Self, FormationError> {
        let mut counts = BTreeMap::new();
        for part in parts.into_iter().flat_map(|part| part.split(',')).filter(|part| !part.is_empty()) {
            let bad = || FormationError { part: part.to_owned() };
            let (kind, count) = part.split_once('=').ok_or_else(bad)?;
            let valid_kind = !kind.is_empty()
                && kind.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
            let count: u32 = count.parse().map_err(|_| bad())?;
            if !valid_kind || count > MAX_PROCESSES || kind == crate::app::RELEASE_PHASE {
                return Err(bad());
            }
            counts.insert(kind.to_owned(), count);
        }
        Ok(Self(counts))
    }

    /// This formation with `other`'s counts over its own.
    #[must_use]
    pub fn overridden_by(&self, other: &Self) -> Self {
        let mut counts = self.0.clone();
        counts.extend(other.0.iter().map(|(kind, count)| (kind.clone(), *count)));
        Self(counts)
    }
}

impl fmt::Display for Formation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("one process of each type");
        }
        let parts: Vec<String> = self.0.iter().map(|(kind, count)| format!("{kind}={count}")).collect();
        f.write_str(&parts.join(" "))
    }
}

/// A formation that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "'{part}' is not TYPE=N: a process type (a-z, 0-9, '_', '-'; not the release phase) and a count from 0 to {MAX_PROCESSES}"
)]
pub struct FormationError {
    /// The part that does not parse.
    pub part: String,
}

/// A formation as the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormationRecord {
    /// The counts.
    pub formation: Formation,
    /// Who set it.
    pub author: String,
    /// When, RFC 3339.
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_space_and_comma_separated_counts() {
        let formation = Formation::parse(["web=2", "worker=0,clock=1"]).unwrap();
        assert_eq!(formation.to_string(), "clock=1 web=2 worker=0");
        assert_eq!((formation.count("web"), formation.count("worker"), formation.count("other")), (2, 0, 1));
        for bad in ["web", "web=-1", "web=x", "Web=1", "=1", "release=1", "web=101"] {
            assert!(Formation::parse([bad]).is_err(), "{bad}");
        }
        let merged =
            Formation::parse(["web=2", "worker=3"]).unwrap().overridden_by(&Formation::parse(["web=1"]).unwrap());
        assert_eq!(merged.to_string(), "web=1 worker=3");
    }
}

/// A restart request (`graven restart`) as the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartRecord {
    /// Its number: a later request has a greater one.
    pub seq: u64,
    /// Who asked.
    pub author: String,
    /// When, RFC 3339.
    pub created_at: String,
}

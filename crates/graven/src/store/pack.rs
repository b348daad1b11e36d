//! Packs: how small objects travel to a shared store. Thousands of small
//! files must not become thousands of requests, so listings and small blobs
//! are sent concatenated in one pack object, with an index object that says
//! where each one is. Each object in a pack is still addressed, and checked
//! when it is read, by its own digest: a pack's index only says where to
//! look. The format is in `docs/FORMAT.md`, "Shared stores".

use serde::{Deserialize, Serialize};

use crate::Digest;

/// Blobs of at least this many bytes travel alone, not in a pack.
pub(super) const LOOSE_MIN: u64 = 1 << 20;

/// A pack is closed once it holds this many bytes.
pub(super) const PACK_TARGET: u64 = 16 << 20;

/// The largest index graven reads: 64 MiB, far above what a pack of
/// [`PACK_TARGET`] bytes of objects of at least one byte could need.
const MAX_INDEX_BYTES: usize = 64 << 20;

/// What a packed object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Packed {
    /// File contents.
    Blob,
    /// A directory listing.
    Manifest,
}

/// One object in a pack. Keys in canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IndexEntry {
    pub(super) digest: Digest,
    pub(super) kind: Packed,
    pub(super) offset: u64,
    pub(super) size: u64,
}

/// A pack's index, as stored. Keys in canonical order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    entries: Vec<IndexEntry>,
    format: u32,
    pack: Digest,
    size: u64,
}

/// A pack's index, validated: entries in pack order, back to back from
/// offset 0 to the pack's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PackIndex {
    /// The pack's digest: the sha256 of its bytes, and its name.
    pub(super) pack: Digest,
    /// Its objects, in order.
    pub(super) entries: Vec<IndexEntry>,
}

/// Why an index cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexProblem {
    /// Too big to be an index.
    #[error("it has {0} bytes, more than an index can")]
    TooBig(usize),
    /// Not JSON of the index's shape.
    #[error("it is not a pack index: {0}")]
    Shape(String),
    /// A format this graven does not know.
    #[error("it has format {0}; this graven reads format 1")]
    Format(u32),
    /// It names another pack.
    #[error("it is the index of pack {0}, not of the pack it is named after")]
    OtherPack(Digest),
    /// Its entries do not tile the pack.
    #[error("its entries do not lie back to back from the pack's start to its end ({0})")]
    Layout(&'static str),
    /// Not in canonical form.
    #[error("it is not canonical JSON")]
    NotCanonical,
}

impl PackIndex {
    /// Parses and validates the index of pack `pack`, which is untrusted
    /// input.
    pub(super) fn parse(bytes: &[u8], pack: &Digest) -> Result<Self, IndexProblem> {
        if bytes.len() > MAX_INDEX_BYTES {
            return Err(IndexProblem::TooBig(bytes.len()));
        }
        let file: IndexFile = serde_json::from_slice(bytes).map_err(|e| IndexProblem::Shape(e.to_string()))?;
        if file.format != 1 {
            return Err(IndexProblem::Format(file.format));
        }
        if file.pack != *pack {
            return Err(IndexProblem::OtherPack(file.pack));
        }
        if file.entries.is_empty() {
            return Err(IndexProblem::Layout("it has no entries"));
        }
        let mut end = 0u64;
        for entry in &file.entries {
            if entry.offset != end {
                return Err(IndexProblem::Layout("an entry does not start where the one before ends"));
            }
            end = end.checked_add(entry.size).ok_or(IndexProblem::Layout("the sizes overflow"))?;
        }
        if end != file.size {
            return Err(IndexProblem::Layout("the entries do not end where the pack does"));
        }
        let index = Self { pack: file.pack, entries: file.entries };
        if index.to_canonical_json() != bytes {
            return Err(IndexProblem::NotCanonical);
        }
        Ok(index)
    }

    /// The pack's size in bytes.
    pub(super) fn size(&self) -> u64 {
        self.entries.last().map_or(0, |entry| entry.offset + entry.size)
    }

    /// The index as stored: canonical JSON.
    pub(super) fn to_canonical_json(&self) -> Vec<u8> {
        let file = IndexFile { entries: self.entries.clone(), format: 1, pack: self.pack, size: self.size() };
        serde_json::to_vec(&file).expect("an index always serialises")
    }
}

/// A pack being filled.
#[derive(Debug, Default)]
pub(super) struct PackBuilder {
    bytes: Vec<u8>,
    entries: Vec<IndexEntry>,
}

impl PackBuilder {
    /// Appends object `digest`, whose bytes are `bytes`.
    pub(super) fn push(&mut self, kind: Packed, digest: Digest, bytes: &[u8]) {
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(bytes);
        self.entries.push(IndexEntry { digest, kind, offset, size: bytes.len() as u64 });
    }

    /// The pack's bytes and its index.
    pub(super) fn finish(self) -> (Vec<u8>, PackIndex) {
        let pack = Digest::of(&self.bytes);
        (self.bytes, PackIndex { pack, entries: self.entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, PackIndex) {
        let mut builder = PackBuilder::default();
        builder.push(Packed::Manifest, Digest::of(b"{}"), b"{}");
        builder.push(Packed::Blob, Digest::of(b"hello"), b"hello");
        // An empty file is a blob like any other.
        builder.push(Packed::Blob, Digest::of(b""), b"");
        builder.finish()
    }

    #[test]
    fn an_index_round_trips_through_its_canonical_form() {
        let (bytes, index) = sample();
        assert_eq!(bytes, b"{}hello");
        let json = index.to_canonical_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.starts_with(r#"{"entries":[{"digest":"sha256:"#), "{text}");
        assert!(text.ends_with(&format!(r#""format":1,"pack":"{}","size":7}}"#, index.pack)), "{text}");
        assert_eq!(PackIndex::parse(&json, &index.pack).unwrap(), index);
    }

    #[test]
    fn an_index_that_does_not_tile_its_pack_or_names_another_is_refused() {
        let (_, index) = sample();
        let json = String::from_utf8(index.to_canonical_json()).unwrap();
        let other = Digest::of(b"other");
        assert_eq!(PackIndex::parse(json.as_bytes(), &other), Err(IndexProblem::OtherPack(index.pack)));
        let gap = json.replace(r#""offset":2"#, r#""offset":3"#);
        assert!(matches!(PackIndex::parse(gap.as_bytes(), &index.pack), Err(IndexProblem::Layout(_))));
        let long = json.replace(r#""size":7"#, r#""size":9"#);
        assert!(matches!(PackIndex::parse(long.as_bytes(), &index.pack), Err(IndexProblem::Layout(_))));
        let spaced = json.replace(',', ", ");
        assert_eq!(PackIndex::parse(spaced.as_bytes(), &index.pack), Err(IndexProblem::NotCanonical));
        let unknown = json.replace(r#""format":1"#, r#""format":1,"x":1"#);
        assert!(matches!(PackIndex::parse(unknown.as_bytes(), &index.pack), Err(IndexProblem::Shape(_))));
        let future = json.replace(r#""format":1"#, r#""format":2"#);
        assert_eq!(PackIndex::parse(future.as_bytes(), &index.pack), Err(IndexProblem::Format(2)));
    }
}

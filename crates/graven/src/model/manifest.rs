//! The manifest: an artifact's tree as a Merkle tree of directory listings,
//! like git's trees. This module owns the listing type and its validating
//! parser; reading listings from a store is `store`'s ([`Listing::load`]). Each directory is one canonical JSON object; a
//! subdirectory appears in its parent by the digest of its own listing, so
//! an unchanged directory is stored once however many builds contain it, and
//! comparing two trees skips identical subtrees. `docs/FORMAT.md` is the
//! specification; this module must match it byte for byte.

use std::collections::BTreeMap;

use serde::ser::SerializeMap as _;

use crate::Digest;

/// One directory's listing: its entries, sorted by name (bytewise).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    /// The directory's entries.
    pub entries: Vec<Entry>,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's name: one path component, valid UTF-8.
    pub name: String,
    /// What the entry is.
    pub kind: EntryKind,
}

/// What an entry is, with what identifies its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file: mode 0644, or 0755 if `executable`.
    File {
        /// Whether the file is executable.
        executable: bool,
        /// Its size in bytes.
        size: u64,
        /// The sha256 of its contents: the blob's name in the store.
        digest: Digest,
    },
    /// A directory (mode 0755), by the digest of its listing.
    Dir {
        /// The digest of the subdirectory's listing.
        tree: Digest,
    },
    /// A symbolic link whose target is relative and stays inside the tree.
    Symlink {
        /// The link's target, as stored in the link.
        target: String,
    },
}

impl EntryKind {
    /// The file mode this entry has in stores, materialised trees and exports.
    pub fn mode(&self) -> u32 {
        match self {
            Self::File { executable: false, .. } => 0o644,
            Self::File { executable: true, .. } | Self::Dir { .. } => 0o755,
            Self::Symlink { .. } => 0o777,
        }
    }
}

// Keys are written in sorted order: the listing is canonical JSON.
impl serde::Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.kind {
            EntryKind::File { executable, size, digest } => {
                let mut map = serializer.serialize_map(Some(5))?;
                map.serialize_entry("digest", digest)?;
                map.serialize_entry("kind", "file")?;
                map.serialize_entry("mode", if *executable { "0755" } else { "0644" })?;
                map.serialize_entry("name", &self.name)?;
                map.serialize_entry("size", size)?;
                map.end()
            }
            EntryKind::Dir { tree } => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("kind", "dir")?;
                map.serialize_entry("name", &self.name)?;
                map.serialize_entry("tree", tree)?;
                map.end()
            }
            EntryKind::Symlink { target } => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("kind", "symlink")?;
                map.serialize_entry("name", &self.name)?;
                map.serialize_entry("target", target)?;
                map.end()
            }
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    kind: String,
    name: String,
    digest: Option<Digest>,
    mode: Option<String>,
    size: Option<u64>,
    tree: Option<Digest>,
    target: Option<String>,
}

impl<'de> serde::Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let raw = RawEntry::deserialize(deserializer)?;
        let missing = |field: &str| D::Error::custom(format!("{} entry '{}' has no {field}", raw.kind, raw.name));
        let kind = match raw.kind.as_str() {
            "file" => EntryKind::File {
                executable: match raw.mode.as_deref() {
                    Some("0644") => false,
                    Some("0755") => true,
                    Some(other) => {
                        return Err(D::Error::custom(format!(
                            "file '{}' has mode '{other}': expected 0644 or 0755",
                            raw.name
                        )));
                    }
                    None => return Err(missing("mode")),
                },
                size: raw.size.ok_or_else(|| missing("size"))?,
                digest: raw.digest.ok_or_else(|| missing("digest"))?,
            },
            "dir" => EntryKind::Dir { tree: raw.tree.ok_or_else(|| missing("tree"))? },
            "symlink" => EntryKind::Symlink { target: raw.target.clone().ok_or_else(|| missing("target"))? },
            other => return Err(D::Error::custom(format!("entry '{}' has unknown kind '{other}'", raw.name))),
        };
        Ok(Self { name: raw.name, kind })
    }
}

/// The most bytes one name may have: Linux's `NAME_MAX`.
pub const MAX_NAME_BYTES: usize = 255;

/// Whether a symlink in directory `dir` (relative to the tree's root,
/// `""` for the root) with `target` leads out of the tree when the tree is
/// at `/app`: an absolute target not under `/app`, or a relative one whose
/// `..` climb above the root. Judged on the target's text alone, as the
/// link is never followed: such a link is a **host reference**, to
/// something the machine that runs the artifact must have.
pub fn leaves_tree(dir: &str, target: &str) -> bool {
    if let Some(rest) = target.strip_prefix('/') {
        return rest != "app" && !rest.starts_with("app/");
    }
    let mut depth: Vec<&str> = dir.split('/').filter(|part| !part.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return true;
                }
            }
            name => depth.push(name),
        }
    }
    false
}

/// The most bytes a symlink's target may have: Linux's `PATH_MAX` less the
/// terminating NUL.
pub const MAX_TARGET_BYTES: usize = 4095;

/// Why `name` cannot be one entry's name, if it cannot: a name is one path
/// component, never `.`, `..` or empty, without `/` or NUL, at most
/// [`MAX_NAME_BYTES`] bytes. (UTF-8 it is already, as a `str`.)
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a name may not be empty")
    } else if name == "." || name == ".." {
        Some("a name may not be '.' or '..'")
    } else if name.contains('/') {
        Some("a name may not contain '/'")
    } else if name.contains('\0') {
        Some("a name may not contain a NUL byte")
    } else if name.len() > MAX_NAME_BYTES {
        Some("a name may have at most 255 bytes")
    } else {
        None
    }
}

/// Why `target` cannot be a symlink's target, if it cannot. A target is
/// data that graven stores and writes but never follows, so any path will
/// do that the kernel accepts: not empty, no NUL, at most
/// [`MAX_TARGET_BYTES`] bytes.
fn target_problem(target: &str) -> Option<&'static str> {
    if target.is_empty() {
        Some("a symlink's target may not be empty")
    } else if target.contains('\0') {
        Some("a symlink's target may not contain a NUL byte")
    } else if target.len() > MAX_TARGET_BYTES {
        Some("a symlink's target may have at most 4095 bytes")
    } else {
        None
    }
}

impl Listing {
    /// The listing's canonical bytes: compact JSON, keys sorted.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("listings always serialise")
    }

    /// Parses and validates a listing's stored bytes, which must hash to
    /// `digest`: every name one path component, entries sorted by name and
    /// unique, only the kinds and modes `docs/FORMAT.md` allows, and the
    /// bytes canonical JSON.
    pub fn parse(bytes: &[u8], digest: &Digest) -> Result<Self, ListingProblem> {
        if Digest::of(bytes) != *digest {
            return Err(ListingProblem::WrongDigest);
        }
        let listing: Self = serde_json::from_slice(bytes).map_err(ListingProblem::NotAListing)?;
        let mut previous: Option<&str> = None;
        for entry in &listing.entries {
            if let Some(why) = name_problem(&entry.name) {
                return Err(ListingProblem::BadName { name: entry.name.clone(), why });
            }
            if let EntryKind::Symlink { target } = &entry.kind
                && let Some(why) = target_problem(target)
            {
                return Err(ListingProblem::BadTarget { name: entry.name.clone(), why });
            }
            match previous {
                Some(previous) if previous == entry.name => {
                    return Err(ListingProblem::Duplicate { name: entry.name.clone() });
                }
                Some(previous) if previous.as_bytes() > entry.name.as_bytes() => {
                    return Err(ListingProblem::Unsorted { name: entry.name.clone(), after: previous.to_owned() });
                }
                _ => {}
            }
            previous = Some(&entry.name);
        }
        // Key order, whitespace, escapes, number forms: whatever the parser
        // let through must write back to the same bytes.
        if listing.to_canonical_json() != bytes {
            return Err(ListingProblem::NotCanonical);
        }
        Ok(listing)
    }
}

/// What is wrong with a listing's bytes.
#[derive(Debug, thiserror::Error)]
pub enum ListingProblem {
    /// The bytes do not hash to the listing's name.
    #[error("its bytes do not hash to its name")]
    WrongDigest,
    /// Not JSON, or not a listing's shape.
    #[error("it is not a listing")]
    NotAListing(#[source] serde_json::Error),
    /// A name, or a symlink's target, that cannot be.
    #[error("entry {name:?}: {why}")]
    BadName {
        /// The entry's name, as stored.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A symlink's target that cannot be.
    #[error("symlink {name:?}: {why}")]
    BadTarget {
        /// The symlink's name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Two entries with one name.
    #[error("entry {name:?} is listed twice")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// Entries out of bytewise order.
    #[error("entry {name:?} comes after {after:?}: entries must be sorted by name")]
    Unsorted {
        /// The entry out of order.
        name: String,
        /// The entry before it.
        after: String,
    },
    /// Valid, but not the canonical bytes of what it says.
    #[error("it is not canonical JSON (docs/FORMAT.md): key order, spacing or escapes differ")]
    NotCanonical,
}

/// Every file and symlink of a tree by path, and every directory by presence
/// (as `path/`): what two builds are compared by.
pub type FlatTree = BTreeMap<String, EntryKind>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_leave_the_tree_by_their_text() {
        for (dir, target, leaves) in [
            ("", "b", false),
            ("lib", "../bin/x", false),
            ("lib/py", "../../b", false),
            ("", "../b", true),
            ("lib", "x/../../../b", true),
            ("lib", "./../bin/./x", false),
            ("", "/etc/passwd", true),
            ("", "/app", false),
            ("a", "/app/lib/x", false),
            ("", "/application", true),
        ] {
            assert_eq!(leaves_tree(dir, target), leaves, "{dir} -> {target}");
        }
    }

    #[test]
    fn listings_are_canonical_json_with_sorted_keys() {
        let listing = Listing {
            entries: vec![
                Entry {
                    name: "app.py".into(),
                    kind: EntryKind::File { executable: false, size: 5, digest: Digest::of(b"hello") },
                },
                Entry { name: "bin".into(), kind: EntryKind::Dir { tree: Digest::of(b"{\"entries\":[]}") } },
                Entry { name: "current".into(), kind: EntryKind::Symlink { target: "bin/run".into() } },
            ],
        };
        let json = String::from_utf8(listing.to_canonical_json()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"entries":[{"digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","kind":"file","mode":"0644","name":"app.py","size":5},"#,
                r#"{"kind":"dir","name":"bin","tree":"sha256:"#,
                "bd3b7f0a7d5f4c5cfa8c2a33cf3b8a9e3ea0a29e08d34c90bb3e8d1e5e9e2b53",
                r#""},{"kind":"symlink","name":"current","target":"bin/run"}]}"#
            )
            .replace("bd3b7f0a7d5f4c5cfa8c2a33cf3b8a9e3ea0a29e08d34c90bb3e8d1e5e9e2b53", &Digest::of(b"{\"entries\":[]}").hex())
        );
        let back: Listing = serde_json::from_str(&json).unwrap();
        assert_eq!(back, listing);
    }

    /// Parses `json` as stored under its own digest; the error, if any.
    fn problem(json: &str) -> Option<String> {
        Listing::parse(json.as_bytes(), &Digest::of(json.as_bytes())).err().map(|e| e.to_string())
    }

    #[test]
    fn every_rule_of_a_listing_is_checked_on_load() {
        let file = |name: &str| {
            format!(r#"{{"digest":"{}","kind":"file","mode":"0644","name":{name},"size":1}}"#, Digest::of(b"x"))
        };
        let listing = |entries: &[String]| format!(r#"{{"entries":[{}]}}"#, entries.join(","));
        let cases = [
            (listing(&[file(r#""""#)]), "entry \"\": a name may not be empty"),
            (listing(&[file(r#"".""#)]), "a name may not be '.' or '..'"),
            (listing(&[file(r#""..""#)]), "a name may not be '.' or '..'"),
            (listing(&[file(r#""a/b""#)]), "a name may not contain '/'"),
            (listing(&[file(r#""/abs""#)]), "a name may not contain '/'"),
            (listing(&[file(r#""a\u0000b""#)]), "a name may not contain a NUL byte"),
            (listing(&[file(&format!("\"{}\"", "n".repeat(256)))]), "a name may have at most 255 bytes"),
            (listing(&[file(r#""a""#), file(r#""a""#)]), "entry \"a\" is listed twice"),
            (listing(&[file(r#""b""#), file(r#""a""#)]), "entry \"a\" comes after \"b\""),
            (
                listing(&[r#"{"kind":"symlink","name":"l","target":""}"#.to_owned()]),
                "symlink \"l\": a symlink's target may not be empty",
            ),
            (format!(r#"{{"entries": [{}]}}"#, file(r#""a""#)), "not canonical JSON"),
            (listing(&[file(r#""\u0061""#)]), "not canonical JSON"),
        ];
        for (json, expected) in cases {
            let found = problem(&json).unwrap_or_else(|| panic!("accepted {json}"));
            assert!(found.contains(expected), "{json}: {found}");
        }
        let good = listing(&[file(r#""a""#)]);
        assert_eq!(problem(&good), None);
        let error = Listing::parse(good.as_bytes(), &Digest::of(b"other")).unwrap_err().to_string();
        assert_eq!(error, "its bytes do not hash to its name");
    }

    #[test]
    fn rejects_unknown_kinds_and_modes() {
        let bad_mode = r#"{"entries":[{"digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","kind":"file","mode":"0600","name":"a","size":1}]}"#;
        let error = serde_json::from_str::<Listing>(bad_mode).unwrap_err().to_string();
        assert!(error.contains("file 'a' has mode '0600'"), "{error}");
        let bad_kind = r#"{"entries":[{"kind":"fifo","name":"p"}]}"#;
        let error = serde_json::from_str::<Listing>(bad_kind).unwrap_err().to_string();
        assert!(error.contains("entry 'p' has unknown kind 'fifo'"), "{error}");
    }
}

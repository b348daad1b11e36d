//! The sha256 digests that identify blobs, directory listings, artifacts and
//! recipes. Owns parsing and printing of `sha256:<hex>`; nothing else.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 digest, printed as `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

/// The algorithm prefix of every digest graven prints.
pub const PREFIX: &str = "sha256:";

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }

    /// `sha256:` and the first 12 hex digits: enough to be unique in practice,
    /// short enough for a table. Ends without punctuation so a double-click
    /// selects it whole.
    pub fn short(&self) -> String {
        format!("{PREFIX}{}", &self.hex()[..12])
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A string that is not `sha256:` followed by 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a sha256 digest: expected 'sha256:' followed by 64 hex digits")]
pub struct ParseDigestError(String);

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text.strip_prefix(PREFIX).unwrap_or(text);
        let bad = || ParseDigestError(text.to_owned());
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let high = hex_value(pair[0]).ok_or_else(bad)?;
            let low = hex_value(pair[1]).ok_or_else(bad)?;
            bytes[i] = high << 4 | low;
        }
        Ok(Self(bytes))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental sha256, for content read in pieces.
#[derive(Default)]
pub(crate) struct Hasher(Sha256);

impl Hasher {
    /// Adds `bytes` to the digest.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything added.
    pub(crate) fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

thread_local! {
    /// Each hashing thread reads through one buffer, allocated once.
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 1 << 20]);
}

/// The digest of everything `reader` yields, and how many bytes that was.
pub fn of_reader(mut reader: impl std::io::Read) -> std::io::Result<(Digest, u64)> {
    BUFFER.with_borrow_mut(|buffer| {
        let mut hasher = Hasher::default();
        let mut total = 0u64;
        loop {
            let read = match reader.read(buffer) {
                Ok(0) => return Ok((hasher.finish(), total)),
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buffer[..read]);
            total += read as u64;
        }
    })
}

/// Like [`of_reader`], and, in the same pass, whether the bytes hold a
/// match of `finder` (a needle at most `longest` bytes, which may straddle
/// two reads).
pub(crate) fn of_reader_finding(
    mut reader: impl std::io::Read,
    finder: &aho_corasick::AhoCorasick,
    longest: usize,
) -> std::io::Result<(Digest, u64, bool)> {
    BUFFER.with_borrow_mut(|buffer| {
        let mut hasher = Hasher::default();
        let (mut total, mut found) = (0u64, false);
        // The last bytes read, where a match may begin.
        let keep = longest.saturating_sub(1);
        let mut tail: Vec<u8> = Vec::with_capacity(2 * keep);
        loop {
            let read = match reader.read(buffer) {
                Ok(0) => return Ok((hasher.finish(), total, found)),
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let chunk = &buffer[..read];
            hasher.update(chunk);
            total += read as u64;
            if !found {
                // The end of what came before, and the start of this read:
                // a match across the two.
                let before = tail.len();
                tail.extend_from_slice(&chunk[..chunk.len().min(keep)]);
                found = (before > 0 && finder.is_match(&tail[..])) || finder.is_match(chunk);
                if chunk.len() >= keep {
                    tail.clear();
                    tail.extend_from_slice(&chunk[chunk.len() - keep..]);
                } else {
                    let excess = tail.len().saturating_sub(keep);
                    tail.drain(..excess);
                }
            }
        }
    })
}

/// Whether `text` could be a (prefix of a) digest: 7 to 64 lowercase hex
/// digits, with or without `sha256:`.
pub fn is_hex_prefix(text: &str) -> bool {
    let hex = text.strip_prefix(PREFIX).unwrap_or(text);
    (7..=64).contains(&hex.len()) && hex.bytes().all(|c| hex_value(c).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives its bytes `step` at a time, as a slow pipe would.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.bytes.len().min(self.step).min(out.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_path_is_found_while_hashing_also_across_reads_and_the_digest_is_the_same() {
        let finder = aho_corasick::AhoCorasick::new(["/app/out"]).unwrap();
        let text = b"#!/app/out/bin/python\nprint(1)\n";
        for step in 1..=text.len() {
            let (digest, total, found) = of_reader_finding(Trickle { bytes: text, step }, &finder, 8).unwrap();
            assert!(found, "missed with reads of {step}");
            assert_eq!((digest, total), (Digest::of(text), text.len() as u64));
        }
        for step in [1, 3, 7, 100] {
            let near = b"/app/ou /app/outX".to_vec();
            let miss = b"/app/o ut /ap p/out";
            assert!(!of_reader_finding(Trickle { bytes: miss, step }, &finder, 8).unwrap().2, "{step}");
            assert!(of_reader_finding(Trickle { bytes: &near, step }, &finder, 8).unwrap().2, "{step}");
        }
    }

    #[test]
    fn round_trips_through_text() {
        let digest = Digest::of(b"hello");
        let text = digest.to_string();
        assert_eq!(text, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(text.parse::<Digest>().unwrap(), digest);
        assert_eq!(digest.hex().parse::<Digest>().unwrap(), digest);
        assert_eq!(digest.short(), "sha256:2cf24dba5fb0");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "sha256:", "sha256:xyz", &"A".repeat(64), &"0".repeat(63)] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn recognises_prefixes() {
        assert!(is_hex_prefix("2cf24db"));
        assert!(is_hex_prefix("sha256:2cf24dba5"));
        assert!(!is_hex_prefix("2cf24d"));
        assert!(!is_hex_prefix("HEAD"));
        assert!(!is_hex_prefix("main"));
    }
}

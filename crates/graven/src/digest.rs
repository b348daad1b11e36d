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

/// Whether `text` could be a (prefix of a) digest: 7 to 64 lowercase hex
/// digits, with or without `sha256:`.
pub fn is_hex_prefix(text: &str) -> bool {
    let hex = text.strip_prefix(PREFIX).unwrap_or(text);
    (7..=64).contains(&hex.len()) && hex.bytes().all(|c| hex_value(c).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! Timestamps: graven stores and prints RFC 3339 UTC times with second
//! precision.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, as an RFC 3339 UTC timestamp (`2026-11-27T12:00:00Z`).
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `time` as an RFC 3339 UTC timestamp.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Seconds between an RFC 3339 timestamp and now; `None` if it does not parse.
pub fn age(rfc3339: &str) -> Option<Duration> {
    let then = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(SystemTime::now().duration_since(then).unwrap_or_default())
}

/// Seconds since the epoch of `time`.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

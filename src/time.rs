//! Wall-clock time in the units the protocol uses (Unix seconds for token expiry, milliseconds
//! for message timestamps and deadlines).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Whole seconds since the Unix epoch.
pub fn now_unix_s() -> u64 {
    now_unix_ms() / 1000
}

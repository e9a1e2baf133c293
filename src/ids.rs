//! Newtype identifiers, so a connection id can never be passed where a message id is expected.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// One WebSocket connection on this node. Allocated by [`ConnIdAllocator`], never reused while
/// the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A map keyed by connection id. The ids are the server's own (a counter, never a client's
/// choice), so they are hashed with a fast unkeyed hash rather than SipHash, whose resistance to
/// chosen keys only matters for keys a client picks (user names, addresses). The registry looks
/// connections up several times per handshake, message and close.
pub type ConnMap<V> = HashMap<ConnId, V, rustc_hash::FxBuildHasher>;

/// A set of connection ids, hashed as [`ConnMap`]'s keys are.
pub type ConnSet = HashSet<ConnId, rustc_hash::FxBuildHasher>;

/// Hands out connection ids; shared by every worker thread.
#[derive(Debug, Default)]
pub struct ConnIdAllocator(AtomicU64);

impl ConnIdAllocator {
    /// Ids above `base` (with several nodes, this node's number in the high bits).
    pub fn starting_at(base: u64) -> Self {
        Self(AtomicU64::new(base))
    }

    pub fn next(&self) -> ConnId {
        ConnId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// A user name: the `sub` claim of a token, or a name from the user directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

/// Why a string a client sent is not a user name it may name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user names are 1 to 256 bytes")]
pub struct InvalidUserName;

impl UserId {
    /// Longest user name a client may name (to invite, kick or write to); token subjects may
    /// be longer, they just cannot be named.
    pub const MAX_LEN: usize = 256;

    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// A user name a client named.
    pub fn parse(name: &str) -> Result<Self, InvalidUserName> {
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(InvalidUserName);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A chat room name: 1 to 64 characters of `[A-Za-z0-9._-]` (read back only if it is one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct RoomId(String);

impl From<RoomId> for String {
    fn from(room: RoomId) -> Self {
        room.0
    }
}

impl TryFrom<String> for RoomId {
    type Error = InvalidRoomName;

    fn try_from(name: String) -> Result<Self, InvalidRoomName> {
        Self::parse(&name)
    }
}

/// Why a string is not a valid [`RoomId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("room names are 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
pub struct InvalidRoomName;

impl RoomId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(name: &str) -> Result<Self, InvalidRoomName> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > Self::MAX_LEN || !name.chars().all(valid_char) {
            return Err(InvalidRoomName);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A login (the refresh-token family a token's `sid` names) or a server-side session: ending
/// it closes every socket bound to it. Not a secret: a session's id is the hash of its cookie.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A random URL-safe identifier of `bytes` random bytes (token ids, tickets, session cookies,
/// generated secrets).
pub fn random_id(bytes: usize) -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_documented_alphabet() {
        assert!(RoomId::parse("general").is_ok());
        assert!(RoomId::parse("a.b_c-D9").is_ok());
        assert!(RoomId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(RoomId::parse(""), Err(InvalidRoomName));
        assert_eq!(RoomId::parse(&"x".repeat(65)), Err(InvalidRoomName));
        assert_eq!(RoomId::parse("with space"), Err(InvalidRoomName));
        assert_eq!(RoomId::parse("ünï"), Err(InvalidRoomName));
    }

    #[test]
    fn conn_ids_are_unique_and_increasing() {
        let ids = ConnIdAllocator::default();
        let a = ids.next();
        let b = ids.next();
        assert!(b > a);
    }
}

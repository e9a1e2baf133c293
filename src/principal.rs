//! Who a credential proves, as plain data: the leaf that stores, auth and the registry share,
//! so the storage layer does not depend on the authentication layer above it.

use std::collections::BTreeMap;

use crate::ids::{SessionId, UserId};

/// The identity proven by a valid token (or a session, in session mode).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    pub user: UserId,
    pub roles: Vec<String>,
    /// The token's `jti`, when it has one: lets operators tell a user's sockets apart.
    pub token_id: Option<String>,
    /// The token's `exp`, Unix seconds: the registry closes the socket at this instant.
    pub expires_at: u64,
    /// When the credential was issued, Unix milliseconds: tokens minted here say so to the
    /// millisecond (`iat_ms`); other tokens count from the start of their `iat` second, and a
    /// token without `iat` from the epoch, so a revocation in that second covers them.
    pub issued_at_ms: u64,
    /// The token's `sid`: the login (refresh token family) it came from, so a logout can end
    /// every token and socket of that login.
    pub session_id: Option<SessionId>,
    /// The token's claims whose value is a list of strings (other than `roles`): what a room
    /// rule's `claim` reads (e.g. `rooms: ["proj-x", "team.ops.*"]`). Empty for sessions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, Vec<String>>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }
}

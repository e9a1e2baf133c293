//! Storage behind small async traits: refresh tokens, one-time tickets, revocation marks,
//! server-side sessions and failed-login counters.
//!
//! [`memory`] is the embedded default. A shared backend (Redis) implements the same traits so
//! that several nodes see the same state and it survives a restart. Secrets are never stored:
//! refresh tokens and tickets are kept under the SHA-256 of their value ([`SecretHash`]).

pub mod link;
pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::ids::{SessionId, UserId};
use crate::principal::Principal;
use crate::ratelimit::Gcra;

/// A store could not be reached or answered nonsense. The text is for logs, never for clients.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

/// SHA-256 of `text`, in hex: a fixed-size key for values of any length.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of an opaque secret (refresh token, ticket): what the stores key on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretHash(String);

impl SecretHash {
    pub fn of(secret: &str) -> Self {
        Self(sha256_hex(secret))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One refresh token. Tokens of one login share a `family`; each refresh replaces the token
/// with a new one in the same family.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefreshRecord {
    pub user: UserId,
    pub roles: Vec<String>,
    /// The login this token descends from; access tokens carry it as `sid`.
    pub family: SessionId,
    /// Unix milliseconds; compared with the user's revocation mark. (Records written in
    /// seconds by older versions compare as long before any mark: refused, the safe side.)
    #[serde(alias = "issued_at")]
    pub issued_at_ms: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

/// What `take` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// First use: the caller rotates it.
    Fresh(RefreshRecord),
    /// Presented before and rotated already: reuse, which means theft.
    Reused(RefreshRecord),
}

/// Refresh tokens, rotated on every use.
#[async_trait]
pub trait RefreshStore: Send + Sync + 'static {
    async fn put(&self, token: &SecretHash, record: RefreshRecord) -> Result<(), StoreError>;
    /// Marks the token used and returns it; a used token is kept until it expires so that a
    /// second use is recognised. `None`: unknown or expired.
    async fn take(&self, token: &SecretHash) -> Result<Option<Taken>, StoreError>;
}

/// One-time WebSocket tickets.
#[async_trait]
pub trait TicketStore: Send + Sync + 'static {
    /// Stores a ticket for `principal` until `expires_at` (Unix seconds).
    async fn put(&self, ticket: &SecretHash, principal: Principal, expires_at: u64) -> Result<(), StoreError>;
    /// Removes and returns the ticket; `None` if unknown, used or expired.
    async fn take(&self, ticket: &SecretHash) -> Result<Option<Principal>, StoreError>;
}

/// The revocation marks that apply to one token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// The user's latest "revoke everything issued until T" mark, Unix milliseconds.
    pub user_revoked_at_ms: Option<u64>,
    /// The token's login (`sid`) was ended: logout, or refresh token reuse.
    pub session_revoked: bool,
    /// Roles an operator took from the user: not honoured, whatever a credential says.
    pub withdrawn_roles: Vec<String>,
}

/// Revocation marks: per user ("everything issued until T"), per login session (`sid`), and
/// roles withdrawn from a user.
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Refuse every token of `user` issued at or before `at` (Unix seconds).
    async fn revoke_user(&self, user: &UserId, at: u64) -> Result<(), StoreError>;
    /// From now on `role` counts for nothing in `user`'s credentials, until restored.
    async fn withdraw_role(&self, user: &UserId, role: &str) -> Result<(), StoreError>;
    /// Undoes [`RevocationStore::withdraw_role`]; answers whether the role was withdrawn.
    async fn restore_role(&self, user: &UserId, role: &str) -> Result<bool, StoreError>;
    /// Refuse every token of login session `sid`, keeping the mark until `until` (Unix seconds),
    /// by which time every token of that session has expired.
    async fn revoke_session(&self, sid: &SessionId, until: u64) -> Result<(), StoreError>;
    /// The marks for a user and (optionally) a session, in one look-up.
    async fn marks(&self, user: &UserId, sid: Option<&SessionId>) -> Result<Marks, StoreError>;
}

/// A server-side session (session mode). Its id is the SHA-256 of the cookie's secret value,
/// so the store (and the admin API, which shows ids) never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user: UserId,
    pub roles: Vec<String>,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Unix milliseconds of the last activity that was written (writes are throttled).
    pub last_seen_ms: u64,
    /// Unix milliseconds: the absolute end, whatever the activity.
    pub absolute_expiry_ms: u64,
    /// Milliseconds of inactivity after which the session ends.
    pub idle_timeout_ms: u64,
}

impl SessionRecord {
    /// When the session ends if nothing touches it again.
    pub fn deadline_ms(&self) -> u64 {
        (self.last_seen_ms + self.idle_timeout_ms).min(self.absolute_expiry_ms)
    }
}

/// Something the session store saw happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The session ended (logout, expiry, deletion by anyone): close its sockets.
    Ended(SessionId),
    /// Notifications may have been missed (a reconnect): check the live sessions.
    Resync,
}

/// Server-side sessions. Implementations report every ending through [`SessionStore::events`].
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn create(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// The live session, if any.
    async fn get(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// Records activity at `now_ms`, sliding the idle deadline; false if the session is gone.
    async fn touch(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError>;
    /// Ends a session; false if it did not exist.
    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError>;
    /// Ends every session of `user`; answers their ids.
    async fn delete_user(&self, user: &UserId) -> Result<Vec<SessionId>, StoreError>;
    /// Live sessions, of one user or all.
    async fn list(&self, user: Option<&UserId>) -> Result<Vec<SessionRecord>, StoreError>;
    /// Which of `ids` are still alive (used to reconcile after missed notifications).
    async fn alive(&self, ids: &[SessionId]) -> Result<Vec<bool>, StoreError>;
    /// Endings and resync requests, from this node and (with a shared store) every other.
    fn events(&self) -> broadcast::Receiver<SessionEvent>;
}

/// One rate-limited counter: its key (under the store's own prefix) and its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub key: String,
    pub limit: Gcra,
}

/// Rate-limited counters (failed logins), shared by every node with a shared store.
///
/// An attempt is counted *before* the work it guards, all counters at once or none, so that
/// concurrent attempts cannot all slip through before the first one is counted; an attempt
/// that turns out not to count (a successful login) is given back with `release`.
#[async_trait]
pub trait AttemptStore: Send + Sync + 'static {
    /// Counts one attempt on every counter if each has room; otherwise counts none and answers
    /// how long until all of them would have room.
    async fn acquire(&self, counters: &[Counter]) -> Result<Option<Duration>, StoreError>;
    /// Gives one attempt back to every counter.
    async fn release(&self, counters: &[Counter]) -> Result<(), StoreError>;
}

/// Whether the backing store answers (`/readyz`).
#[async_trait]
pub trait StoreHealth: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Every store the server uses.
#[derive(Clone)]
pub struct Stores {
    /// For logs and `/readyz`.
    pub backend: crate::config::StoreBackend,
    pub refresh: Arc<dyn RefreshStore>,
    pub tickets: Arc<dyn TicketStore>,
    pub revocations: Arc<dyn RevocationStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub attempts: Arc<dyn AttemptStore>,
    pub health: Arc<dyn StoreHealth>,
}

impl Stores {
    /// All in process memory: the embedded default. Spawns the session sweeper, so it must be
    /// called inside a Tokio runtime.
    pub fn memory() -> Self {
        let store = Arc::new(memory::MemoryStore::default());
        let sessions = Arc::new(memory::MemorySessions::start());
        Self {
            backend: crate::config::StoreBackend::Memory,
            refresh: store.clone(),
            tickets: store.clone(),
            revocations: store.clone(),
            sessions,
            attempts: store.clone(),
            health: store,
        }
    }

    /// Everything in Redis, shared by every node that points at it.
    pub async fn redis(settings: &crate::config::RedisSettings) -> Result<Self, StoreError> {
        let store = Arc::new(redis::RedisStore::connect(settings).await?);
        Ok(Self {
            backend: crate::config::StoreBackend::Redis,
            refresh: store.clone(),
            tickets: store.clone(),
            revocations: store.clone(),
            sessions: store.clone(),
            attempts: store.clone(),
            health: store,
        })
    }
}

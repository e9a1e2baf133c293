//! Server-side sessions (session mode): the cookie holds 256 random bits; the store holds the
//! session under the SHA-256 of that value, with user, roles, creation and last activity.

use std::sync::Arc;

use secrecy::SecretString;

use super::password::Account;
use super::Principal;
use crate::config::SessionSettings;
use crate::ids::SessionId;
use crate::store::{SecretHash, SessionRecord, SessionStore, StoreError};
use crate::time::now_unix_ms;

/// Why a session cookie did not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the session is unknown, ended or expired; sign in again")]
    Invalid,
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// Starts, checks and refreshes sessions.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    settings: SessionSettings,
}

impl Sessions {
    pub fn new(store: Arc<dyn SessionStore>, settings: SessionSettings) -> Self {
        Self { store, settings }
    }

    /// The id under which a cookie's session is stored (and shown to operators).
    pub fn id_of(secret: &str) -> SessionId {
        SessionId::new(SecretHash::of(secret).as_str())
    }

    /// Creates a session for `account`; answers the cookie value and the record.
    pub async fn start(&self, account: &Account) -> Result<(SecretString, SessionRecord), StoreError> {
        let secret = crate::ids::random_id(32);
        let now = now_unix_ms();
        let record = SessionRecord {
            id: Self::id_of(&secret),
            user: account.user.clone(),
            roles: account.roles.clone(),
            created_ms: now,
            last_seen_ms: now,
            absolute_expiry_ms: now + self.settings.absolute_lifetime.as_millis() as u64,
            idle_timeout_ms: self.settings.idle_timeout.as_millis() as u64,
        };
        self.store.create(&record).await?;
        Ok((secret.into(), record))
    }

    /// The principal behind a cookie value; counts as activity (throttled).
    pub async fn authenticate(&self, secret: &str) -> Result<Principal, SessionError> {
        let record = self.store.get(&Self::id_of(secret)).await?.ok_or(SessionError::Invalid)?;
        if self.touch_due(record.last_seen_ms) && !self.store.touch(&record.id, now_unix_ms()).await? {
            return Err(SessionError::Invalid);
        }
        Ok(principal_of(&record))
    }

    /// Records activity on a session; false if the session is gone.
    pub async fn touch(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.store.touch(id, now_unix_ms()).await
    }

    /// Ends a session, by the value of its cookie; false if there was none.
    pub async fn end(&self, secret: &str) -> Result<bool, StoreError> {
        self.store.delete(&Self::id_of(secret)).await
    }

    /// Whether activity since `last_write_ms` should be written now.
    pub fn touch_due(&self, last_write_ms: u64) -> bool {
        now_unix_ms().saturating_sub(last_write_ms) >= self.settings.touch_interval.as_millis() as u64
    }
}

/// What a session proves, in the shape tokens use.
pub fn principal_of(record: &SessionRecord) -> Principal {
    Principal {
        user: record.user.clone(),
        roles: record.roles.clone(),
        token_id: None,
        expires_at: record.absolute_expiry_ms / 1000,
        issued_at_ms: record.created_ms,
        session_id: Some(record.id.clone()),
        claims: Default::default(),
    }
}

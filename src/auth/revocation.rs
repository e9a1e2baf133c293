//! Revocation marks: "every token of this user issued at or before T is refused".
//!
//! A trait so that a shared store (Redis) can stand behind it when several nodes run.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{AuthError, Principal};
use crate::ids::UserId;

/// A store could not be reached or answered nonsense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

/// Where revocation marks live.
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Refuse every token of `user` issued at or before `at` (Unix seconds).
    async fn revoke_user(&self, user: &UserId, at: u64) -> Result<(), StoreError>;
    /// The latest revocation mark of `user`, if any.
    async fn revoked_at(&self, user: &UserId) -> Result<Option<u64>, StoreError>;
}

/// Checks a verified principal against the marks. Tokens issued in the same second as a
/// revocation are refused too: `iat` has one-second resolution, and refusing is the safe side.
pub async fn check_not_revoked(store: &dyn RevocationStore, principal: &Principal) -> Result<(), RevocationCheckError> {
    match store.revoked_at(&principal.user).await? {
        Some(at) if principal.issued_at <= at => Err(RevocationCheckError::Auth(AuthError::TokenRevoked)),
        _ => Ok(()),
    }
}

/// Either the token is revoked or the store could not say.
#[derive(Debug, thiserror::Error)]
pub enum RevocationCheckError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Marks in process memory: one entry per revoked user.
#[derive(Debug, Default)]
pub struct MemoryRevocationStore {
    marks: Mutex<HashMap<UserId, u64>>,
}

#[async_trait]
impl RevocationStore for MemoryRevocationStore {
    async fn revoke_user(&self, user: &UserId, at: u64) -> Result<(), StoreError> {
        let mut marks = self.marks.lock().expect("revocation lock poisoned");
        let mark = marks.entry(user.clone()).or_insert(at);
        *mark = (*mark).max(at);
        Ok(())
    }

    async fn revoked_at(&self, user: &UserId) -> Result<Option<u64>, StoreError> {
        Ok(self.marks.lock().expect("revocation lock poisoned").get(user).copied())
    }
}

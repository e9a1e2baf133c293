//! Whether a verified token has been revoked since it was issued.

use super::{AuthError, Principal};
use crate::store::{RevocationStore, StoreError};

/// Checks a verified principal against the revocation marks. Tokens issued in the same second
/// as a user's revocation are refused too: `iat` has one-second resolution, and refusing is the
/// safe side.
pub async fn check_not_revoked(store: &dyn RevocationStore, principal: &Principal) -> Result<(), RevocationCheckError> {
    let marks = store.marks(&principal.user, principal.session_id.as_deref()).await?;
    let user_revoked = marks.user_revoked_at.is_some_and(|at| principal.issued_at <= at);
    if user_revoked || marks.session_revoked {
        return Err(AuthError::TokenRevoked.into());
    }
    Ok(())
}

/// Either the token is revoked or the store could not say.
#[derive(Debug, thiserror::Error)]
pub enum RevocationCheckError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

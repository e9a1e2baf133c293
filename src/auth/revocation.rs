//! Whether a verified token has been revoked since it was issued.

use super::{AuthError, Principal};
use crate::store::{RevocationStore, StoreError};

/// Checks a verified principal against the revocation marks, to the millisecond: what was
/// issued at or before a user's revocation is refused, what was issued after it is not. Roles
/// an operator withdrew from the user are taken out of what it grants, whatever the credential
/// says (an identity provider's token, or one minted before the withdrawal).
pub async fn apply_marks(
    store: &dyn RevocationStore,
    mut principal: Principal,
) -> Result<Principal, RevocationCheckError> {
    let marks = store.marks(&principal.user, principal.session_id.as_ref()).await?;
    let user_revoked = marks.user_revoked_at_ms.is_some_and(|at| principal.issued_at_ms <= at);
    if user_revoked || marks.session_revoked {
        return Err(AuthError::TokenRevoked.into());
    }
    principal.roles.retain(|role| !marks.withdrawn_roles.contains(role));
    Ok(principal)
}

/// Either the token is revoked or the store could not say.
#[derive(Debug, thiserror::Error)]
pub enum RevocationCheckError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

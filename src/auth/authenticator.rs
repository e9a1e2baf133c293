//! The one place where the two modes differ: [`Authenticator`] is built once at start-up, as
//! JWTs or as server-side sessions, and both the upgrade and the REST extractors hand it what
//! the request presented. A credential the mode does not use is refused as missing, so
//! nothing can fall through from one mode to the other.

use std::sync::Arc;

use super::jwt::TokenService;
use super::revocation::{apply_marks, RevocationCheckError};
use super::sessions::{SessionError, Sessions};
use super::{AuthError, Principal};
use crate::config::AuthMode;
use crate::store::{RevocationStore, SecretHash, StoreError, TicketStore};
use crate::time::now_unix_s;

/// What a request presented, as taken from it by the transport.
pub enum Credential<'a> {
    /// A bearer JWT (subprotocol, `Authorization`, `?token=` or a first message).
    Token(&'a str),
    /// A one-time ticket from `POST /api/ticket`.
    Ticket(&'a str),
    /// The value of the `authchat_session` cookie.
    SessionCookie(&'a str),
}

/// Why a credential did not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error(transparent)]
    Refused(#[from] AuthError),
    #[error("the session is unknown, ended or expired; sign in again")]
    InvalidSession,
    /// The revocation or ticket store could not answer.
    #[error("a backing store is unavailable")]
    StoreUnavailable(#[source] StoreError),
    #[error("the session store is unavailable")]
    SessionStoreUnavailable(#[source] StoreError),
}

impl From<RevocationCheckError> for AuthFailure {
    fn from(e: RevocationCheckError) -> Self {
        match e {
            RevocationCheckError::Auth(e) => Self::Refused(e),
            RevocationCheckError::Store(e) => Self::StoreUnavailable(e),
        }
    }
}

impl From<SessionError> for AuthFailure {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Invalid => Self::InvalidSession,
            SessionError::Unavailable(e) => Self::SessionStoreUnavailable(e),
        }
    }
}

/// JWT mode: tokens (minted here, or an identity provider's in verify-only mode) and tickets.
pub struct JwtMode {
    pub tokens: Arc<TokenService>,
    pub tickets: Arc<dyn TicketStore>,
    pub revocations: Arc<dyn RevocationStore>,
}

/// Session mode: the session cookie, and nothing else.
pub struct SessionMode {
    pub sessions: Sessions,
    pub revocations: Arc<dyn RevocationStore>,
}

/// How this server authenticates, decided once.
pub enum Authenticator {
    Jwt(JwtMode),
    Session(SessionMode),
}

impl Authenticator {
    pub fn mode(&self) -> AuthMode {
        match self {
            Self::Jwt(_) => AuthMode::Jwt,
            Self::Session(_) => AuthMode::Session,
        }
    }

    /// The session machinery, in session mode.
    pub fn sessions(&self) -> Option<&Sessions> {
        match self {
            Self::Session(mode) => Some(&mode.sessions),
            Self::Jwt(_) => None,
        }
    }

    /// The token service, in JWT mode.
    pub fn tokens(&self) -> Option<&Arc<TokenService>> {
        match self {
            Self::Jwt(mode) => Some(&mode.tokens),
            Self::Session(_) => None,
        }
    }

    /// Verifies a credential and checks it against the revocation marks (withdrawn roles taken
    /// out).
    pub async fn authenticate(&self, credential: Credential<'_>) -> Result<Principal, AuthFailure> {
        let (principal, revocations) = match (self, credential) {
            (Self::Jwt(mode), Credential::Token(token)) => (mode.tokens.verify_fresh(token).await?, &mode.revocations),
            (Self::Jwt(mode), Credential::Ticket(ticket)) => (mode.redeem(ticket).await?, &mode.revocations),
            (Self::Session(mode), Credential::SessionCookie(secret)) => {
                (mode.sessions.authenticate(secret).await?, &mode.revocations)
            }
            // The other mode's credentials are not looked at.
            (Self::Jwt(_), Credential::SessionCookie(_)) | (Self::Session(_), _) => {
                return Err(AuthError::MissingCredentials.into())
            }
        };
        Ok(apply_marks(revocations.as_ref(), principal).await?)
    }
}

impl JwtMode {
    /// Consumes a ticket: it is gone after this, whatever the outcome.
    async fn redeem(&self, ticket: &str) -> Result<Principal, AuthFailure> {
        let principal = self
            .tickets
            .take(&SecretHash::of(ticket))
            .await
            .map_err(AuthFailure::StoreUnavailable)?
            .ok_or(AuthError::InvalidTicket)?;
        if principal.expires_at <= now_unix_s() {
            return Err(AuthError::TokenExpired.into());
        }
        Ok(principal)
    }
}

//! Authentication: who a credential belongs to, and whether it is still good.
//!
//! Nothing here serves HTTP or WebSockets (the one HTTP client, [`jwks::remote`], fetches an
//! identity provider's keys); the transport modules extract a credential and hand it to the
//! [`authenticator::Authenticator`], which verifies it ([`jwt::TokenService`],
//! [`sessions::Sessions`]) and checks it against the revocation marks ([`revocation`]).

pub mod authenticator;
pub mod hashing;
pub mod jwks;
pub mod jwt;
pub mod login;
pub mod password;
pub mod revocation;
pub mod sessions;

pub use crate::principal::Principal;

/// How a socket proved who it is (shown in `welcome`, the admin API and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Ticket,
    Subprotocol,
    Header,
    Query,
    FirstMessage,
    /// Session mode's cookie: the socket is bound to its server-side session.
    Session,
}

impl AuthMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ticket => "ticket",
            Self::Subprotocol => "subprotocol",
            Self::Header => "header",
            Self::Query => "query",
            Self::FirstMessage => "first_message",
            Self::Session => "session",
        }
    }
}

/// Why a credential was refused. The `code` is what clients see; the detail is safe to show
/// (it never contains the credential).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials were presented")]
    MissingCredentials,
    #[error("the token is not valid: {0}")]
    InvalidToken(&'static str),
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token was revoked")]
    TokenRevoked,
    #[error("the ticket is unknown, used or expired")]
    InvalidTicket,
}

impl AuthError {
    /// The stable, machine-readable reason (`error` in HTTP bodies, metric label).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidToken(_) => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::InvalidTicket => "invalid_ticket",
        }
    }
}

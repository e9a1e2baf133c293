//! The one error type of the HTTP boundary: a status and a JSON body `{"error","message"}`.
//! 4xx bodies say what was wrong; 5xx bodies never carry internals.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::auth::authenticator::AuthFailure;
use crate::auth::login::LoginError;
use crate::auth::revocation::RevocationCheckError;
use crate::auth::AuthError;
use crate::chat::access::ChangeRefusal;
use crate::registry::AccessError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("unknown user or wrong password")]
    InvalidCredentials,
    #[error("this Origin may not open a WebSocket here")]
    OriginNotAllowed,
    /// The REST counterpart of `OriginNotAllowed` (same code): a cookie-authenticated write
    /// from a page of another origin.
    #[error(
        "cross-site request refused: requests with the session cookie may come only from this server's allowed origins"
    )]
    CrossSite,
    #[error("this endpoint needs the admin role")]
    Forbidden,
    #[error("{0}")]
    TooManyConnections(&'static str),
    #[error("too many WebSocket handshakes from this address; retry after the Retry-After delay")]
    TooManyHandshakes(Duration),
    #[error("this server holds as many WebSockets as it may; retry in a moment or on another node")]
    ServerFull,
    #[error("too many failed logins from this address or for this user name; wait for Retry-After seconds")]
    TooManyAttempts { retry_after: Duration },
    #[error("the server is busy checking other logins; retry after Retry-After seconds")]
    Busy { retry_after: Duration },
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// RFC 6455 §4.2.2: the answer names the version this server speaks.
    #[error("this server speaks WebSocket version 13 only (Sec-WebSocket-Version: 13)")]
    UnsupportedWebSocketVersion,
    #[error("{message}")]
    ForbiddenWithCode { code: &'static str, message: &'static str },
    #[error("{0}")]
    NotFound(String),
    /// The request is understood but cannot be done to the thing as it is.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    NotFoundWithCode { code: &'static str, message: &'static str },
    #[error("{message}")]
    Unauthorized { code: &'static str, message: &'static str },
    #[error("the request was not received and answered within {} (server.request_timeout)", humantime::format_duration(*.0))]
    RequestTimeout(Duration),
    #[error("the server is shutting down; reconnect in a moment (a load balancer sends you to another node)")]
    ShuttingDown,
    #[error("a backing store is unavailable; try again")]
    StoreUnavailable(#[source] StoreError),
    #[error("the session store is unavailable; try again")]
    SessionStoreUnavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Auth(e) => e.code(),
            Self::InvalidCredentials => "invalid_credentials",
            Self::OriginNotAllowed | Self::CrossSite => "origin_not_allowed",
            Self::Forbidden => "forbidden",
            Self::TooManyConnections(_) => "too_many_connections",
            Self::TooManyHandshakes(_) => "too_many_handshakes",
            Self::ServerFull => "server_full",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::Busy { .. } => "busy",
            Self::BadRequest { code, .. } => code,
            Self::UnsupportedWebSocketVersion => "unsupported_version",
            Self::ForbiddenWithCode { code, .. } => code,
            Self::NotFound(_) => "not_found",
            Self::Conflict { code, .. } => code,
            Self::NotFoundWithCode { code, .. } | Self::Unauthorized { code, .. } => code,
            Self::RequestTimeout(_) => "request_timeout",
            Self::ShuttingDown => "shutting_down",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::SessionStoreUnavailable(_) => "session_store_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// How long a client should wait before trying again, for refusals that pass.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyHandshakes(wait) => Some(*wait),
            Self::TooManyAttempts { retry_after } | Self::Busy { retry_after } => Some(*retry_after),
            Self::ServerFull => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    pub fn unauthorized(code: &'static str, message: &'static str) -> Self {
        Self::Unauthorized { code, message }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::InvalidCredentials => Self::InvalidCredentials,
            LoginError::Throttled { retry_after } => Self::TooManyAttempts { retry_after },
            LoginError::Busy { retry_after } => Self::Busy { retry_after },
            LoginError::Store(e) => Self::StoreUnavailable(e),
            LoginError::Internal(detail) => Self::Internal(detail),
        }
    }
}

impl From<AuthFailure> for ApiError {
    fn from(e: AuthFailure) -> Self {
        match e {
            AuthFailure::Refused(e) => Self::Auth(e),
            AuthFailure::InvalidSession => {
                Self::unauthorized("invalid_session", "the session is unknown, ended or expired; sign in again")
            }
            AuthFailure::StoreUnavailable(e) => Self::StoreUnavailable(e),
            AuthFailure::SessionStoreUnavailable(e) => Self::SessionStoreUnavailable(e),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Refused(refusal @ ChangeRefusal::NoRoom(_)) => Self::NotFound(refusal.to_string()),
            AccessError::Refused(refusal) => Self::Conflict { code: "refused", message: refusal.to_string() },
            AccessError::Unavailable(detail) => Self::StoreUnavailable(StoreError(detail)),
        }
    }
}

impl From<RevocationCheckError> for ApiError {
    fn from(e: RevocationCheckError) -> Self {
        match e {
            RevocationCheckError::Auth(e) => Self::Auth(e),
            RevocationCheckError::Store(e) => Self::StoreUnavailable(e),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Auth(_) | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::OriginNotAllowed | Self::CrossSite | Self::Forbidden | Self::ForbiddenWithCode { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::UnsupportedWebSocketVersion => StatusCode::UPGRADE_REQUIRED,
            Self::TooManyConnections(_) | Self::TooManyHandshakes(_) | Self::TooManyAttempts { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) | Self::NotFoundWithCode { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::ShuttingDown
            | Self::ServerFull
            | Self::Busy { .. }
            | Self::StoreUnavailable(_)
            | Self::SessionStoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Internal(detail) => tracing::error!(%detail, "internal error"),
            Self::StoreUnavailable(e) | Self::SessionStoreUnavailable(e) => {
                tracing::warn!(error = %e, "store unavailable")
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Auth(_)) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if matches!(self, Self::UnsupportedWebSocketVersion) {
            response.insert_header(("Sec-WebSocket-Version", crate::http::WEBSOCKET_VERSION));
        }
        if let Some(wait) = self.retry_after() {
            // Whole seconds, rounded up (RFC 9110 §10.2.3).
            let seconds = wait.as_millis().div_ceil(1000).max(1);
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        response.insert_header(("Cache-Control", "no-store"));
        response.json(json!({ "error": self.code(), "message": self.to_string() }))
    }
}

//! Session mode over HTTP: the `authchat_session` cookie, login and logout.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse};
use secrecy::ExposeSecret;

use super::error::ApiError;
use crate::auth::password::Account;
use crate::auth::sessions::{SessionError, Sessions};
use crate::state::AppState;

/// HttpOnly, SameSite=Lax (so a link into the app keeps the user signed in), path `/`.
pub const SESSION_COOKIE: &str = "authchat_session";

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Invalid => {
                ApiError::unauthorized("invalid_session", "the session is unknown, ended or expired; sign in again")
            }
            SessionError::Unavailable(e) => ApiError::SessionStoreUnavailable(e),
        }
    }
}

/// The session id behind the request's cookie, if it has one (not checked against the store).
pub fn session_secret(req: &HttpRequest) -> Option<String> {
    req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned()).filter(|v| !v.is_empty())
}

/// Starts a session and answers with its cookie.
pub async fn login(state: &AppState, account: &Account) -> Result<HttpResponse, ApiError> {
    let (secret, record) = state.sessions.start(account).await.map_err(ApiError::SessionStoreUnavailable)?;
    tracing::info!(user = %account.user, "login (session)");
    let lifetime = (record.absolute_expiry_ms - record.created_ms) / 1000;
    let cookie = Cookie::build(SESSION_COOKIE, secret.expose_secret().to_owned())
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(state.secure_cookies())
        .max_age(CookieDuration::seconds(lifetime as i64))
        .finish();
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).cookie(cookie).json(serde_json::json!({
        "mode": "session",
        "user": record.user,
        "roles": record.roles,
        "expires_at": record.absolute_expiry_ms / 1000,
        "idle_timeout_seconds": record.idle_timeout_ms / 1000,
    })))
}

/// Ends the request's session (its sockets close with 4002 through the store's notification)
/// and clears the cookie.
pub async fn logout(state: &AppState, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    if let Some(secret) = session_secret(req) {
        state.sessions.store().delete(&Sessions::id_of(&secret)).await.map_err(ApiError::SessionStoreUnavailable)?;
    }
    let mut removal = Cookie::build(SESSION_COOKIE, "").path("/").http_only(true).same_site(SameSite::Lax).finish();
    removal.make_removal();
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .cookie(removal)
        .json(serde_json::json!({ "status": "logged_out" })))
}

//! Session mode over HTTP: the `authchat_session` cookie, login and logout, and the CSRF rule
//! for requests the cookie authenticates.

use std::collections::HashSet;
use std::time::Duration;

use actix_web::http::{header, Method};
use actix_web::{HttpRequest, HttpResponse};
use secrecy::ExposeSecret;

use super::cookies::AuthCookie;
use super::error::ApiError;
use crate::auth::password::Account;
use crate::auth::sessions::Sessions;

/// The session id behind the request's cookie, if it has one (not checked against the store).
pub fn session_secret(req: &HttpRequest) -> Option<String> {
    AuthCookie::Session.value_in(req)
}

/// Refuses a state-changing request from an `Origin` not on the allowlist: browsers attach
/// the session cookie to such requests (CSRF). Applies wherever the cookie is honoured.
pub fn refuse_cross_site(req: &HttpRequest, allowed_origins: &HashSet<String>) -> Result<(), ApiError> {
    let origin = req.headers().get(header::ORIGIN).map(|o| o.to_str().unwrap_or_default());
    match origin {
        Some(origin) if req.method() != Method::GET && !allowed_origins.contains(origin) => Err(ApiError::CrossSite),
        _ => Ok(()),
    }
}

/// Starts a session and answers with its cookie.
pub async fn login(sessions: &Sessions, account: &Account, secure_cookies: bool) -> Result<HttpResponse, ApiError> {
    let (secret, record) = sessions.start(account).await.map_err(ApiError::SessionStoreUnavailable)?;
    tracing::info!(user = %account.user, "login (session)");
    let lifetime = Duration::from_millis(record.absolute_expiry_ms - record.created_ms);
    let cookie = AuthCookie::Session.set(secret.expose_secret().to_owned(), lifetime, secure_cookies);
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).cookie(cookie).json(serde_json::json!({
        "mode": "session",
        "user": record.user,
        "roles": record.roles,
        "expires_at": record.absolute_expiry_ms / 1000,
        "idle_timeout_seconds": record.idle_timeout_ms / 1000,
    })))
}

/// Ends the request's session (its sockets close with 4002 through the store's notification)
/// and clears the cookie. From a foreign page it is refused like any cookie-authenticated write.
pub async fn logout(
    sessions: &Sessions,
    req: &HttpRequest,
    allowed_origins: &HashSet<String>,
    secure_cookies: bool,
) -> Result<HttpResponse, ApiError> {
    if let Some(secret) = session_secret(req) {
        refuse_cross_site(req, allowed_origins)?;
        sessions.end(&secret).await.map_err(ApiError::SessionStoreUnavailable)?;
    }
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .cookie(AuthCookie::Session.removal(secure_cookies))
        .json(serde_json::json!({ "status": "logged_out" })))
}

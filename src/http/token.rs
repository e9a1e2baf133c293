//! The token lifecycle over HTTP: login (access token + refresh cookie), refresh with rotation
//! and reuse detection, logout, and one-time WebSocket tickets.

use std::collections::HashSet;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::cookies::AuthCookie;
use super::error::ApiError;
use super::extract::Authenticated;
use crate::auth::authenticator::Authenticator;
use crate::auth::jwt::TokenService;
use crate::auth::login::LoginError;
use crate::auth::login::PasswordLogin;
use crate::auth::password::UserDirectory;
use crate::auth::revocation::apply_marks;
use crate::auth::Principal;
use crate::cluster::ControlOp;
use crate::config::AuthSettings;
use crate::fleet::Fleet;
use crate::ids::random_id;
use crate::ids::{SessionId, UserId};
use crate::protocol::close;
use crate::store::Stores;
use crate::store::{RefreshRecord, SecretHash, Taken};
use crate::time::now_unix_s;

/// What the token lifecycle routes use, built once at start-up.
pub struct TokenApi {
    pub auth: Arc<Authenticator>,
    pub tokens: Arc<TokenService>,
    pub users: Arc<UserDirectory>,
    /// Password checks: throttled, and capped in concurrency.
    pub login: PasswordLogin,
    pub stores: Stores,
    /// Closes a login's sockets on every node.
    pub fleet: Fleet,
    /// Lifetimes of tokens, refresh tokens and tickets.
    pub config: AuthSettings,
    /// Cookies get `Secure` (TLS here, or terminated in front).
    pub secure_cookies: bool,
    /// For the CSRF check on session-cookie logout.
    pub allowed_origins: Arc<HashSet<String>>,
}

/// `POST /api/login` body.
#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: SecretString,
}

/// An access token, as login and refresh return it.
#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_at: u64,
    pub expires_in: u64,
}

/// `POST /api/login`: checks name and password (throttled per client address and user name,
/// Argon2 off the executor with a cap on how many run at once), starts a refresh token family,
/// and returns an access token tied to it. Unknown user and wrong password get the same answer.
pub async fn login(
    api: web::Data<TokenApi>,
    req: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    refuse_in_verify_only_mode(&api)?;
    let LoginRequest { username, password } = body.into_inner();
    let attempt = api.login.attempt(super::client_ip(&req), &username, password).await;
    match api.auth.as_ref() {
        Authenticator::Session(mode) => {
            // In session mode the store behind login is the session store, and clients are told so.
            let account = attempt.map_err(|e| match e {
                LoginError::Store(e) => ApiError::SessionStoreUnavailable(e),
                other => other.into(),
            })?;
            super::session::login(&mode.sessions, &account, api.secure_cookies).await
        }
        Authenticator::Jwt(_) => {
            let account = attempt?;
            tracing::info!(user = %account.user, "login");
            issue(&api, &account.user, &account.roles, SessionId::new(random_id(16))).await
        }
    }
}

/// `POST /api/token/refresh`: trades the refresh cookie for a new access token and a new
/// cookie. A token presented twice revokes its whole family (reuse means theft).
pub async fn refresh(api: web::Data<TokenApi>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    refuse_in_verify_only_mode(&api)?;
    let presented = AuthCookie::Refresh.value_in(&req).ok_or_else(invalid_refresh)?;
    let hash = SecretHash::of(&presented);
    let record = match api.stores.refresh.take(&hash).await.map_err(ApiError::StoreUnavailable)? {
        None => return Err(invalid_refresh()),
        Some(Taken::Reused(record)) => {
            tracing::warn!(user = %record.user, "refresh token reused: revoking its family");
            end_login(&api, &record.family, close::SESSION_ENDED, "refresh token reused").await?;
            return Err(ApiError::unauthorized(
                "refresh_token_reused",
                "this refresh token was used before; sign in again",
            ));
        }
        Some(Taken::Fresh(record)) => record,
    };
    // A user revoked by an operator, or a login ended by logout, cannot refresh.
    let principal = Principal {
        user: record.user.clone(),
        roles: record.roles.clone(),
        token_id: None,
        expires_at: record.expires_at,
        issued_at_ms: record.issued_at_ms,
        session_id: Some(record.family.clone()),
        claims: Default::default(),
    };
    apply_marks(api.stores.revocations.as_ref(), principal).await.map_err(|e| match ApiError::from(e) {
        ApiError::Auth(_) => invalid_refresh(),
        other => other,
    })?;
    // Roles come from the directory as it is now; a removed user cannot refresh.
    let roles = api.users.roles(record.user.as_str()).ok_or_else(invalid_refresh)?.to_vec();
    issue(&api, &record.user, &roles, record.family).await
}

/// `POST /api/logout` (Bearer, or the refresh cookie on `/api/token/logout`): ends the login:
/// its refresh tokens and access tokens are refused from now on and its sockets close with 4002.
pub async fn logout(api: web::Data<TokenApi>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if let Authenticator::Session(mode) = api.auth.as_ref() {
        return super::session::logout(&mode.sessions, &req, &api.allowed_origins, api.secure_cookies).await;
    }
    let family = match AuthCookie::Refresh.value_in(&req) {
        Some(cookie) => match api.stores.refresh.take(&SecretHash::of(&cookie)).await {
            Ok(Some(Taken::Fresh(r) | Taken::Reused(r))) => Some(r.family),
            Ok(None) => None,
            Err(e) => return Err(ApiError::StoreUnavailable(e)),
        },
        None => None,
    };
    let family = match family {
        Some(family) => Some(family),
        None => {
            let Authenticated(principal) = Authenticated::from_request_async(&req).await?;
            principal.session_id
        }
    };
    if let Some(family) = &family {
        end_login(&api, family, close::SESSION_ENDED, "logged out").await?;
    }
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .cookie(AuthCookie::Refresh.removal(api.secure_cookies))
        .json(serde_json::json!({ "status": "logged_out" })))
}

/// `POST /api/ticket` body.
#[derive(Serialize)]
struct TicketResponse {
    ticket: String,
    expires_in: u64,
}

/// `POST /api/ticket` (Bearer): a random, single-use ticket for `GET /ws?ticket=…`, bound to
/// the caller and to the access token's expiry, valid `auth.ticket_ttl` (30 s).
pub async fn ticket(
    api: web::Data<TokenApi>,
    Authenticated(principal): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let now = now_unix_s();
    let expires_at = (now + api.config.ticket_ttl.as_secs()).min(principal.expires_at);
    let ticket = random_id(32);
    api.stores
        .tickets
        .put(&SecretHash::of(&ticket), principal, expires_at)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(TicketResponse { ticket, expires_in: expires_at.saturating_sub(now) }))
}

/// Mints the access token, stores a new refresh token of `family`, and answers with both.
async fn issue(api: &TokenApi, user: &UserId, roles: &[String], family: SessionId) -> Result<HttpResponse, ApiError> {
    let minted =
        api.tokens.mint(user, roles, None, Some(family.as_str())).map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = now_unix_s();
    let refresh_ttl = api.config.refresh_ttl;
    let refresh_token = random_id(32);
    let record = RefreshRecord {
        user: user.clone(),
        roles: roles.to_vec(),
        family,
        issued_at_ms: crate::time::now_unix_ms(),
        expires_at: now + refresh_ttl.as_secs(),
    };
    api.stores.refresh.put(&SecretHash::of(&refresh_token), record).await.map_err(ApiError::StoreUnavailable)?;
    let cookie = AuthCookie::Refresh.set(refresh_token, refresh_ttl, api.secure_cookies);
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).cookie(cookie).json(TokenResponse {
        access_token: minted.token.expose_secret().to_owned(),
        token_type: "Bearer",
        expires_at: minted.expires_at,
        expires_in: minted.expires_at.saturating_sub(now),
    }))
}

/// Revokes every token of a login and closes its sockets.
async fn end_login(api: &TokenApi, family: &SessionId, code: u16, reason: &'static str) -> Result<(), ApiError> {
    let auth = &api.config;
    let until = now_unix_s() + auth.refresh_ttl.as_secs() + auth.access_ttl.as_secs();
    api.stores.revocations.revoke_session(family, until).await.map_err(ApiError::StoreUnavailable)?;
    let op = ControlOp::CloseSession { session_id: family.clone(), code, reason: reason.into() };
    let tally = api.fleet.close(op).await.map_err(|e| ApiError::Internal(format!("registry unavailable: {e}")))?;
    tracing::info!(closed = tally.closed, missing = ?tally.missing, reason, "login ended");
    Ok(())
}

fn invalid_refresh() -> ApiError {
    ApiError::unauthorized(
        "invalid_refresh_token",
        "the refresh token is missing, unknown, expired or revoked; sign in again",
    )
}

/// What the JWT-only routes (refresh, tickets) answer in session mode, whoever asks.
pub async fn not_in_jwt_mode() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFoundWithCode {
        code: "not_in_jwt_mode",
        message: "session mode has no refresh tokens or tickets: the session cookie authenticates the WebSocket",
    })
}

fn refuse_in_verify_only_mode(api: &TokenApi) -> Result<(), ApiError> {
    if api.tokens.is_verify_only() {
        return Err(ApiError::NotFoundWithCode {
            code: "login_disabled",
            message: "this server only verifies tokens from an identity provider (verify-only mode); sign in there",
        });
    }
    Ok(())
}

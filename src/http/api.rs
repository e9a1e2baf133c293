//! The user-facing REST API: log in, and ask who the token belongs to.

use actix_web::{web, HttpResponse};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::Authenticated;
use crate::state::AppState;
use crate::time::now_unix_s;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::post().to(login)).route("/me", web::get().to(me)).route("/config", web::get().to(config));
}

/// `POST /api/login` body.
#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: SecretString,
}

/// An access token, as `/api/login` returns it.
#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_at: u64,
    pub expires_in: u64,
}

/// Checks name and password (Argon2, off the executor) and mints an access token. Unknown
/// user and wrong password get the same answer.
async fn login(state: web::Data<AppState>, body: web::Json<LoginRequest>) -> Result<HttpResponse, ApiError> {
    let LoginRequest { username, password } = body.into_inner();
    let users = state.users.clone();
    let account = web::block(move || users.verify(&username, &password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or(ApiError::InvalidCredentials)?;
    let minted =
        state.tokens.mint(&account.user, &account.roles, None).map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(user = %account.user, "login");
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(TokenResponse {
        access_token: minted.token.expose_secret().to_owned(),
        token_type: "Bearer",
        expires_at: minted.expires_at,
        expires_in: minted.expires_at.saturating_sub(now_unix_s()),
    }))
}

/// `GET /api/me`: the token's user, roles and expiry.
async fn me(Authenticated(principal): Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "user": principal.user,
        "roles": principal.roles,
        "expires_at": principal.expires_at,
    }))
}

/// `GET /api/config`: what a client needs to know to connect (no secrets).
async fn config(state: web::Data<AppState>) -> HttpResponse {
    let settings = &state.settings;
    HttpResponse::Ok().json(serde_json::json!({
        "mode": "jwt",
        "node": state.node,
        "first_message": settings.auth.first_message,
        "query_token": settings.auth.query_token,
        "access_ttl_seconds": settings.auth.access_ttl.as_secs(),
        "warn_before_seconds": settings.ws.warn_before.as_secs(),
        "max_text_chars": settings.chat.max_text_chars,
    }))
}

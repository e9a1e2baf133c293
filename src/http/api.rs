//! The user-facing REST API: the token lifecycle routes, who a token belongs to, client config.

use super::extract::Authenticated;
use super::token;
use crate::auth::authenticator::Authenticator;
use crate::config::{AuthMode, Settings};
use crate::ids::RoomId;
use crate::state::AppState;
use actix_web::{web, HttpResponse};

/// The routes of `mode`: refresh and tickets exist only with JWTs; in session mode they
/// answer 404 `not_in_jwt_mode` before looking at any credential.
pub fn routes(cfg: &mut web::ServiceConfig, mode: AuthMode) {
    cfg.route("/login", web::post().to(token::login))
        .route("/token/logout", web::post().to(token::logout))
        .route("/logout", web::post().to(token::logout))
        .route("/me", web::get().to(me))
        .route("/config", web::get().to(config));
    match mode {
        AuthMode::Jwt => {
            cfg.route("/token/refresh", web::post().to(token::refresh)).route("/ticket", web::post().to(token::ticket))
        }
        AuthMode::Session => cfg
            .route("/token/refresh", web::post().to(token::not_in_jwt_mode))
            .route("/ticket", web::post().to(token::not_in_jwt_mode)),
    };
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
async fn config(
    state: web::Data<AppState>,
    settings: web::Data<Settings>,
    auth: web::Data<Authenticator>,
) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "mode": settings.auth.mode,
        "login": auth.tokens().is_none_or(|tokens| !tokens.is_verify_only()),
        "ticket_ttl_seconds": settings.auth.ticket_ttl.as_secs(),
        "node": state.node,
        "first_message": settings.auth.first_message,
        "query_token": settings.auth.query_token,
        "access_ttl_seconds": settings.auth.access_ttl.as_secs(),
        "warn_before_seconds": settings.ws.warn_before.as_secs(),
        "max_text_chars": settings.chat.max_text_chars,
        "max_room_name_chars": RoomId::MAX_LEN,
        "history_size": settings.chat.history_size,
        // Every frame a client sends counts against these; the bundled client paces below them.
        "rate_limit": {
            "per_second": settings.ws.rate_limit.per_second,
            "burst": settings.ws.rate_limit.burst,
            "max_violations": settings.ws.rate_limit.max_violations,
            "user_per_second": settings.ws.rate_limit.user_per_second,
            "user_burst": settings.ws.rate_limit.user_burst,
        },
    }))
}

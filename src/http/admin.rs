//! The operator API: list connections, cut them off, revoke a user. Every route needs a token
//! with the `admin` role.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::Admin;
use crate::ids::{ConnId, UserId};
use crate::protocol::close;
use crate::registry::{CloseConnection, CloseUser, GetStats, ListConnections};
use crate::state::AppState;
use crate::time::now_unix_s;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections", web::get().to(list_connections))
        .route("/connections/{conn_id}", web::delete().to(disconnect))
        .route("/users/{user}/connections", web::delete().to(disconnect_user))
        .route("/users/{user}/revoke", web::post().to(revoke_user))
        .route("/stats", web::get().to(stats));
}

fn registry_down(e: actix::MailboxError) -> ApiError {
    ApiError::Internal(format!("registry unavailable: {e}"))
}

#[derive(Deserialize)]
struct ConnectionFilter {
    user: Option<String>,
}

/// `GET /admin/connections[?user=]`
async fn list_connections(
    Admin(_): Admin,
    state: web::Data<AppState>,
    filter: web::Query<ConnectionFilter>,
) -> Result<HttpResponse, ApiError> {
    let user = filter.into_inner().user.map(UserId::new);
    let rows = state.registry.send(ListConnections { user }).await.map_err(registry_down)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "connections": rows })))
}

/// `DELETE /admin/connections/{conn_id}`: closes it with 4004.
async fn disconnect(
    Admin(admin): Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let conn_id = raw.parse().map(ConnId).map_err(|_| {
        ApiError::bad_request("invalid_conn_id", format!("{raw:?} is not a connection id (a positive integer)"))
    })?;
    let closed = state
        .registry
        .send(CloseConnection { conn_id, code: close::DISCONNECTED, reason: "disconnected by an operator" })
        .await
        .map_err(registry_down)?;
    if !closed {
        return Err(ApiError::NotFound(format!("no connection {conn_id} on this node")));
    }
    tracing::info!(admin = %admin.user, %conn_id, "operator closed a connection");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "closed": 1 })))
}

/// `DELETE /admin/users/{user}/connections`: closes all of them with 4004.
async fn disconnect_user(
    Admin(admin): Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId::new(path.into_inner());
    let closed = state
        .registry
        .send(CloseUser { user: user.clone(), code: close::DISCONNECTED, reason: "disconnected by an operator" })
        .await
        .map_err(registry_down)?;
    tracing::info!(admin = %admin.user, %user, closed, "operator closed a user's connections");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "closed": closed })))
}

/// `POST /admin/users/{user}/revoke`: every token of the user issued until now is refused from
/// now on, and the user's live sockets close with 4003.
async fn revoke_user(
    Admin(admin): Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId::new(path.into_inner());
    let at = now_unix_s();
    state.stores.revocations.revoke_user(&user, at).await.map_err(ApiError::StoreUnavailable)?;
    let closed = state
        .registry
        .send(CloseUser { user: user.clone(), code: close::REVOKED, reason: "token revoked" })
        .await
        .map_err(registry_down)?;
    tracing::info!(admin = %admin.user, %user, closed, "operator revoked a user");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "user": user, "revoked_before": at, "closed": closed })))
}

/// `GET /admin/stats`
async fn stats(Admin(_): Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.registry.send(GetStats).await.map_err(registry_down)?;
    let m = &state.metrics;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "node": stats.node,
        "connections": stats.connections,
        "authenticated": stats.authenticated,
        "users": stats.users,
        "rooms": stats.rooms,
        "messages_in": m.messages_in.get(),
        "messages_out": m.messages_out.get(),
        "uptime_seconds": state.started.elapsed().as_secs(),
    })))
}

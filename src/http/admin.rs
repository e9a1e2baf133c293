//! The operator API: list connections, cut them off, revoke a user or one of their roles; list
//! rooms, kick from one and let back in. Every route needs a token with the `admin` role.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::Admin;
use crate::chat::access::Change;
use crate::cluster::ControlOp;
use crate::fleet::Fleet;
use crate::ids::{ConnId, RoomId, SessionId, UserId};
use crate::metrics::Metrics;
use crate::protocol::close;
use crate::registry::{GetStats, Registry};
use crate::state::AppState;
use crate::store::Stores;
use actix::Addr;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections", web::get().to(list_connections))
        .route("/connections/{conn_id}", web::delete().to(disconnect))
        .route("/users/{user}/connections", web::delete().to(disconnect_user))
        .route("/users/{user}/revoke", web::post().to(revoke_user))
        .route("/users/{user}/roles/{role}/revoke", web::post().to(withdraw_role))
        .route("/users/{user}/roles/{role}/revoke", web::delete().to(restore_role))
        .route("/sessions", web::get().to(list_sessions))
        .route("/sessions/{id}", web::delete().to(end_session))
        .route("/stats", web::get().to(stats))
        .route("/rooms", web::get().to(list_rooms))
        .route("/rooms/{room}/members/{user}", web::delete().to(kick))
        .route("/rooms/{room}/members/{user}", web::post().to(let_back_in));
}

const BY_OPERATOR: &str = "disconnected by an operator";

fn registry_down(e: actix::MailboxError) -> ApiError {
    ApiError::Internal(format!("registry unavailable: {e}"))
}

/// `?user=` on the listing routes.
#[derive(Deserialize)]
struct UserFilter {
    user: Option<String>,
}

/// `GET /admin/connections[?user=]`: every node's, each with its node; `missing` names the
/// nodes that did not answer in time.
async fn list_connections(
    Admin(_): Admin,
    fleet: web::Data<Fleet>,
    filter: web::Query<UserFilter>,
) -> Result<HttpResponse, ApiError> {
    let user = filter.into_inner().user.map(UserId::new);
    let listing = fleet.list(user).await.map_err(registry_down)?;
    Ok(HttpResponse::Ok().json(listing))
}

/// `DELETE /admin/connections/{conn_id}`: closes it with 4004, on whichever node holds it.
async fn disconnect(
    Admin(admin): Admin,
    fleet: web::Data<Fleet>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let conn_id = raw.parse().map(ConnId).map_err(|_| {
        ApiError::bad_request("invalid_conn_id", format!("{raw:?} is not a connection id (a positive integer)"))
    })?;
    let op = ControlOp::CloseConnection { conn_id, code: close::DISCONNECTED, reason: BY_OPERATOR.into() };
    let tally = fleet.close(op).await.map_err(registry_down)?;
    if tally.closed == 0 && tally.missing.is_empty() {
        return Err(ApiError::NotFound(format!("no connection {conn_id} on any node")));
    }
    tracing::info!(admin = %admin.user, %conn_id, closed = tally.closed, missing = ?tally.missing, "operator closed a connection");
    Ok(HttpResponse::Ok().json(tally))
}

/// `DELETE /admin/users/{user}/connections`: closes all of them, on every node, with 4004.
async fn disconnect_user(
    Admin(admin): Admin,
    fleet: web::Data<Fleet>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId::new(path.into_inner());
    let op = ControlOp::CloseUser { user: user.clone(), code: close::DISCONNECTED, reason: BY_OPERATOR.into() };
    let tally = fleet.close(op).await.map_err(registry_down)?;
    tracing::info!(admin = %admin.user, %user, closed = tally.closed, missing = ?tally.missing, "operator closed a user's connections");
    Ok(HttpResponse::Ok().json(tally))
}

/// `POST /admin/users/{user}/revoke`: every token of the user issued until now is refused from
/// now on, the user's sessions end, and their live sockets close on every node: 4002 for
/// session sockets, 4003 for token sockets.
async fn revoke_user(
    Admin(admin): Admin,
    fleet: web::Data<Fleet>,
    stores: web::Data<Stores>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId::new(path.into_inner());
    let at = crate::time::now_unix_ms();
    stores.revocations.revoke_user(&user, at).await.map_err(ApiError::StoreUnavailable)?;
    let sessions = stores.sessions.delete_user(&user).await.map_err(ApiError::SessionStoreUnavailable)?;
    // A session socket ends with its session (4002), here and now rather than when the store's
    // notification arrives; whatever else the user has open was opened with a token (4003).
    let mut tally = crate::fleet::Tally::default();
    let ops = sessions
        .iter()
        .map(|session_id| ControlOp::CloseSession {
            session_id: session_id.clone(),
            code: close::SESSION_ENDED,
            reason: "session ended".into(),
        })
        .chain([ControlOp::CloseUser { user: user.clone(), code: close::REVOKED, reason: "token revoked".into() }]);
    for op in ops {
        let part = fleet.close(op).await.map_err(registry_down)?;
        tally.closed += part.closed;
        for (node, closed) in part.nodes {
            *tally.nodes.entry(node).or_default() += closed;
        }
        tally.missing.extend(part.missing);
    }
    tally.missing.sort();
    tally.missing.dedup();
    tracing::info!(admin = %admin.user, %user, closed = tally.closed, missing = ?tally.missing, "operator revoked a user");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "user": user,
        "revoked_before": at,
        "closed": tally.closed,
        "nodes": tally.nodes,
        "missing": tally.missing,
        "sessions_ended": sessions.len(),
    })))
}

/// `POST /admin/users/{user}/roles/{role}/revoke`: from now on `role` counts for nothing in the
/// user's credentials, whatever they say (tokens already issued, an identity provider's new
/// ones, sessions), until restored; on every node the user's sockets stop holding it at once
/// and leave the rooms only it let them into (`left`, reason `forbidden`).
async fn withdraw_role(
    Admin(admin): Admin,
    fleet: web::Data<Fleet>,
    stores: web::Data<Stores>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (user, role) = user_role(path.into_inner())?;
    stores.revocations.withdraw_role(&user, &role).await.map_err(ApiError::StoreUnavailable)?;
    let op = ControlOp::WithdrawRole { user: user.clone(), role: role.clone() };
    let tally = fleet.close(op).await.map_err(registry_down)?;
    tracing::info!(admin = %admin.user, %user, %role, left = tally.closed, missing = ?tally.missing, "operator withdrew a role");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "user": user, "role": role, "left": tally.closed, "nodes": tally.nodes, "missing": tally.missing,
    })))
}

/// `DELETE /admin/users/{user}/roles/{role}/revoke`: the role counts again in credentials that
/// carry it; sockets hold it again from their next renewal or connection.
async fn restore_role(
    Admin(admin): Admin,
    stores: web::Data<Stores>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (user, role) = user_role(path.into_inner())?;
    if !stores.revocations.restore_role(&user, &role).await.map_err(ApiError::StoreUnavailable)? {
        return Err(ApiError::NotFound(format!("the role {role:?} was not withdrawn from {user}")));
    }
    tracing::info!(admin = %admin.user, %user, %role, "operator restored a role");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "user": user, "role": role, "restored": true })))
}

/// The user and role a `/admin/users/{user}/roles/{role}/…` path names.
fn user_role(path: (String, String)) -> Result<(UserId, String), ApiError> {
    let (user, role) = path;
    let user = UserId::parse(&user).map_err(|e| ApiError::bad_request("invalid_user", e.to_string()))?;
    if role.is_empty() || role.len() > 256 {
        return Err(ApiError::bad_request("invalid_role", "role names are 1 to 256 bytes"));
    }
    Ok((user, role))
}

/// `GET /admin/sessions[?user=]`: live server-side sessions (session mode).
async fn list_sessions(
    Admin(_): Admin,
    stores: web::Data<Stores>,
    filter: web::Query<UserFilter>,
) -> Result<HttpResponse, ApiError> {
    let user = filter.into_inner().user.map(UserId::new);
    let rows = stores.sessions.list(user.as_ref()).await.map_err(ApiError::SessionStoreUnavailable)?;
    let rows: Vec<_> = rows
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "user": s.user,
                "roles": s.roles,
                "created_at": s.created_ms / 1000,
                "last_seen_at": s.last_seen_ms / 1000,
                "expires_at": s.deadline_ms() / 1000,
                "absolute_expires_at": s.absolute_expiry_ms / 1000,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sessions": rows })))
}

/// `DELETE /admin/sessions/{id}`: ends it; its sockets close with 4002.
async fn end_session(
    Admin(admin): Admin,
    stores: web::Data<Stores>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = SessionId::new(path.into_inner());
    if !stores.sessions.delete(&id).await.map_err(ApiError::SessionStoreUnavailable)? {
        return Err(ApiError::NotFound("no such session".into()));
    }
    tracing::info!(admin = %admin.user, "operator ended a session");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "ended": 1 })))
}

/// `GET /admin/stats`
async fn stats(
    Admin(_): Admin,
    state: web::Data<AppState>,
    registry: web::Data<Addr<Registry>>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let stats = registry.send(GetStats).await.map_err(registry_down)?;
    let m = &metrics;
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

/// `GET /admin/rooms`: alone, every room this node keeps; with several nodes, every room
/// someone is in on any node. Each with its kind, list, the users in it and its last message id.
async fn list_rooms(Admin(_): Admin, fleet: web::Data<Fleet>) -> Result<HttpResponse, ApiError> {
    let listing = fleet.list_rooms().await.map_err(registry_down)?;
    Ok(HttpResponse::Ok().json(listing))
}

/// The room and user a `/admin/rooms/{room}/members/{user}` path names.
fn room_member(path: (String, String)) -> Result<(RoomId, UserId), ApiError> {
    let (room, user) = path;
    let room = RoomId::parse(&room).map_err(|e| ApiError::bad_request("invalid_room", e.to_string()))?;
    let user = UserId::parse(&user).map_err(|e| ApiError::bad_request("invalid_user", e.to_string()))?;
    Ok((room, user))
}

/// `DELETE /admin/rooms/{room}/members/{user}`: the user leaves the room on every node at once
/// (`left`, reason `kicked`) and may not rejoin: off a private room's list (its owner cannot be
/// kicked), onto the room's kicked list.
async fn kick(
    Admin(admin): Admin,
    fleet: web::Data<Fleet>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (room, user) = room_member(path.into_inner())?;
    let changed = fleet.change_access(room, Change::Kick { user: user.clone() }).await.map_err(registry_down)??;
    let left: usize = changed.left.values().sum();
    tracing::info!(admin = %admin.user, room = %changed.room, %user, left, missing = ?changed.missing, "operator kicked a user from a room");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "room": changed.room, "user": user, "access": changed.access,
        "left": left, "nodes": changed.left, "missing": changed.missing,
    })))
}

/// `POST /admin/rooms/{room}/members/{user}`: undoes a kick (and puts the user on a private
/// room's list); the user is told with `invited` only when their owner invites them.
async fn let_back_in(
    Admin(admin): Admin,
    fleet: web::Data<Fleet>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (room, user) = room_member(path.into_inner())?;
    let change = Change::Invite { users: vec![user.clone()] };
    let changed = fleet.change_access(room, change).await.map_err(registry_down)??;
    tracing::info!(admin = %admin.user, room = %changed.room, %user, "operator let a user back into a room");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "room": changed.room, "user": user, "access": changed.access })))
}

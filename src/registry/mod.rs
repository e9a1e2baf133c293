//! The registry actor: every live connection of this node, its token's expiry, and its rooms.
//!
//! It warns a connection `warn_before` ahead of `exp`, closes it with 4001 at `exp` (one timer,
//! armed for the earliest deadline in [`deadlines::Deadlines`]), fans chat messages out to
//! room members, and serves the admin API. It holds each socket as a `Recipient<Outbound>`,
//! never as the socket type, so it does not depend on the WebSocket transport.
//!
//! The file reads top to bottom: messages, state, then one handler per message.

pub mod deadlines;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use serde::Serialize;

use crate::auth::AuthMethod;
use crate::chat::{RoomLimits, Rooms};
use crate::config::Settings;
use crate::ids::{ConnId, RoomId, UserId};
use crate::metrics::Metrics;
use crate::protocol::{close, Echo, ErrorCode, PresenceEvent, ServerMessage};
use crate::time::now_unix_ms;
use deadlines::{Deadlines, Due};

// ---------------------------------------------------------------------------------------------
// Messages to a connection
// ---------------------------------------------------------------------------------------------

/// Something for one socket to do.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum Outbound {
    /// Send this text frame.
    Frame(ByteString),
    /// Send a close frame with this code and reason, then stop.
    Close {
        code: u16,
        reason: &'static str,
        /// For expiry closes: the deadline (Unix ms), so the socket can record how late it
        /// actually closed.
        deadline_ms: Option<u64>,
    },
}

// ---------------------------------------------------------------------------------------------
// Messages to the registry
// ---------------------------------------------------------------------------------------------

/// Who is behind an authenticated connection.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: UserId,
    /// `jti` of the current token.
    pub token_id: Option<String>,
    /// `exp` of the current token, Unix seconds.
    pub expires_at: u64,
    /// How the socket authenticated.
    pub method: AuthMethod,
    /// The login the token belongs to (`sid`), or the server-side session: ending it closes
    /// the socket.
    pub session_id: Option<String>,
}

impl Identity {
    /// Authenticated by a server-side session (session mode): no `expiring` warning (there is
    /// nothing to renew in-band), the end of its lifetime closes with 4002, not 4001, and it
    /// can never be renewed out of its session.
    pub fn session_bound(&self) -> bool {
        self.method == AuthMethod::Session
    }
}

/// Add a connection. Refused when its user or (unauthenticated) IP is at its cap.
#[derive(Message)]
#[rtype(result = "Result<(), Refusal>")]
pub struct Register {
    pub conn_id: ConnId,
    pub outbox: Recipient<Outbound>,
    pub ip: IpAddr,
    /// `None` while waiting for first-message auth.
    pub identity: Option<Identity>,
}

/// A connection that was waiting for first-message auth has proven who it is.
#[derive(Message)]
#[rtype(result = "Result<(), Refusal>")]
pub struct Authenticate {
    pub conn_id: ConnId,
    pub identity: Identity,
}

/// A connection renewed its token in-band: move its deadlines (and follow the new token's login).
/// Refused for a session-bound connection, which lives and ends with its session.
#[derive(Message)]
#[rtype(result = "Result<(), RenewRefusal>")]
pub struct Renew {
    pub conn_id: ConnId,
    pub token_id: Option<String>,
    pub expires_at: u64,
    pub session_id: Option<String>,
}

/// A connection began closing by itself (its peer closed, or it broke a rule): deliver
/// nothing more to it, but count it against the caps until [`Unregister`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Closing {
    pub conn_id: ConnId,
}

/// A connection's TCP connection is gone (sent when the response body is dropped; harmless if
/// already removed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub conn_id: ConnId,
}

/// Join a room; answers `joined` (or an error) on the connection's outbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub conn_id: ConnId,
    pub room: RoomId,
    pub since: Option<u64>,
    /// Echoed on a refusal.
    pub echo: Echo,
}

/// Leave a room; answers `left` or `not_member`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub conn_id: ConnId,
    pub room: RoomId,
    /// Echoed on a refusal.
    pub echo: Echo,
}

/// Post a message to a room the connection is in; answers with the broadcast and an `ack`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub conn_id: ConnId,
    pub room: RoomId,
    pub text: String,
    /// Echoed on a refusal; its `ref` also goes into the `ack`.
    pub echo: Echo,
}

/// Older messages of a room the connection is in.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FetchHistory {
    pub conn_id: ConnId,
    pub room: RoomId,
    pub before: Option<u64>,
    pub limit: usize,
    /// Echoed on a refusal.
    pub echo: Echo,
}

/// Admin: the live connections, optionally of one user.
#[derive(Message)]
#[rtype(result = "Vec<ConnectionInfo>")]
pub struct ListConnections {
    pub user: Option<UserId>,
}

/// Close one connection; answers whether it existed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CloseConnection {
    pub conn_id: ConnId,
    pub code: u16,
    pub reason: &'static str,
}

/// Close every connection of a user; answers how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseUser {
    pub user: UserId,
    pub code: u16,
    pub reason: &'static str,
}

/// Close every connection of one login (`sid`); answers how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseSession {
    pub session_id: String,
    pub code: u16,
    pub reason: &'static str,
}

/// Close everything (server shutdown), sending `farewell` first when given; answers how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    pub farewell: Option<ByteString>,
    pub code: u16,
    pub reason: &'static str,
}

/// The server-side sessions that have live sockets here (for reconciliation).
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct ListSessionIds;

/// Admin: counts.
#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

/// Why a connection was refused or a change not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections")]
    TooManyConnections,
    #[error("this node holds server.max_connections sockets")]
    ServerFull,
    #[error("no such connection")]
    UnknownConnection,
}

/// Why a [`Renew`] was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenewRefusal {
    #[error("no such connection")]
    UnknownConnection,
    /// A connection authenticated by a server-side session keeps that session to the end:
    /// a token must not move its expiry or detach it from the session.
    #[error(
        "this connection is bound to its session (session mode): it ends with the session, and a token cannot renew it"
    )]
    SessionBound,
}

/// One row of `GET /admin/connections`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    pub conn_id: ConnId,
    pub user: Option<UserId>,
    pub node: String,
    pub auth: Option<AuthMethod>,
    pub token_id: Option<String>,
    pub expires_at: Option<u64>,
    pub rooms: Vec<RoomId>,
    /// Unix milliseconds.
    pub connected_at: u64,
    pub ip: IpAddr,
}

/// `GET /admin/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub node: String,
    pub connections: usize,
    /// Closed sockets whose TCP connection is not gone yet (they still count against caps).
    pub closing: usize,
    pub authenticated: usize,
    pub users: usize,
    pub rooms: usize,
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// Deadlines handled per timer turn, so a mass expiry does not starve other messages.
const DEADLINE_BATCH: usize = 512;

/// Limits the registry enforces, from [`Settings`].
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub node: String,
    pub warn_before: Duration,
    pub max_connections: usize,
    pub max_unauthenticated_per_ip: usize,
    pub max_connections_per_user: usize,
    pub max_rooms_per_connection: usize,
    pub history_size: usize,
    pub rooms: RoomLimits,
}

impl RegistryConfig {
    pub fn from_settings(settings: &Settings, node: String) -> Self {
        Self {
            node,
            warn_before: settings.ws.warn_before,
            max_connections: settings.server.max_connections,
            max_unauthenticated_per_ip: settings.ws.max_unauthenticated_per_ip,
            max_connections_per_user: settings.ws.max_connections_per_user,
            max_rooms_per_connection: settings.chat.max_rooms_per_connection,
            history_size: settings.chat.history_size,
            rooms: RoomLimits {
                max_rooms: settings.chat.max_rooms,
                max_created_per_user: settings.chat.max_rooms_created_per_user,
                creations_per_minute: settings.chat.room_creations_per_minute,
                idle_ttl_ms: settings.chat.idle_room_ttl.as_millis() as u64,
            },
        }
    }
}

/// One live connection.
struct Connection {
    outbox: Recipient<Outbound>,
    ip: IpAddr,
    connected_at: u64,
    identity: Option<Identity>,
    rooms: BTreeSet<RoomId>,
}

/// What a closed connection still holds until its TCP connection is gone.
enum Held {
    User(UserId),
    Pending(IpAddr),
}

/// The actor.
pub struct Registry {
    config: RegistryConfig,
    metrics: Arc<Metrics>,
    conns: HashMap<ConnId, Connection>,
    by_user: HashMap<UserId, HashSet<ConnId>>,
    by_session: HashMap<String, HashSet<ConnId>>,
    /// Unauthenticated sockets per client IP (closing ones included).
    pending_by_ip: HashMap<IpAddr, usize>,
    /// Closed connections whose TCP connection is not gone yet: they count against the global,
    /// per-user and per-IP caps, so a client cannot escape a cap by not answering a close.
    closing: HashMap<ConnId, Held>,
    closing_by_user: HashMap<UserId, usize>,
    deadlines: Deadlines,
    /// The one armed timer: when it fires (Unix ms) and its handle.
    timer: Option<(u64, SpawnHandle)>,
    rooms: Rooms,
}

impl Registry {
    pub fn new(config: RegistryConfig, metrics: Arc<Metrics>) -> Self {
        let rooms = Rooms::new(config.history_size, config.rooms.clone());
        Self {
            config,
            metrics,
            conns: HashMap::new(),
            by_user: HashMap::new(),
            by_session: HashMap::new(),
            pending_by_ip: HashMap::new(),
            closing: HashMap::new(),
            closing_by_user: HashMap::new(),
            deadlines: Deadlines::default(),
            timer: None,
            rooms,
        }
    }

    fn send(&self, conn_id: ConnId, message: &ServerMessage) {
        if let Some(conn) = self.conns.get(&conn_id) {
            conn.outbox.do_send(Outbound::Frame(message.to_json()));
        }
    }

    fn send_error(&self, conn_id: ConnId, code: ErrorCode, echo: Echo, message: impl Into<String>) {
        self.send(conn_id, &ServerMessage::refused(code, message, echo));
    }

    /// Sends one serialised frame to every member of `room`.
    fn broadcast(&self, room: &RoomId, message: &ServerMessage) {
        let frame = message.to_json();
        for member in self.rooms.members(room) {
            if let Some(conn) = self.conns.get(&member) {
                conn.outbox.do_send(Outbound::Frame(frame.clone()));
            }
        }
    }

    /// The user behind an authenticated connection; answers `auth required` otherwise.
    fn user_of(&self, conn_id: ConnId) -> Option<UserId> {
        self.conns.get(&conn_id)?.identity.as_ref().map(|i| i.user.clone())
    }

    fn schedule_expiry(&mut self, conn_id: ConnId, expires_at: u64, session_bound: bool, ctx: &mut Context<Self>) {
        let expire_ms = expires_at.saturating_mul(1000);
        let warn_ms = expire_ms.saturating_sub(self.config.warn_before.as_millis() as u64);
        self.deadlines.schedule(conn_id, (!session_bound).then_some(warn_ms), expire_ms);
        self.arm_timer(ctx);
    }

    /// Keeps exactly one timer armed, for the earliest deadline.
    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let next = self.deadlines.next_at();
        if self.timer.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = next {
            let delay = Duration::from_millis(at.saturating_sub(now_unix_ms()));
            let handle = ctx.run_later(delay, |registry, ctx| {
                registry.timer = None;
                registry.fire_deadlines(ctx);
            });
            self.timer = Some((at, handle));
        }
    }

    /// Handles what is due, at most [`DEADLINE_BATCH`] at a time: when more remain, the timer is
    /// re-armed at once, so joins and messages queued meanwhile are served between batches.
    fn fire_deadlines(&mut self, ctx: &mut Context<Self>) {
        // Decided by the wall clock, which `exp` is measured in; if it stepped back since the
        // timer was armed, nothing is due yet and the timer is simply re-armed.
        let now = now_unix_ms();
        for (conn_id, due) in self.deadlines.pop_due(now, DEADLINE_BATCH) {
            let Some(identity) = self.conns.get(&conn_id).and_then(|c| c.identity.as_ref()) else {
                continue;
            };
            let (expires_at, session_bound) = (identity.expires_at, identity.session_bound());
            match due {
                Due::Warn => {
                    let seconds_left = (expires_at * 1000).saturating_sub(now).div_ceil(1000);
                    self.send(conn_id, &ServerMessage::Expiring { expires_at, seconds_left });
                }
                Due::Expire => {
                    let (code, reason) = if session_bound {
                        (close::SESSION_ENDED, "session expired")
                    } else {
                        (close::TOKEN_EXPIRED, "token expired")
                    };
                    if let Some(conn) = self.remove(conn_id, true) {
                        conn.outbox.do_send(Outbound::Close { code, reason, deadline_ms: Some(expires_at * 1000) });
                    }
                }
            }
        }
        self.arm_timer(ctx);
    }

    /// Tells the socket to close and forgets it at once, so nothing more is sent to it.
    fn close(&mut self, conn_id: ConnId, code: u16, reason: &'static str) -> bool {
        match self.remove(conn_id, true) {
            Some(conn) => {
                conn.outbox.do_send(Outbound::Close { code, reason, deadline_ms: None });
                true
            }
            None => false,
        }
    }

    /// Closes each of `ids` still open; answers how many were.
    fn close_many(&mut self, ids: Vec<ConnId>, code: u16, reason: &'static str, ctx: &mut Context<Self>) -> usize {
        let closed = ids.into_iter().filter(|id| self.close(*id, code, reason)).count();
        self.arm_timer(ctx);
        closed
    }

    /// Drops a connection from rooms, deadlines and indexes, and announces its departure to
    /// its rooms. With `still_open`, its TCP connection is not gone yet, so it keeps counting
    /// against the caps until [`Unregister`].
    fn remove(&mut self, conn_id: ConnId, still_open: bool) -> Option<Connection> {
        let conn = self.conns.remove(&conn_id)?;
        self.deadlines.cancel(conn_id);
        let now = now_unix_ms();
        match &conn.identity {
            Some(identity) => {
                unindex(&mut self.by_user, &identity.user, conn_id);
                if still_open {
                    *self.closing_by_user.entry(identity.user.clone()).or_default() += 1;
                    self.closing.insert(conn_id, Held::User(identity.user.clone()));
                }
                if let Some(sid) = &identity.session_id {
                    unindex(&mut self.by_session, sid, conn_id);
                }
                for room in &conn.rooms {
                    if self.rooms.leave(room, conn_id, now) == Some(true) {
                        let event = ServerMessage::Presence {
                            room: room.clone(),
                            user: identity.user.clone(),
                            event: PresenceEvent::Leave,
                        };
                        self.broadcast(room, &event);
                    }
                }
            }
            None if still_open => {
                self.closing.insert(conn_id, Held::Pending(conn.ip));
            }
            None => self.release_pending(conn.ip),
        }
        self.metrics.connections_open.set(self.conns.len() as i64);
        Some(conn)
    }

    fn release_pending(&mut self, ip: IpAddr) {
        if let Some(count) = self.pending_by_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.pending_by_ip.remove(&ip);
            }
        }
    }

    fn user_at_cap(&self, user: &UserId) -> bool {
        let open = self.by_user.get(user).map_or(0, HashSet::len);
        let closing = self.closing_by_user.get(user).copied().unwrap_or(0);
        open + closing >= self.config.max_connections_per_user
    }

    /// The TCP connection of a closed connection is gone: release what it held.
    fn release_closed(&mut self, conn_id: ConnId) {
        match self.closing.remove(&conn_id) {
            Some(Held::User(user)) => {
                if let Some(count) = self.closing_by_user.get_mut(&user) {
                    *count -= 1;
                    if *count == 0 {
                        self.closing_by_user.remove(&user);
                    }
                }
            }
            Some(Held::Pending(ip)) => self.release_pending(ip),
            None => {}
        }
    }

    fn add_identity(&mut self, conn_id: ConnId, identity: &Identity, ctx: &mut Context<Self>) {
        self.by_user.entry(identity.user.clone()).or_default().insert(conn_id);
        if let Some(sid) = &identity.session_id {
            self.by_session.entry(sid.clone()).or_default().insert(conn_id);
        }
        self.schedule_expiry(conn_id, identity.expires_at, identity.session_bound(), ctx);
    }

    fn info(&self, conn_id: ConnId, conn: &Connection) -> ConnectionInfo {
        let identity = conn.identity.as_ref();
        ConnectionInfo {
            conn_id,
            user: identity.map(|i| i.user.clone()),
            node: self.config.node.clone(),
            auth: identity.map(|i| i.method),
            token_id: identity.and_then(|i| i.token_id.clone()),
            expires_at: identity.map(|i| i.expires_at),
            rooms: conn.rooms.iter().cloned().collect(),
            connected_at: conn.connected_at,
            ip: conn.ip,
        }
    }
}

/// Removes `conn_id` from an index entry, dropping the entry when it empties.
fn unindex<K: std::hash::Hash + Eq>(index: &mut HashMap<K, HashSet<ConnId>>, key: &K, conn_id: ConnId) {
    if let Some(set) = index.get_mut(key) {
        set.remove(&conn_id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// How often rooms that have been empty and idle past `chat.idle_room_ttl` are dropped.
const ROOM_SWEEP: Duration = Duration::from_secs(60);

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(ROOM_SWEEP, |registry, _| {
            registry.rooms.drop_idle(now_unix_ms());
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

impl Handler<Register> for Registry {
    type Result = Result<(), Refusal>;

    /// Admits a connection within the per-user and per-IP caps and arms its expiry.
    fn handle(&mut self, msg: Register, ctx: &mut Context<Self>) -> Self::Result {
        if self.conns.len() + self.closing.len() >= self.config.max_connections {
            return Err(Refusal::ServerFull);
        }
        match &msg.identity {
            Some(identity) if self.user_at_cap(&identity.user) => return Err(Refusal::TooManyConnections),
            Some(identity) => self.add_identity(msg.conn_id, identity, ctx),
            None => {
                let pending = self.pending_by_ip.entry(msg.ip).or_default();
                if *pending >= self.config.max_unauthenticated_per_ip {
                    return Err(Refusal::TooManyConnections);
                }
                *pending += 1;
            }
        }
        let conn = Connection {
            outbox: msg.outbox,
            ip: msg.ip,
            connected_at: now_unix_ms(),
            identity: msg.identity,
            rooms: BTreeSet::new(),
        };
        self.conns.insert(msg.conn_id, conn);
        self.metrics.connections_open.set(self.conns.len() as i64);
        Ok(())
    }
}

impl Handler<Authenticate> for Registry {
    type Result = Result<(), Refusal>;

    /// Moves a connection from the per-IP pending count to its user.
    fn handle(&mut self, msg: Authenticate, ctx: &mut Context<Self>) -> Self::Result {
        if self.user_at_cap(&msg.identity.user) {
            return Err(Refusal::TooManyConnections);
        }
        let conn = self.conns.get_mut(&msg.conn_id).ok_or(Refusal::UnknownConnection)?;
        if conn.identity.is_some() {
            return Err(Refusal::UnknownConnection);
        }
        conn.identity = Some(msg.identity.clone());
        let ip = conn.ip;
        self.release_pending(ip);
        self.add_identity(msg.conn_id, &msg.identity, ctx);
        Ok(())
    }
}

impl Handler<Renew> for Registry {
    type Result = Result<(), RenewRefusal>;

    /// Replaces the connection's expiry (and warning) with the new token's, and follows the new
    /// token's login. Never for a session-bound connection: its session id is what logout and
    /// operators close it by, so it must never change.
    fn handle(&mut self, msg: Renew, ctx: &mut Context<Self>) -> Self::Result {
        let identity = self
            .conns
            .get_mut(&msg.conn_id)
            .and_then(|c| c.identity.as_mut())
            .ok_or(RenewRefusal::UnknownConnection)?;
        if identity.session_bound() {
            return Err(RenewRefusal::SessionBound);
        }
        identity.expires_at = msg.expires_at;
        identity.token_id = msg.token_id;
        let old_session = std::mem::replace(&mut identity.session_id, msg.session_id.clone());
        if old_session != msg.session_id {
            if let Some(sid) = old_session {
                unindex(&mut self.by_session, &sid, msg.conn_id);
            }
            if let Some(sid) = msg.session_id {
                self.by_session.entry(sid).or_default().insert(msg.conn_id);
            }
        }
        self.schedule_expiry(msg.conn_id, msg.expires_at, false, ctx);
        Ok(())
    }
}

impl Handler<Unregister> for Registry {
    type Result = ();

    /// Forgets a connection whose TCP connection is gone.
    fn handle(&mut self, msg: Unregister, ctx: &mut Context<Self>) {
        if self.remove(msg.conn_id, false).is_some() {
            self.arm_timer(ctx);
        }
        self.release_closed(msg.conn_id);
    }
}

impl Handler<Closing> for Registry {
    type Result = ();

    /// Stops delivering to a connection that is closing; it keeps its place under the caps.
    fn handle(&mut self, msg: Closing, ctx: &mut Context<Self>) {
        if self.remove(msg.conn_id, true).is_some() {
            self.arm_timer(ctx);
        }
    }
}

impl Handler<Join> for Registry {
    type Result = ();

    /// Adds the connection to the room, answers `joined` with members and history, and
    /// announces the user to the others if this is their first socket there.
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let Some(user) = self.user_of(msg.conn_id) else { return };
        let conn_rooms = self.conns.get(&msg.conn_id).map(|c| c.rooms.len()).unwrap_or(0);
        if !self.rooms.is_member(&msg.room, msg.conn_id) && conn_rooms >= self.config.max_rooms_per_connection {
            let limit = self.config.max_rooms_per_connection;
            return self.send_error(
                msg.conn_id,
                ErrorCode::TooManyRooms,
                msg.echo,
                format!("a connection may be in at most {limit} rooms"),
            );
        }
        let joined = match self.rooms.join(&msg.room, msg.conn_id, &user, now_unix_ms()) {
            Ok(joined) => joined,
            Err(e) => return self.send_error(msg.conn_id, ErrorCode::TooManyRooms, msg.echo, e.to_string()),
        };
        if let Some(conn) = self.conns.get_mut(&msg.conn_id) {
            conn.rooms.insert(msg.room.clone());
        }
        if joined.user_arrived {
            let event =
                ServerMessage::Presence { room: msg.room.clone(), user: user.clone(), event: PresenceEvent::Join };
            let frame = event.to_json();
            for member in self.rooms.members(&msg.room).filter(|m| *m != msg.conn_id) {
                if let Some(conn) = self.conns.get(&member) {
                    conn.outbox.do_send(Outbound::Frame(frame.clone()));
                }
            }
        }
        let history = self.rooms.history(&msg.room, msg.since, None, self.config.history_size);
        let members = self.rooms.users(&msg.room);
        self.send(msg.conn_id, &ServerMessage::Joined { room: msg.room, members, history });
    }
}

impl Handler<Leave> for Registry {
    type Result = ();

    /// Removes the connection from the room and announces the user's departure if it was
    /// their last socket there.
    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        let Some(user) = self.user_of(msg.conn_id) else { return };
        let Some(user_left) = self.rooms.leave(&msg.room, msg.conn_id, now_unix_ms()) else {
            return self.send_error(
                msg.conn_id,
                ErrorCode::NotMember,
                msg.echo,
                format!("not a member of {}", msg.room),
            );
        };
        if let Some(conn) = self.conns.get_mut(&msg.conn_id) {
            conn.rooms.remove(&msg.room);
        }
        if user_left {
            self.broadcast(
                &msg.room,
                &ServerMessage::Presence { room: msg.room.clone(), user, event: PresenceEvent::Leave },
            );
        }
        self.send(msg.conn_id, &ServerMessage::Left { room: msg.room });
    }
}

impl Handler<Publish> for Registry {
    type Result = ();

    /// Stores the message, broadcasts it to the room (sender included), then acks the sender.
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        let Some(user) = self.user_of(msg.conn_id) else { return };
        if !self.rooms.is_member(&msg.room, msg.conn_id) {
            let message = format!("join {} before sending to it", msg.room);
            return self.send_error(msg.conn_id, ErrorCode::NotMember, msg.echo, message);
        }
        let message = self.rooms.post(&msg.room, &user, msg.text, now_unix_ms());
        let id = message.id;
        self.broadcast(&msg.room, &ServerMessage::Message(message));
        self.send(msg.conn_id, &ServerMessage::Ack { client_ref: msg.echo.client_ref, room: msg.room, id });
    }
}

impl Handler<FetchHistory> for Registry {
    type Result = ();

    /// Answers `history` for a room the connection is in.
    fn handle(&mut self, msg: FetchHistory, _: &mut Context<Self>) {
        if self.user_of(msg.conn_id).is_none() {
            return;
        }
        if !self.rooms.is_member(&msg.room, msg.conn_id) {
            return self.send_error(
                msg.conn_id,
                ErrorCode::NotMember,
                msg.echo,
                format!("join {} to read its history", msg.room),
            );
        }
        let messages = self.rooms.history(&msg.room, None, msg.before, msg.limit);
        self.send(msg.conn_id, &ServerMessage::History { room: msg.room, messages });
    }
}

impl Handler<ListConnections> for Registry {
    type Result = MessageResult<ListConnections>;

    /// Lists connections, oldest first.
    fn handle(&mut self, msg: ListConnections, _: &mut Context<Self>) -> Self::Result {
        let mut rows: Vec<ConnectionInfo> = match &msg.user {
            Some(user) => self
                .by_user
                .get(user)
                .into_iter()
                .flatten()
                .filter_map(|id| self.conns.get(id).map(|c| self.info(*id, c)))
                .collect(),
            None => self.conns.iter().map(|(id, c)| self.info(*id, c)).collect(),
        };
        rows.sort_by_key(|r| r.conn_id);
        MessageResult(rows)
    }
}

impl Handler<CloseConnection> for Registry {
    type Result = bool;

    fn handle(&mut self, msg: CloseConnection, ctx: &mut Context<Self>) -> bool {
        self.close_many(vec![msg.conn_id], msg.code, msg.reason, ctx) == 1
    }
}

impl Handler<CloseUser> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseUser, ctx: &mut Context<Self>) -> usize {
        let ids = self.by_user.get(&msg.user).into_iter().flatten().copied().collect();
        self.close_many(ids, msg.code, msg.reason, ctx)
    }
}

impl Handler<CloseSession> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) -> usize {
        let ids = self.by_session.get(&msg.session_id).into_iter().flatten().copied().collect();
        self.close_many(ids, msg.code, msg.reason, ctx)
    }
}

impl Handler<CloseAll> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, ctx: &mut Context<Self>) -> usize {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in &ids {
            if let (Some(farewell), Some(conn)) = (&msg.farewell, self.conns.get(id)) {
                conn.outbox.do_send(Outbound::Frame(farewell.clone()));
            }
            self.close(*id, msg.code, msg.reason);
        }
        self.arm_timer(ctx);
        ids.len()
    }
}

impl Handler<ListSessionIds> for Registry {
    type Result = MessageResult<ListSessionIds>;

    fn handle(&mut self, _: ListSessionIds, _: &mut Context<Self>) -> Self::Result {
        let session_bound = |ids: &HashSet<ConnId>| {
            ids.iter()
                .any(|id| self.conns.get(id).and_then(|c| c.identity.as_ref()).is_some_and(Identity::session_bound))
        };
        MessageResult(
            self.by_session.iter().filter(|(_, ids)| session_bound(ids)).map(|(sid, _)| sid.clone()).collect(),
        )
    }
}

impl Handler<GetStats> for Registry {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Stats {
            node: self.config.node.clone(),
            connections: self.conns.len(),
            closing: self.closing.len(),
            authenticated: self.conns.values().filter(|c| c.identity.is_some()).count(),
            users: self.by_user.len(),
            rooms: self.rooms.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for a socket: takes what the registry sends and drops it.
    struct Sink;

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<Outbound> for Sink {
        type Result = ();

        fn handle(&mut self, _: Outbound, _: &mut Context<Self>) {}
    }

    fn registry() -> Addr<Registry> {
        let config = RegistryConfig {
            node: "test".into(),
            warn_before: Duration::from_secs(60),
            max_unauthenticated_per_ip: 4,
            max_connections_per_user: 4,
            max_rooms_per_connection: 4,
            history_size: 4,
            max_connections: 16,
            rooms: RoomLimits { max_rooms: 4, max_created_per_user: 4, creations_per_minute: 4, idle_ttl_ms: 1000 },
        };
        Registry::new(config, Arc::new(Metrics::new())).start()
    }

    async fn register(registry: &Addr<Registry>, conn_id: u64, session_id: &str, session_bound: bool) {
        let identity = Identity {
            user: UserId::new("alice"),
            token_id: None,
            expires_at: crate::time::now_unix_s() + 3600,
            method: if session_bound { AuthMethod::Session } else { AuthMethod::Header },
            session_id: Some(session_id.into()),
        };
        let outbox = Sink.start().recipient();
        let register =
            Register { conn_id: ConnId(conn_id), outbox, ip: IpAddr::from([127, 0, 0, 1]), identity: Some(identity) };
        registry.send(register).await.unwrap().unwrap();
    }

    fn renew(conn_id: u64, session_id: &str) -> Renew {
        Renew {
            conn_id: ConnId(conn_id),
            token_id: Some("jti".into()),
            expires_at: crate::time::now_unix_s() + 7200,
            session_id: Some(session_id.into()),
        }
    }

    #[actix::test]
    async fn a_session_bound_connection_is_never_renewed_out_of_its_session() {
        let registry = registry();
        register(&registry, 1, "session-1", true).await;
        assert_eq!(registry.send(renew(1, "login-of-a-token")).await.unwrap(), Err(RenewRefusal::SessionBound));
        let rows = registry.send(ListConnections { user: None }).await.unwrap();
        assert_eq!((rows[0].token_id.as_deref(), rows[0].auth), (None, Some(AuthMethod::Session)), "unchanged");
        assert_eq!(registry.send(ListSessionIds).await.unwrap(), ["session-1"]);
        let close = |session_id: &str| CloseSession { session_id: session_id.into(), code: 4002, reason: "ended" };
        assert_eq!(registry.send(close("login-of-a-token")).await.unwrap(), 0);
        assert_eq!(registry.send(close("session-1")).await.unwrap(), 1, "its session still closes it");
    }

    #[actix::test]
    async fn a_token_connection_follows_the_login_of_its_new_token() {
        let registry = registry();
        register(&registry, 1, "login-1", false).await;
        assert_eq!(registry.send(renew(1, "login-2")).await.unwrap(), Ok(()));
        let close = |session_id: &str| CloseSession { session_id: session_id.into(), code: 4002, reason: "ended" };
        assert_eq!(registry.send(close("login-1")).await.unwrap(), 0);
        assert_eq!(registry.send(close("login-2")).await.unwrap(), 1);
    }
}

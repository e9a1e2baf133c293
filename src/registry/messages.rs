//! The registry's messages: what sockets and the HTTP layer send it, and what it answers.

use std::net::IpAddr;

use actix::prelude::*;
use bytestring::ByteString;
use serde::Serialize;

use super::post::SocketOutbox;
use crate::auth::AuthMethod;
use crate::chat::access::{Change, ChangeRefusal, Grants, Rules};
use crate::ids::{ConnId, RoomId, SessionId, UserId};
use crate::protocol::{AccessView, Echo};

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
    pub session_id: Option<SessionId>,
    /// What the credential grants towards the room rules.
    pub grants: Grants,
}

impl Identity {
    /// Authenticated by a server-side session (session mode): no `expiring` warning (there is
    /// nothing to renew in-band), the end of its lifetime closes with 4002, not 4001, and it
    /// can never be renewed out of its session.
    pub fn session_bound(&self) -> bool {
        self.method == AuthMethod::Session
    }
}

/// Add a connection (its place under the caps is taken already: [`super::admission`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub conn_id: ConnId,
    pub outbox: SocketOutbox,
    pub ip: IpAddr,
    /// `None` while waiting for first-message auth.
    pub identity: Option<Identity>,
}

/// A connection that was waiting for first-message auth has proven who it is.
#[derive(Message)]
#[rtype(result = "()")]
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
    pub session_id: Option<SessionId>,
    /// The new token's: the connection leaves the rooms they no longer let it be in.
    pub grants: Grants,
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
    /// The numbering `since` belongs to (`joined.epoch`).
    pub epoch: Option<String>,
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

/// Create a private room owned by the connection's user, let `invite` in, and join it;
/// answers `joined` (or an error) on the connection's outbox, and `invited` to the invitees.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CreateRoom {
    pub conn_id: ConnId,
    pub room: RoomId,
    pub invite: Vec<UserId>,
    pub echo: Echo,
}

/// Open the direct conversation between the connection's user and `with` (once, the first
/// time) and join it; `with` is told with `invited`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OpenDm {
    pub conn_id: ConnId,
    pub with: UserId,
    pub echo: Echo,
}

/// The private rooms and direct conversations the connection's user may join; answers `rooms`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListOwnRooms {
    pub conn_id: ConnId,
    pub echo: Echo,
}

/// Who asks for a change to a room's list.
#[derive(Debug, Clone)]
pub enum Requester {
    /// A socket, whose user must own the private room; it is answered on its outbox.
    Conn { conn_id: ConnId, echo: Echo },
    /// An operator (the admin API), answered with the result.
    Operator,
}

/// Change who may be in a room; on every node, whoever it puts out leaves at once.
#[derive(Message)]
#[rtype(result = "Result<RoomChanged, AccessError>")]
pub struct ChangeAccess {
    pub room: RoomId,
    pub change: Change,
    pub requester: Requester,
}

/// What a change did, over every node.
#[derive(Debug, Clone, Serialize)]
pub struct RoomChanged {
    pub room: RoomId,
    pub access: AccessView,
    /// Sockets put out of the room, per node that answered.
    pub left: std::collections::BTreeMap<String, usize>,
    /// Live nodes that did not answer in time: their sockets may still be in the room.
    pub missing: Vec<String>,
}

/// Why a change to a room's list was not made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Refused(#[from] ChangeRefusal),
    /// Several nodes: Redis could not be reached (the text is for logs).
    #[error("the chat store is unreachable: {0}")]
    Unavailable(String),
}

/// The room rules changed (SIGHUP): every connection leaves the rooms they no longer let it be
/// in; answers how many room memberships ended.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct SetRules {
    pub rules: Rules,
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
    pub session_id: SessionId,
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
#[rtype(result = "Vec<SessionId>")]
pub struct ListSessionIds;

/// An operator request (also from another node): list or close connections.
#[derive(Message)]
#[rtype(result = "crate::cluster::ControlReply")]
pub struct Execute(pub crate::cluster::ControlOp);

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

/// One row of `GET /admin/rooms`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RoomRow {
    pub room: RoomId,
    pub kind: crate::protocol::RoomKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserId>,
    /// Who may join (private room, direct conversation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<UserId>,
    /// Who was kicked and may not rejoin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kicked: Vec<UserId>,
    /// The list's version: with several nodes, the newest one wins when rows are merged.
    #[serde(default)]
    pub version: u64,
    /// Users in the room now.
    pub members: Vec<UserId>,
    /// The id of the room's last message (in its current numbering).
    pub messages: u64,
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

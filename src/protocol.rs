//! The JSON messages exchanged over the socket. Every frame is one JSON object with a `type`.
//!
//! Parsing is strict about what it needs and says exactly what was wrong, so a client gets a
//! useful `error` and keeps its connection.

use std::sync::Arc;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::ids::{ConnId, RoomId, UserId};

/// What a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First-message authentication, on a socket opened without a credential.
    Auth { token: SecretString },
    /// In-band renewal: a fresh token for the same user moves the connection's expiry.
    Reauth { token: SecretString },
    /// Join a room; `since` asks only for messages after that id (after a reconnect), and
    /// `epoch` (from the last `joined`) says which numbering that id belongs to.
    Join {
        room: String,
        since: Option<u64>,
        epoch: Option<String>,
        /// Echoed on a refusal.
        #[serde(rename = "ref")]
        client_ref: Option<serde_json::Value>,
    },
    Leave {
        room: String,
        #[serde(rename = "ref")]
        client_ref: Option<serde_json::Value>,
    },
    /// Post to a room; `ref` is echoed in the `ack`.
    Send {
        room: String,
        text: String,
        #[serde(rename = "ref")]
        client_ref: Option<serde_json::Value>,
    },
    /// Older messages of a room: ids below `before`, at most `limit`.
    History {
        room: String,
        before: Option<u64>,
        limit: Option<usize>,
        #[serde(rename = "ref")]
        client_ref: Option<serde_json::Value>,
    },
    /// Create a private room (`private` must be true: a public room needs no creating) owned
    /// by the sender, who joins it; `invite` may join it too.
    Create {
        room: String,
        private: bool,
        #[serde(default)]
        invite: Vec<String>,
        #[serde(rename = "ref")]
        client_ref: Option<serde_json::Value>,
    },
    /// The owner of a private room lets more users in.
    Invite {
        room: String,
        users: Vec<String>,
        #[serde(rename = "ref")]
        client_ref: Option<serde_json::Value>,
    },
    /// The owner of a private room puts a user out and keeps them out.
    Kick {
        room: String,
        user: String,
        #[serde(rename = "ref")]
        client_ref: Option<serde_json::Value>,
    },
    /// Open (or reopen) the direct conversation with `user`, and join it.
    Dm {
        user: String,
        #[serde(rename = "ref")]
        client_ref: Option<serde_json::Value>,
    },
    /// The private rooms and direct conversations the sender may join.
    Rooms {
        #[serde(rename = "ref")]
        client_ref: Option<serde_json::Value>,
    },
}

const CLIENT_TYPES: &[&str] =
    &["auth", "reauth", "join", "leave", "send", "history", "create", "invite", "kick", "dm", "rooms"];

/// Why a client frame was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: ErrorCode,
    pub message: String,
}

/// What a refusal echoes of the request it refuses, so a client can tell which one failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Echo {
    /// The request's `type`.
    pub request: Option<&'static str>,
    /// The room it named (an invalid name is cut to [`RoomId::MAX_LEN`] characters).
    pub room: Option<String>,
    /// The client's `ref`, when it gave one.
    pub client_ref: Option<serde_json::Value>,
}

impl Echo {
    pub fn new(request: &'static str, room: &str, client_ref: Option<serde_json::Value>) -> Self {
        let room = room.chars().take(RoomId::MAX_LEN).collect();
        Self { request: Some(request), room: Some(room), client_ref }
    }
}

impl ClientMessage {
    /// The type, room and `ref` of this request, for errors about it.
    pub fn echo(&self) -> Echo {
        match self {
            Self::Auth { .. } => Echo { request: Some("auth"), ..Echo::default() },
            Self::Reauth { .. } => Echo { request: Some("reauth"), ..Echo::default() },
            Self::Join { room, client_ref, .. } => Echo::new("join", room, client_ref.clone()),
            Self::Leave { room, client_ref } => Echo::new("leave", room, client_ref.clone()),
            Self::Send { room, client_ref, .. } => Echo::new("send", room, client_ref.clone()),
            Self::History { room, client_ref, .. } => Echo::new("history", room, client_ref.clone()),
            Self::Create { room, client_ref, .. } => Echo::new("create", room, client_ref.clone()),
            Self::Invite { room, client_ref, .. } => Echo::new("invite", room, client_ref.clone()),
            Self::Kick { room, client_ref, .. } => Echo::new("kick", room, client_ref.clone()),
            Self::Dm { client_ref, .. } => Echo { request: Some("dm"), room: None, client_ref: client_ref.clone() },
            Self::Rooms { client_ref } => Echo { request: Some("rooms"), room: None, client_ref: client_ref.clone() },
        }
    }

    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ParseError { code: ErrorCode::BadJson, message: format!("not a JSON object: {e}") })?;
        let Some(kind) = value.get("type") else {
            return Err(ParseError { code: ErrorCode::MissingField, message: "missing field `type`".into() });
        };
        let Some(kind) = kind.as_str().filter(|k| CLIENT_TYPES.contains(k)) else {
            return Err(ParseError {
                code: ErrorCode::UnknownType,
                message: format!("unknown message type; expected one of {}", CLIENT_TYPES.join(", ")),
            });
        };
        // Required fields are checked by name, so a missing one is told apart from a wrong one
        // without reading serde's error text.
        if let Some(field) = required_fields(kind).iter().find(|f| value.get(**f).is_none_or(|v| v.is_null())) {
            return Err(ParseError {
                code: ErrorCode::MissingField,
                message: format!("{kind}: missing field `{field}`"),
            });
        }
        let kind = kind.to_owned();
        serde_json::from_value(value)
            .map_err(|e| ParseError { code: ErrorCode::InvalidField, message: format!("{kind}: {e}") })
    }
}

/// The fields a client message of type `kind` must have.
fn required_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "auth" | "reauth" => &["token"],
        "send" => &["room", "text"],
        "join" | "leave" | "history" => &["room"],
        "create" => &["room", "private"],
        "invite" => &["room", "users"],
        "kick" => &["room", "user"],
        "dm" => &["user"],
        _ => &[],
    }
}

/// A chat message as stored in history and broadcast to a room.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub room: RoomId,
    /// Increases by one per message within the room.
    pub id: u64,
    pub from: UserId,
    pub text: String,
    /// Server time, Unix milliseconds.
    pub ts: u64,
}

/// Presence changes announced to a room.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    Join,
    Leave,
}

/// What kind of room: anyone's, its owner's and invitees', or two people's.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    #[default]
    Public,
    Private,
    /// A direct conversation between exactly two users.
    Dm,
}

/// Who may be in a room, as clients see it (`joined.access`, `access`, `invited`, `rooms`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AccessView {
    pub kind: RoomKind,
    /// A private room's owner, who invites and kicks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserId>,
    /// Who may join a private room (the owner included) or the two users of a direct
    /// conversation, sorted; empty for a public room.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<UserId>,
}

/// Why the server took a socket out of a room.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The room's owner or an operator removed the user, who cannot rejoin unless let back in.
    Kicked,
    /// The user's credential or the rules no longer allow them in (renewal, a role withdrawn,
    /// rules reloaded).
    Forbidden,
}

/// Machine-readable error codes sent in `{"type":"error"}`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    MissingField,
    InvalidField,
    InvalidRoom,
    NotMember,
    TextTooLong,
    EmptyText,
    TooManyRooms,
    /// The room's rules or its own list do not let this user in (or do what was asked).
    Forbidden,
    /// `create`: a room of that name exists already.
    RoomExists,
    RateLimited,
    BinaryNotSupported,
    AlreadyAuthenticated,
    ReauthFailed,
    /// Several nodes: Redis cannot be reached, so the message was not sent (resend it later
    /// with the same `ref`: it is delivered once).
    Unavailable,
    Internal,
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// `boot` changes when the server restarts: room message ids start again then, so a client
    /// drops the `since` it kept.
    Welcome {
        conn_id: ConnId,
        user: UserId,
        auth: crate::auth::AuthMethod,
        expires_at: u64,
        node: String,
        boot: String,
    },
    /// The token runs out soon: renew with `reauth` or be closed with 4001 at `expires_at`.
    Expiring {
        expires_at: u64,
        seconds_left: u64,
    },
    Reauthed {
        expires_at: u64,
    },
    /// `offset` is the id of the room's last message; `epoch` names the numbering ids belong
    /// to (it changes when the ids restart). With `since`, `recovered` says whether `history`
    /// holds every message after it: when false, the client reloads the room from `history`.
    Joined {
        room: RoomId,
        members: Vec<UserId>,
        history: Vec<Arc<ChatMessage>>,
        epoch: String,
        offset: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// Who may be in the room.
        access: AccessView,
    },
    /// Out of a room: asked for, or (with `reason`) put out by the server.
    Left {
        room: RoomId,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<LeaveReason>,
    },
    Message(Arc<ChatMessage>),
    Ack {
        #[serde(rename = "ref")]
        client_ref: Option<serde_json::Value>,
        room: RoomId,
        id: u64,
    },
    Presence {
        room: RoomId,
        user: UserId,
        event: PresenceEvent,
    },
    History {
        room: RoomId,
        messages: Vec<Arc<ChatMessage>>,
    },
    /// A refused request; `request`, `room` and `ref` echo it when known.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        client_ref: Option<serde_json::Value>,
    },
    /// A room's list changed (an invite, a kick): sent to its members here and to whoever
    /// asked.
    Access {
        room: RoomId,
        access: AccessView,
    },
    /// `by` let this user into a private room, or opened a direct conversation with them: join
    /// it to take part.
    Invited {
        room: RoomId,
        by: UserId,
        access: AccessView,
    },
    /// The answer to `rooms`: the private rooms and direct conversations the user may join,
    /// by name.
    Rooms {
        rooms: Vec<RoomEntry>,
    },
    /// Sent before close 1001 when the server stops.
    ServerShutdown,
}

/// One room of a `rooms` answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoomEntry {
    pub room: RoomId,
    pub access: AccessView,
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::refused(code, message, Echo::default())
    }

    /// An error about one request, echoing its type, room and `ref`.
    pub fn refused(code: ErrorCode, message: impl Into<String>, echo: Echo) -> Self {
        Self::Error {
            code,
            message: message.into(),
            request: echo.request,
            room: echo.room,
            client_ref: echo.client_ref,
        }
    }

    /// The frame text. Serialising these types cannot fail (no maps with non-string keys).
    pub fn to_json(&self) -> bytestring::ByteString {
        serde_json::to_string(self).expect("server messages always serialise").into()
    }
}

/// Close codes: the RFC 6455 ones used here and authchat's own (4000-4999).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_UTF8: u16 = 1007;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const AUTH_REQUIRED: u16 = 4000;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const SESSION_ENDED: u16 = 4002;
    pub const REVOKED: u16 = 4003;
    pub const DISCONNECTED: u16 = 4004;
    pub const RATE_LIMITED: u16 = 4008;
    /// The client did not read what it was sent: more than `ws.max_outbound_bytes` waited for
    /// it. What was still queued is dropped; rejoin with `since` to catch up.
    pub const TOO_SLOW: u16 = 4009;

    /// The reasons one node may ask another to close sockets with (they travel as text).
    const REASONS: &[&str] =
        &["disconnected by an operator", "token revoked", "session ended", "refresh token reused", "logged out"];

    /// The static reason matching `text`, or a neutral one for anything unknown.
    pub fn known_reason(text: &str) -> &'static str {
        REASONS.iter().find(|r| **r == text).copied().unwrap_or("closed by the server")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_are_classified() {
        assert_eq!(ClientMessage::parse("nope").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(ClientMessage::parse("{}").unwrap_err().code, ErrorCode::MissingField);
        assert_eq!(ClientMessage::parse(r#"{"type":"dance"}"#).unwrap_err().code, ErrorCode::UnknownType);
        let e = ClientMessage::parse(r#"{"type":"send","room":"a"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::MissingField);
        assert!(e.message.contains("text"), "{}", e.message);
        assert_eq!(ClientMessage::parse(r#"{"type":"join","room":5}"#).unwrap_err().code, ErrorCode::InvalidField);
        assert!(matches!(ClientMessage::parse(r#"{"type":"join","room":"a"}"#), Ok(ClientMessage::Join { .. })));
    }

    #[test]
    fn tokens_in_client_messages_do_not_show_in_debug() {
        let msg = ClientMessage::parse(r#"{"type":"auth","token":"eyJ.secret.sig"}"#).unwrap();
        assert!(!format!("{msg:?}").contains("secret"));
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let msg = ServerMessage::Message(Arc::new(ChatMessage {
            room: RoomId::parse("r").unwrap(),
            id: 7,
            from: UserId::new("alice"),
            text: "hi".into(),
            ts: 1,
        }));
        let v: serde_json::Value = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(v, serde_json::json!({"type":"message","room":"r","id":7,"from":"alice","text":"hi","ts":1}));
        let v: serde_json::Value = serde_json::from_str(&ServerMessage::ServerShutdown.to_json()).unwrap();
        assert_eq!(v, serde_json::json!({"type":"server_shutdown"}));
    }
}

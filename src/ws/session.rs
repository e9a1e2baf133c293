//! One WebSocket connection as an actix actor, on the bounded wire of [`super::transport`].
//!
//! The session keeps the heartbeat, applies the rate limits to every frame, parses client
//! messages, does the token work for `auth` and `reauth`, and forwards chat requests to the
//! registry. Whatever the registry sends back is queued as is by the socket's [`Output`], without
//! waking the actor; a peer that lets more than `ws.max_outbound_bytes` pile up is closed with
//! 4009.
//!
//! In [`SocketMode::Echo`] (`GET /ws/echo`, conformance runs) everything but the chat protocol
//! stays: each complete text or binary message goes back as it came, and nothing else is sent.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{CloseReason, Message};
use secrecy::{ExposeSecret, SecretString};

use super::output::Output;
use super::transport::{Incoming, WireError};
use crate::auth::authenticator::{AuthFailure, Authenticator, Credential};
use crate::auth::AuthMethod;
use crate::auth::{AuthError, Principal};
use crate::chat::access::{Change, Grants};
use crate::config::{RateLimitSettings, Settings};
use crate::ids::{ConnId, RoomId, UserId};
use crate::metrics::Metrics;
use crate::protocol::{close, ClientMessage, ErrorCode, ServerMessage};
use crate::ratelimit::SharedLimits;
use crate::ratelimit::{RateLimiter, Verdict};
use crate::registry::admission::{Admission, Unauthenticated};
use crate::registry::post::Delivery;
use crate::registry::{self, Identity, Refusal};

/// Most messages one `history` request returns.
const MAX_HISTORY_LIMIT: usize = 100;
/// `history` without a `limit`.
const DEFAULT_HISTORY_LIMIT: usize = 50;

/// Where the socket stands with authentication.
pub enum AuthState {
    /// Opened without a credential: only `{"type":"auth"}` is accepted, until the deadline.
    /// Holds what moves its place under the caps to its user.
    Pending(Unauthenticated),
    /// Authenticated; `principal` is the current token's.
    Ready { principal: Principal, method: AuthMethod },
}

/// What a socket does with the complete messages it receives; chosen by the route at the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketMode {
    /// The chat protocol: JSON requests in, a `welcome` and the registry's frames out.
    Chat,
    /// Each text or binary message is sent back as is; no `welcome`, no registry frames (a close
    /// from the registry still closes it). The frame rules, limits and heartbeat are the same.
    Echo,
}

/// What every socket of this node shares, built once at start-up.
pub struct SocketDeps {
    pub config: SocketConfig,
    pub auth: Arc<Authenticator>,
    pub registry: Addr<registry::Registry>,
    /// The caps on sockets, checked at the upgrade.
    pub admission: Arc<Admission>,
    pub metrics: Arc<Metrics>,
    /// Message and handshake limits shared by every socket of this node.
    pub limits: SharedLimits,
    /// This node's name, in `welcome`.
    pub node: String,
    /// Random per process start: tells clients that room message ids started over.
    pub boot_id: String,
}

/// The settings a socket reads.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub close_timeout: Duration,
    pub auth_timeout: Duration,
    pub max_message_size: usize,
    pub max_outbound_bytes: usize,
    pub max_text_chars: usize,
    pub rate_limit: RateLimitSettings,
    /// `?token=` accepted at the upgrade.
    pub query_token: bool,
    /// A socket may open without a credential and send `{"type":"auth"}` first.
    pub first_message: bool,
}

impl SocketConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        let ws = &settings.ws;
        Self {
            heartbeat_interval: ws.heartbeat_interval,
            client_timeout: ws.client_timeout,
            close_timeout: ws.close_timeout,
            auth_timeout: settings.auth.auth_timeout,
            max_message_size: ws.max_message_size,
            max_outbound_bytes: ws.max_outbound_bytes,
            max_text_chars: settings.chat.max_text_chars,
            rate_limit: ws.rate_limit.clone(),
            query_token: settings.auth.query_token,
            first_message: settings.auth.first_message,
        }
    }
}

/// The actor.
pub struct WsSession {
    conn_id: ConnId,
    deps: Arc<SocketDeps>,
    mode: SocketMode,
    auth: AuthState,
    /// Last time anything arrived from the peer; the heartbeat closes it after `client_timeout`.
    last_heard: Instant,
    limiter: RateLimiter,
    /// Session mode: when activity was last written to the session store (Unix ms).
    last_touch_ms: u64,
    /// Its sending side, shared with the registry's deliveries.
    output: Rc<Output>,
    /// Keeps those deliveries coming while the actor lives.
    _delivery: Delivery,
    /// The welcome was queued when the socket was made (see [`WsSession::new`]).
    welcomed: bool,
}

impl WsSession {
    pub fn new(
        conn_id: ConnId,
        deps: Arc<SocketDeps>,
        auth: AuthState,
        output: Rc<Output>,
        delivery: Delivery,
        mode: SocketMode,
    ) -> Self {
        let rl = &deps.config.rate_limit;
        let limiter = RateLimiter::new(rl.per_second, rl.burst, rl.max_violations, Instant::now());
        let mut session = Self {
            conn_id,
            deps,
            mode,
            auth,
            last_heard: Instant::now(),
            limiter,
            last_touch_ms: crate::time::now_unix_ms(),
            output,
            _delivery: delivery,
            welcomed: false,
        };
        if session.mode == SocketMode::Chat {
            // Queued before the connection's pump takes over, so the 101 and the welcome go out
            // in one write (and the client wakes once for both). It always fits an empty outbox
            // (at least 4096 bytes); if it did not, `started` would close the socket as for any
            // frame that does not fit.
            if let Some(welcome) = session.welcome_message() {
                session.welcomed = session.output.outbox().send(Message::Text(welcome.to_json())).is_ok();
                if session.welcomed {
                    session.deps.metrics.messages_out.inc();
                }
            }
        }
        session
    }

    fn send_error(&self, code: ErrorCode, message: impl Into<String>) {
        self.output.send(&ServerMessage::error(code, message));
    }

    fn welcome(&mut self) {
        if let Some(welcome) = self.welcome_message() {
            self.output.send(&welcome);
        }
    }

    /// `welcome`, once authenticated.
    fn welcome_message(&self) -> Option<ServerMessage> {
        let AuthState::Ready { principal, method } = &self.auth else { return None };
        Some(ServerMessage::Welcome {
            conn_id: self.conn_id,
            user: principal.user.clone(),
            auth: *method,
            expires_at: principal.expires_at,
            node: self.deps.node.clone(),
            boot: self.deps.boot_id.clone(),
        })
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.deps.config.client_timeout;
        ctx.run_interval(self.deps.config.heartbeat_interval, move |session, _| {
            if session.output.close_code().is_some() {
                return;
            }
            if session.last_heard.elapsed() > timeout {
                tracing::info!(conn_id = %session.conn_id, "closing a peer that stopped answering pings");
                session.output.close(close::NORMAL, "heartbeat timeout");
            } else {
                session.output.push(Message::Ping(bytes::Bytes::new()));
            }
        });
    }

    /// One complete text message from the peer. It is parsed before the rate limit is applied,
    /// so that even a `rate_limited` refusal says which request it refuses.
    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        self.deps.metrics.messages_in.inc();
        let parsed = ClientMessage::parse(text);
        let echo = parsed.as_ref().map(ClientMessage::echo).unwrap_or_default();
        match self.admit() {
            Verdict::Allow => {}
            Verdict::Refuse => {
                let refusal = ServerMessage::refused(ErrorCode::RateLimited, "too many messages; slow down", echo);
                return self.output.send(&refusal);
            }
            Verdict::Disconnect => {
                let refusal = ServerMessage::refused(ErrorCode::RateLimited, "too many messages; closing", echo);
                self.output.send(&refusal);
                return self.output.close(close::RATE_LIMITED, "rate limited");
            }
        }
        let message = match parsed {
            Ok(message) => message,
            Err(_) if matches!(self.auth, AuthState::Pending(_)) => {
                return self
                    .output
                    .close(close::AUTH_REQUIRED, "authentication required: send {\"type\":\"auth\",\"token\":…}");
            }
            Err(e) => return self.send_error(e.code, e.message),
        };
        self.keep_session_alive(ctx);
        if matches!(self.auth, AuthState::Pending(_)) {
            return match message {
                ClientMessage::Auth { token } => self.authenticate(token, ctx),
                _ => self
                    .output
                    .close(close::AUTH_REQUIRED, "authentication required: send {\"type\":\"auth\",\"token\":…}"),
            };
        }
        let conn_id = self.conn_id;
        let registry = &self.deps.registry;
        // Boxed: a server message is large, and most requests are not refused.
        let refuse = |code, message: String| Box::new(ServerMessage::refused(code, message, echo.clone()));
        let room = |name: &str| RoomId::parse(name).map_err(|e| refuse(ErrorCode::InvalidRoom, e.to_string()));
        let users = |names: &[String]| {
            names
                .iter()
                .map(|name| UserId::parse(name))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| refuse(ErrorCode::InvalidField, e.to_string()))
        };
        let outcome = match message {
            ClientMessage::Auth { .. } => Err(refuse(
                ErrorCode::AlreadyAuthenticated,
                "this connection is authenticated already; use reauth to renew".into(),
            )),
            ClientMessage::Reauth { token } => {
                self.reauthenticate(token, ctx);
                Ok(())
            }
            ClientMessage::Join { room: name, since, epoch, .. } => room(&name)
                .map(|room| registry.do_send(registry::Join { conn_id, room, since, epoch, echo: echo.clone() })),
            ClientMessage::Leave { room: name, .. } => {
                room(&name).map(|room| registry.do_send(registry::Leave { conn_id, room, echo: echo.clone() }))
            }
            ClientMessage::Send { room: name, text, .. } => {
                self.check_text(&text).map_err(|(code, message)| refuse(code, message)).and_then(|()| {
                    room(&name)
                        .map(|room| registry.do_send(registry::Publish { conn_id, room, text, echo: echo.clone() }))
                })
            }
            ClientMessage::History { room: name, before, limit, .. } => room(&name).map(|room| {
                let limit = limit.unwrap_or(DEFAULT_HISTORY_LIMIT).clamp(1, MAX_HISTORY_LIMIT);
                registry.do_send(registry::FetchHistory { conn_id, room, before, limit, echo: echo.clone() })
            }),
            ClientMessage::Create { private: false, .. } => Err(refuse(
                ErrorCode::InvalidField,
                "create makes private rooms (\"private\": true); a public room needs no creating: join it".into(),
            )),
            ClientMessage::Create { room: name, invite, .. } => room(&name).and_then(|room| {
                let invite = users(&invite)?;
                registry.do_send(registry::CreateRoom { conn_id, room, invite, echo: echo.clone() });
                Ok(())
            }),
            ClientMessage::Invite { room: name, users: names, .. } => room(&name).and_then(|room| {
                let change = Change::Invite { users: users(&names)? };
                let requester = registry::Requester::Conn { conn_id, echo: echo.clone() };
                registry.do_send(registry::ChangeAccess { room, change, requester });
                Ok(())
            }),
            ClientMessage::Kick { room: name, user, .. } => room(&name).and_then(|room| {
                let change = Change::Kick { user: users(std::slice::from_ref(&user))?.remove(0) };
                let requester = registry::Requester::Conn { conn_id, echo: echo.clone() };
                registry.do_send(registry::ChangeAccess { room, change, requester });
                Ok(())
            }),
            ClientMessage::Dm { user, .. } => users(std::slice::from_ref(&user)).map(|mut with| {
                registry.do_send(registry::OpenDm { conn_id, with: with.remove(0), echo: echo.clone() })
            }),
            ClientMessage::Rooms { .. } => {
                registry.do_send(registry::ListOwnRooms { conn_id, echo: echo.clone() });
                Ok(())
            }
        };
        if let Err(refusal) = outcome {
            self.output.send(&refusal);
        }
    }

    /// A `send` text must show something ([`crate::chat::text::is_blank`]) and be within
    /// `chat.max_text_chars`.
    fn check_text(&self, text: &str) -> Result<(), (ErrorCode, String)> {
        let limit = self.deps.config.max_text_chars;
        let chars = text.chars().count();
        if chars > limit {
            return Err((ErrorCode::TextTooLong, format!("text has {chars} characters; the limit is {limit}")));
        }
        if crate::chat::text::is_blank(text) {
            return Err((ErrorCode::EmptyText, "text is empty".into()));
        }
        Ok(())
    }

    /// Session mode: a client message is activity; write it (at most once per
    /// `session.touch_interval`) so the session's idle deadline slides.
    fn keep_session_alive(&mut self, ctx: &mut Context<Self>) {
        let AuthState::Ready { principal, method: AuthMethod::Session } = &self.auth else { return };
        let Some(sessions) = self.deps.auth.sessions().cloned() else { return };
        if !sessions.touch_due(self.last_touch_ms) {
            return;
        }
        let Some(id) = principal.session_id.clone() else { return };
        self.last_touch_ms = crate::time::now_unix_ms();
        let touch = async move { sessions.touch(&id).await };
        ctx.spawn(actix::fut::wrap_future(touch).map(|alive, session: &mut Self, _| match alive {
            Ok(true) => {}
            Ok(false) => session.output.close(close::SESSION_ENDED, "session ended"),
            // The store is down: the socket keeps working, and the next message tries again.
            Err(e) => {
                tracing::debug!(error = %e, "could not record session activity");
                session.last_touch_ms = 0;
            }
        }));
    }

    /// First-message auth: verify, check revocation, register the identity, then welcome.
    /// `ctx.wait` holds back the client's further frames until this is settled (not what the
    /// registry sends: the socket's [`Output`] queues that without the actor).
    fn authenticate(&mut self, token: SecretString, ctx: &mut Context<Self>) {
        let AuthState::Pending(place) = &self.auth else { return };
        let (deps, place) = (self.deps.clone(), place.clone());
        let work = async move {
            let principal = deps.auth.authenticate(Credential::Token(token.expose_secret())).await?;
            match place.authenticate(identity_of(&principal, AuthMethod::FirstMessage)) {
                Ok(()) => Ok(principal),
                Err(Refusal::TooManyConnections | Refusal::ServerFull) => Err(FirstAuthFailure::TooMany),
                Err(Refusal::UnknownConnection) => Err(FirstAuthFailure::Gone),
            }
        };
        ctx.wait(actix::fut::wrap_future(work).map(|result, session: &mut Self, ctx| match result {
            // Closed meanwhile (the registry's close does not wait for this): no welcome.
            Ok(_) if session.output.close_code().is_some() => {}
            Ok(principal) => {
                session.deps.metrics.upgrades_accepted.with_label_values(&[AuthMethod::FirstMessage.as_str()]).inc();
                session.auth = AuthState::Ready { principal, method: AuthMethod::FirstMessage };
                session.welcome();
            }
            Err(FirstAuthFailure::Auth(e)) => session.refuse_auth(e),
            Err(FirstAuthFailure::StoreUnavailable) => {
                session.output.close(close::INTERNAL_ERROR, "authentication backend unavailable");
            }
            Err(FirstAuthFailure::TooMany) => {
                session.deps.metrics.upgrades_refused.with_label_values(&["too_many_connections"]).inc();
                session.output.close(close::RATE_LIMITED, "too many connections for this user");
            }
            Err(FirstAuthFailure::Gone) => ctx.stop(),
        }));
    }

    fn refuse_auth(&mut self, error: AuthError) {
        self.deps.metrics.upgrades_refused.with_label_values(&[error.code()]).inc();
        let code = match error {
            AuthError::TokenExpired => close::TOKEN_EXPIRED,
            AuthError::TokenRevoked => close::REVOKED,
            _ => close::AUTH_REQUIRED,
        };
        self.output.close(code, error.code());
    }

    /// In-band renewal: a valid token for the same user moves the expiry; anything else
    /// leaves the old expiry in force.
    fn reauthenticate(&mut self, token: SecretString, ctx: &mut Context<Self>) {
        let AuthState::Ready { principal: current, method } = &self.auth else { return };
        if *method == AuthMethod::Session {
            return self.send_error(ErrorCode::ReauthFailed, registry::RenewRefusal::SessionBound.to_string());
        }
        let user = current.user.clone();
        let deps = self.deps.clone();
        let conn_id = self.conn_id;
        let work = async move {
            let principal =
                deps.auth.authenticate(Credential::Token(token.expose_secret())).await.map_err(|e| match e {
                    AuthFailure::Refused(e) => e.to_string(),
                    _ => "the revocation store is unavailable; try again".to_owned(),
                })?;
            if principal.user != user {
                return Err("the token belongs to another user".to_owned());
            }
            let renew = registry::Renew {
                conn_id,
                token_id: principal.token_id.clone(),
                expires_at: principal.expires_at,
                session_id: principal.session_id.clone(),
                grants: Grants::of(&principal),
            };
            match deps.registry.send(renew).await {
                Ok(Ok(())) => Ok(principal),
                Ok(Err(refusal @ registry::RenewRefusal::SessionBound)) => Err(refusal.to_string()),
                _ => Err("the connection is closing".to_owned()),
            }
        };
        ctx.wait(actix::fut::wrap_future(work).map(|result, session: &mut Self, _| match result {
            Ok(principal) => {
                let expires_at = principal.expires_at;
                if let AuthState::Ready { principal: current, .. } = &mut session.auth {
                    *current = principal;
                }
                session.output.send(&ServerMessage::Reauthed { expires_at });
            }
            Err(message) => session.send_error(ErrorCode::ReauthFailed, message),
        }));
    }

    /// The rate limits, applied to every frame: this socket's bucket, then its user's (shared by
    /// all of the user's sockets on this node). Refusals in a row end in [`Verdict::Disconnect`].
    fn admit(&mut self) -> Verdict {
        let now = Instant::now();
        let verdict = self.limiter.check(now);
        if verdict != Verdict::Allow {
            return verdict;
        }
        if let AuthState::Ready { principal, .. } = &self.auth {
            if !self.deps.limits.user_message(&principal.user) {
                return self.limiter.violation(now);
            }
        }
        Verdict::Allow
    }

    /// Echo mode: a complete text or binary message goes back as it came. Over the rate limits it
    /// is dropped, as in [`Self::on_other`].
    fn on_echo(&mut self, message: Message) {
        match self.admit() {
            Verdict::Allow => {}
            Verdict::Refuse => return,
            Verdict::Disconnect => return self.output.close(close::RATE_LIMITED, "rate limited"),
        }
        self.deps.metrics.messages_in.inc();
        self.deps.metrics.messages_out.inc();
        self.output.push(message);
    }

    /// A frame other than text: it counts against the rate limits like any other; over them it
    /// is dropped without an answer (answering would amplify the flood).
    fn on_other(&mut self, incoming: Incoming) {
        match self.admit() {
            Verdict::Allow => {}
            Verdict::Refuse => return,
            Verdict::Disconnect => return self.output.close(close::RATE_LIMITED, "rate limited"),
        }
        match incoming {
            Incoming::Binary(_) => {
                self.deps.metrics.messages_in.inc();
                self.send_error(ErrorCode::BinaryNotSupported, "binary messages are not supported; send JSON text");
            }
            Incoming::Ping(payload) => self.output.push(Message::Pong(payload)),
            Incoming::Pong | Incoming::Fragment | Incoming::Text(_) | Incoming::Close(_) => {}
        }
    }
}

/// Why the asynchronous part of first-message auth failed.
enum FirstAuthFailure {
    Auth(AuthError),
    StoreUnavailable,
    TooMany,
    /// The connection's TCP connection is gone meanwhile.
    Gone,
}

impl From<AuthFailure> for FirstAuthFailure {
    fn from(e: AuthFailure) -> Self {
        match e {
            AuthFailure::Refused(e) => Self::Auth(e),
            AuthFailure::InvalidSession => Self::Auth(AuthError::MissingCredentials),
            AuthFailure::StoreUnavailable(e) | AuthFailure::SessionStoreUnavailable(e) => {
                tracing::warn!(error = %e, "a store was unavailable during first-message auth");
                Self::StoreUnavailable
            }
        }
    }
}

/// The registry's view of a principal.
pub fn identity_of(principal: &Principal, method: AuthMethod) -> Identity {
    Identity {
        user: principal.user.clone(),
        token_id: principal.token_id.clone(),
        expires_at: principal.expires_at,
        method,
        session_id: principal.session_id.clone(),
        grants: Grants::of(principal),
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.heartbeat(ctx);
        match self.auth {
            AuthState::Ready { .. } if self.mode == SocketMode::Echo || self.welcomed => {}
            AuthState::Ready { .. } => self.welcome(),
            AuthState::Pending(_) => {
                let timeout: Duration = self.deps.config.auth_timeout;
                ctx.run_later(timeout, |session, _| {
                    if matches!(session.auth, AuthState::Pending(_)) {
                        session.deps.metrics.upgrades_refused.with_label_values(&["auth_timeout"]).inc();
                        session.output.close(close::AUTH_REQUIRED, "authentication required: no auth message in time");
                    }
                });
            }
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Whatever is queued (a close frame at least) still goes out; then the body ends.
        self.output.outbox().finish();
        if self.output.close_code().is_none() {
            // Gone without a close frame either way.
            self.output.closing(1006);
        }
        tracing::debug!(conn_id = %self.conn_id, code = self.output.close_code(), "connection closed");
    }
}

impl StreamHandler<Result<Incoming, WireError>> for WsSession {
    fn handle(&mut self, incoming: Result<Incoming, WireError>, ctx: &mut Self::Context) {
        let incoming = match incoming {
            Ok(incoming) => incoming,
            Err(WireError::Gone) => return ctx.stop(),
            Err(e) if self.output.close_code().is_some() => {
                tracing::debug!(conn_id = %self.conn_id, error = %e, "WebSocket error while closing");
                return ctx.stop();
            }
            Err(WireError::TooBig) => return self.output.close(close::MESSAGE_TOO_BIG, "message too big"),
            Err(WireError::InvalidUtf8) => return self.output.close(close::INVALID_UTF8, "invalid UTF-8"),
            Err(e @ WireError::Protocol(_)) => {
                tracing::debug!(conn_id = %self.conn_id, error = %e, "WebSocket protocol error");
                return self.output.close(close::PROTOCOL_ERROR, "protocol error");
            }
        };
        if let Incoming::Close(reason) = incoming {
            // The peer's close: answered with the same code (unless ours went first), and the
            // connection ends once that is sent.
            if self.output.close_code().is_none() {
                self.output.closing(reason.as_ref().map_or(1005, |r| u16::from(r.code)));
                let echo = reason.map(|r| CloseReason { code: r.code, description: None });
                self.output.outbox().close(echo, self.deps.config.close_timeout, false);
            }
            self.output.outbox().finish();
            return ctx.stop();
        }
        if self.output.close_code().is_some() {
            return;
        }
        self.last_heard = Instant::now();
        match (self.mode, incoming) {
            (SocketMode::Chat, Incoming::Text(text)) => self.on_text(&text, ctx),
            (SocketMode::Echo, Incoming::Text(text)) => self.on_echo(Message::Text(text)),
            (SocketMode::Echo, Incoming::Binary(data)) => self.on_echo(Message::Binary(data)),
            (_, other) => self.on_other(other),
        }
    }

    /// The peer's side of the TCP connection is gone.
    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

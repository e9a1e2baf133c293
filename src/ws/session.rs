//! One WebSocket connection as an actix actor. This is the only file that uses
//! `actix-web-actors`, so moving to another WebSocket crate touches nothing else.
//!
//! The session reassembles fragmented messages under the size limit, keeps the heartbeat,
//! applies the rate limit, parses client messages, does the token work for `auth` and
//! `reauth`, and forwards chat requests to the registry. Whatever the registry sends back
//! arrives as [`Outbound`] and is written as is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::HttpRequest;
use actix_web_actors::ws;
use bytes::BytesMut;
use secrecy::ExposeSecret;

use crate::auth::revocation::{check_not_revoked, RevocationCheckError};
use crate::auth::{AuthError, Principal};
use crate::ids::{ConnId, RoomId};
use crate::protocol::{close, ClientMessage, ErrorCode, ServerMessage};
use crate::ratelimit::{RateLimiter, Verdict};
use crate::registry::{self, Identity, Outbound, Refusal};
use crate::state::AppState;

/// The `auth` method of sockets authenticated by a server-side session cookie.
pub const SESSION_METHOD: &str = "session";

/// Most messages one `history` request returns.
const MAX_HISTORY_LIMIT: usize = 100;
/// `history` without a `limit`.
const DEFAULT_HISTORY_LIMIT: usize = 50;

/// Where the socket stands with authentication.
enum AuthState {
    /// Opened without a credential: only `{"type":"auth"}` is accepted, until the deadline.
    Pending,
    /// Authenticated; `principal` is the current token's.
    Ready { principal: Principal, method: &'static str },
}

/// A message being received in fragments.
struct Fragments {
    text: bool,
    buf: BytesMut,
}

/// Unregisters the connection however the actor ends, even if it never started (the client
/// vanished between the upgrade and the first poll).
struct Registration {
    conn_id: ConnId,
    registry: Addr<registry::Registry>,
    /// False once the registry itself closed the connection.
    armed: bool,
}

impl Registration {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.armed {
            self.registry.do_send(registry::Unregister { conn_id: self.conn_id });
        }
    }
}

/// The actor.
pub struct WsSession {
    conn_id: ConnId,
    deps: Arc<AppState>,
    auth: AuthState,
    /// Last time anything arrived from the peer; the heartbeat closes it after `client_timeout`.
    last_heard: Instant,
    fragments: Option<Fragments>,
    limiter: RateLimiter,
    /// The close code this connection ended with, for the `closes_total` metric.
    close_code: Option<u16>,
    /// Session mode: when activity was last written to the session store (Unix ms).
    last_touch_ms: u64,
    registration: Registration,
}

impl WsSession {
    pub fn new(conn_id: ConnId, deps: Arc<AppState>, principal: Option<(Principal, &'static str)>) -> Self {
        let rl = &deps.settings.ws.rate_limit;
        let limiter = RateLimiter::new(rl.per_second, rl.burst, rl.max_violations, Instant::now());
        let auth = match principal {
            Some((principal, method)) => AuthState::Ready { principal, method },
            None => AuthState::Pending,
        };
        let registration = Registration { conn_id, registry: deps.registry.clone(), armed: true };
        Self {
            conn_id,
            deps,
            auth,
            last_heard: Instant::now(),
            fragments: None,
            limiter,
            close_code: None,
            last_touch_ms: crate::time::now_unix_ms(),
            registration,
        }
    }

    /// Starts the actor on the upgraded request; returns its address and the 101 response.
    pub fn start(
        self,
        req: &HttpRequest,
        stream: actix_web::web::Payload,
        protocols: &[&str],
    ) -> Result<(Addr<Self>, actix_web::HttpResponse), actix_web::Error> {
        let max = self.deps.settings.ws.max_message_size;
        ws::WsResponseBuilder::new(self, req, stream).protocols(protocols).frame_size(max).start_with_addr()
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, message: &ServerMessage) {
        self.deps.metrics.messages_out.inc();
        ctx.text(message.to_json());
    }

    fn send_error(&self, ctx: &mut ws::WebsocketContext<Self>, code: ErrorCode, message: impl Into<String>) {
        self.send(ctx, &ServerMessage::error(code, message));
    }

    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: u16, reason: &str) {
        if self.close_code.is_none() {
            self.close_code = Some(code);
            ctx.close(Some(ws::CloseReason { code: ws::CloseCode::from(code), description: Some(reason.to_owned()) }));
        }
        ctx.stop();
    }

    fn welcome(&self, ctx: &mut ws::WebsocketContext<Self>) {
        if let AuthState::Ready { principal, method } = &self.auth {
            let welcome = ServerMessage::Welcome {
                conn_id: self.conn_id,
                user: principal.user.clone(),
                auth: method,
                expires_at: principal.expires_at,
                node: self.deps.node.clone(),
                boot: self.deps.boot_id.clone(),
            };
            self.send(ctx, &welcome);
        }
    }

    fn heartbeat(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let timeout = self.deps.settings.ws.client_timeout;
        ctx.run_interval(self.deps.settings.ws.heartbeat_interval, move |session, ctx| {
            if session.last_heard.elapsed() > timeout {
                tracing::info!(conn_id = %session.conn_id, "closing a peer that stopped answering pings");
                session.close(ctx, close::NORMAL, "heartbeat timeout");
            } else {
                ctx.ping(b"");
            }
        });
    }

    /// One complete text message from the peer. It is parsed before the rate limit is applied,
    /// so that even a `rate_limited` refusal says which request it refuses.
    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        self.deps.metrics.messages_in.inc();
        let parsed = ClientMessage::parse(text);
        let echo = parsed.as_ref().map(ClientMessage::echo).unwrap_or_default();
        match self.limiter.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                let refusal = ServerMessage::refused(ErrorCode::RateLimited, "too many messages; slow down", echo);
                return self.send(ctx, &refusal);
            }
            Verdict::Disconnect => {
                let refusal = ServerMessage::refused(ErrorCode::RateLimited, "too many messages; closing", echo);
                self.send(ctx, &refusal);
                return self.close(ctx, close::RATE_LIMITED, "rate limited");
            }
        }
        let message = match parsed {
            Ok(message) => message,
            Err(_) if matches!(self.auth, AuthState::Pending) => {
                return self.close(
                    ctx,
                    close::AUTH_REQUIRED,
                    "authentication required: send {\"type\":\"auth\",\"token\":…}",
                );
            }
            Err(e) => return self.send_error(ctx, e.code, e.message),
        };
        self.keep_session_alive(ctx);
        if matches!(self.auth, AuthState::Pending) {
            return match message {
                ClientMessage::Auth { token } => self.authenticate(token.expose_secret(), ctx),
                _ => self.close(
                    ctx,
                    close::AUTH_REQUIRED,
                    "authentication required: send {\"type\":\"auth\",\"token\":…}",
                ),
            };
        }
        let conn_id = self.conn_id;
        let registry = &self.deps.registry;
        let refuse = |code, message: String| ServerMessage::refused(code, message, echo.clone());
        let room = |name: &str| RoomId::parse(name).map_err(|e| refuse(ErrorCode::InvalidRoom, e.to_string()));
        let outcome = match message {
            ClientMessage::Auth { .. } => Err(refuse(
                ErrorCode::AlreadyAuthenticated,
                "this connection is authenticated already; use reauth to renew".into(),
            )),
            ClientMessage::Reauth { token } => {
                self.reauthenticate(token.expose_secret(), ctx);
                Ok(())
            }
            ClientMessage::Join { room: name, since, .. } => {
                room(&name).map(|room| registry.do_send(registry::Join { conn_id, room, since, echo: echo.clone() }))
            }
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
        };
        if let Err(refusal) = outcome {
            self.send(ctx, &refusal);
        }
    }

    /// A `send` text must be non-blank and within `chat.max_text_chars`.
    fn check_text(&self, text: &str) -> Result<(), (ErrorCode, String)> {
        let limit = self.deps.settings.chat.max_text_chars;
        let chars = text.chars().count();
        if chars > limit {
            return Err((ErrorCode::TextTooLong, format!("text has {chars} characters; the limit is {limit}")));
        }
        if text.trim().is_empty() {
            return Err((ErrorCode::EmptyText, "text is empty".into()));
        }
        Ok(())
    }

    /// Session mode: a client message is activity; write it (at most once per
    /// `session.touch_interval`) so the session's idle deadline slides.
    fn keep_session_alive(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let AuthState::Ready { principal, method: SESSION_METHOD } = &self.auth else { return };
        if !self.deps.sessions.touch_due(self.last_touch_ms) {
            return;
        }
        let Some(id) = principal.session_id.clone() else { return };
        self.last_touch_ms = crate::time::now_unix_ms();
        let store = self.deps.sessions.store().clone();
        let touch = async move { store.touch(&id, crate::time::now_unix_ms()).await };
        ctx.spawn(actix::fut::wrap_future(touch).map(|alive, session: &mut Self, ctx| match alive {
            Ok(true) => {}
            Ok(false) => session.close(ctx, close::SESSION_ENDED, "session ended"),
            // The store is down: the socket keeps working, and the next message tries again.
            Err(e) => {
                tracing::debug!(error = %e, "could not record session activity");
                session.last_touch_ms = 0;
            }
        }));
    }

    /// First-message auth: verify, check revocation, register the identity, then welcome.
    /// `ctx.wait` holds back further frames until this is settled.
    fn authenticate(&mut self, token: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let principal = match self.deps.tokens.verify(token) {
            Ok(principal) => principal,
            Err(e) => return self.refuse_auth(e, ctx),
        };
        let deps = self.deps.clone();
        let conn_id = self.conn_id;
        let work = async move {
            check_not_revoked(deps.stores.revocations.as_ref(), &principal).await?;
            let identity = identity_of(&principal, "first_message");
            match deps.registry.send(registry::Authenticate { conn_id, identity }).await {
                Ok(Ok(())) => Ok(principal),
                Ok(Err(Refusal::TooManyConnections)) => Err(FirstAuthFailure::TooMany),
                Ok(Err(Refusal::UnknownConnection)) | Err(_) => Err(FirstAuthFailure::Gone),
            }
        };
        ctx.wait(actix::fut::wrap_future(work).map(|result, session: &mut Self, ctx| match result {
            Ok(principal) => {
                session.deps.metrics.upgrades_accepted.with_label_values(&["first_message"]).inc();
                session.auth = AuthState::Ready { principal, method: "first_message" };
                session.welcome(ctx);
            }
            Err(FirstAuthFailure::Auth(e)) => session.refuse_auth(e, ctx),
            Err(FirstAuthFailure::StoreUnavailable) => {
                session.close(ctx, close::INTERNAL_ERROR, "authentication backend unavailable");
            }
            Err(FirstAuthFailure::TooMany) => {
                session.deps.metrics.upgrades_refused.with_label_values(&["too_many_connections"]).inc();
                session.close(ctx, close::RATE_LIMITED, "too many connections for this user");
            }
            Err(FirstAuthFailure::Gone) => ctx.stop(),
        }));
    }

    fn refuse_auth(&mut self, error: AuthError, ctx: &mut ws::WebsocketContext<Self>) {
        self.deps.metrics.upgrades_refused.with_label_values(&[error.code()]).inc();
        let code = match error {
            AuthError::TokenExpired => close::TOKEN_EXPIRED,
            AuthError::TokenRevoked => close::REVOKED,
            _ => close::AUTH_REQUIRED,
        };
        self.close(ctx, code, error.code());
    }

    /// In-band renewal: a valid token for the same user moves the expiry; anything else
    /// leaves the old expiry in force.
    fn reauthenticate(&mut self, token: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let AuthState::Ready { principal: current, method } = &self.auth else { return };
        if *method == SESSION_METHOD {
            return self.send_error(ctx, ErrorCode::ReauthFailed, registry::RenewRefusal::SessionBound.to_string());
        }
        let principal = match self.deps.tokens.verify(token) {
            Ok(p) if p.user == current.user => p,
            Ok(_) => return self.send_error(ctx, ErrorCode::ReauthFailed, "the token belongs to another user"),
            Err(e) => return self.send_error(ctx, ErrorCode::ReauthFailed, e.to_string()),
        };
        let deps = self.deps.clone();
        let conn_id = self.conn_id;
        let work = async move {
            check_not_revoked(deps.stores.revocations.as_ref(), &principal).await.map_err(|e| match e {
                RevocationCheckError::Auth(e) => e.to_string(),
                RevocationCheckError::Store(_) => "the revocation store is unavailable; try again".to_owned(),
            })?;
            let renew = registry::Renew {
                conn_id,
                token_id: principal.token_id.clone(),
                expires_at: principal.expires_at,
                session_id: principal.session_id.clone(),
            };
            match deps.registry.send(renew).await {
                Ok(Ok(())) => Ok(principal),
                Ok(Err(refusal @ registry::RenewRefusal::SessionBound)) => Err(refusal.to_string()),
                _ => Err("the connection is closing".to_owned()),
            }
        };
        ctx.wait(actix::fut::wrap_future(work).map(|result, session: &mut Self, ctx| match result {
            Ok(principal) => {
                let expires_at = principal.expires_at;
                if let AuthState::Ready { principal: current, .. } = &mut session.auth {
                    *current = principal;
                }
                session.send(ctx, &ServerMessage::Reauthed { expires_at });
            }
            Err(message) => session.send_error(ctx, ErrorCode::ReauthFailed, message),
        }));
    }

    /// A continuation frame; completes a message when it is the last one.
    fn on_fragment(&mut self, item: actix_http::ws::Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (first, data, last) = match item {
            actix_http::ws::Item::FirstText(data) => (Some(true), data, false),
            actix_http::ws::Item::FirstBinary(data) => (Some(false), data, false),
            actix_http::ws::Item::Continue(data) => (None, data, false),
            actix_http::ws::Item::Last(data) => (None, data, true),
        };
        match (first, self.fragments.as_mut()) {
            (Some(text), None) => self.fragments = Some(Fragments { text, buf: BytesMut::from(&data[..]) }),
            (None, Some(fragments)) => fragments.buf.extend_from_slice(&data),
            _ => return self.close(ctx, close::PROTOCOL_ERROR, "unexpected continuation frame"),
        }
        let size = self.fragments.as_ref().map_or(0, |f| f.buf.len());
        if size > self.deps.settings.ws.max_message_size {
            return self.close(ctx, close::MESSAGE_TOO_BIG, "message too big");
        }
        if !last {
            return;
        }
        let Fragments { text, buf } = self.fragments.take().expect("fragments in progress");
        if !text {
            self.deps.metrics.messages_in.inc();
            return self.send_error(
                ctx,
                ErrorCode::BinaryNotSupported,
                "binary messages are not supported; send JSON text",
            );
        }
        match std::str::from_utf8(&buf) {
            Ok(text) => self.on_text(text, ctx),
            Err(_) => self.close(ctx, close::INVALID_UTF8, "invalid UTF-8"),
        }
    }
}

/// Why the asynchronous part of first-message auth failed.
enum FirstAuthFailure {
    Auth(AuthError),
    StoreUnavailable,
    TooMany,
    /// The connection closed (or the registry stopped) meanwhile.
    Gone,
}

impl From<RevocationCheckError> for FirstAuthFailure {
    fn from(e: RevocationCheckError) -> Self {
        match e {
            RevocationCheckError::Auth(e) => Self::Auth(e),
            RevocationCheckError::Store(e) => {
                tracing::warn!(error = %e, "revocation store unavailable during first-message auth");
                Self::StoreUnavailable
            }
        }
    }
}

/// The registry's view of a principal.
pub fn identity_of(principal: &Principal, method: &'static str) -> Identity {
    Identity {
        user: principal.user.clone(),
        token_id: principal.token_id.clone(),
        expires_at: principal.expires_at,
        method,
        session_id: principal.session_id.clone(),
        session_bound: method == SESSION_METHOD,
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.heartbeat(ctx);
        match self.auth {
            AuthState::Ready { .. } => self.welcome(ctx),
            AuthState::Pending => {
                let timeout: Duration = self.deps.settings.auth.auth_timeout;
                ctx.run_later(timeout, |session, ctx| {
                    if matches!(session.auth, AuthState::Pending) {
                        session.deps.metrics.upgrades_refused.with_label_values(&["auth_timeout"]).inc();
                        session.close(ctx, close::AUTH_REQUIRED, "authentication required: no auth message in time");
                    }
                });
            }
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let code = self.close_code.unwrap_or(1006).to_string();
        self.deps.metrics.closes.with_label_values(&[&code]).inc();
        tracing::debug!(conn_id = %self.conn_id, code = %code, "connection closed");
    }
}

impl Handler<Outbound> for WsSession {
    type Result = ();

    /// Writes what the registry sends.
    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Frame(text) => {
                self.deps.metrics.messages_out.inc();
                ctx.text(text);
            }
            Outbound::Close { code, reason, deadline_ms } => {
                if let Some(deadline) = deadline_ms {
                    let lag = crate::time::now_unix_ms().saturating_sub(deadline);
                    self.deps.metrics.expiry_lag.observe(lag as f64 / 1000.0);
                }
                // The registry dropped this connection already; no need to tell it again.
                self.registration.disarm();
                self.close(ctx, code, reason)
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        if self.close_code.is_some() {
            return;
        }
        let msg = match msg {
            Ok(msg) => msg,
            Err(ws::ProtocolError::Overflow) => return self.close(ctx, close::MESSAGE_TOO_BIG, "message too big"),
            Err(ws::ProtocolError::Io(e)) if e.to_string().contains("utf-8") => {
                return self.close(ctx, close::INVALID_UTF8, "invalid UTF-8")
            }
            Err(ws::ProtocolError::Io(_)) => return ctx.stop(),
            Err(e) => {
                tracing::debug!(conn_id = %self.conn_id, error = %e, "WebSocket protocol error");
                return self.close(ctx, close::PROTOCOL_ERROR, "protocol error");
            }
        };
        self.last_heard = Instant::now();
        match msg {
            ws::Message::Text(text) if self.fragments.is_none() => self.on_text(&text, ctx),
            ws::Message::Binary(_) if self.fragments.is_none() => {
                self.deps.metrics.messages_in.inc();
                self.send_error(
                    ctx,
                    ErrorCode::BinaryNotSupported,
                    "binary messages are not supported; send JSON text",
                );
            }
            ws::Message::Text(_) | ws::Message::Binary(_) => {
                self.close(ctx, close::PROTOCOL_ERROR, "new message before the fragmented one ended")
            }
            ws::Message::Continuation(item) => self.on_fragment(item, ctx),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                self.close_code = Some(reason.as_ref().map_or(1005, |r| u16::from(r.code)));
                ctx.close(reason);
                ctx.stop();
            }
        }
    }
}

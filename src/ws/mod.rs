//! `GET /ws`: the credential is checked before the upgrade, then the socket becomes a
//! [`session::WsSession`] actor registered with the registry.
//!
//! Credentials, first match wins: `?ticket=<one-time ticket>`, `Sec-WebSocket-Protocol: authchat.v1, authchat.bearer.<jwt>`,
//! `Authorization: Bearer <jwt>`, `?token=<jwt>`, and otherwise (when enabled) a socket that
//! must send `{"type":"auth"}` within `auth.auth_timeout`.
//!
//! `GET /ws/echo` (only with `ws.echo = true`, for conformance runs) takes the same credentials
//! except first-message auth, and runs the same socket in [`SocketMode::Echo`].

pub mod output;
pub mod pump;
pub mod session;
pub mod takeover;
pub mod transport;

use std::rc::Rc;
use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_http::ws::{hash_key, verify_handshake};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};

use crate::auth::authenticator::Credential;
use crate::auth::{AuthError, AuthMethod};
use crate::config::AuthMode;
use crate::http::error::ApiError;
use crate::registry::post::SocketOutbox;
use crate::registry::Refusal;
use crate::state::AppState;
use output::Output;
use pump::{Handoff, Wire};
use session::{identity_of, AuthState, SocketConfig, SocketDeps, SocketMode, WsSession};
use takeover::UpgradePath;
use transport::{Inbound, Outbox};

/// The application subprotocol; the server answers with it when the client offers it.
pub const PROTOCOL: &str = "authchat.v1";
/// Prefix of the subprotocol entry that carries a bearer token.
pub const BEARER_PROTOCOL_PREFIX: &str = "authchat.bearer.";

/// The path of the echo route that `ws.echo` turns on.
pub const ECHO_PATH: &str = "/ws/echo";

/// `GET /ws`: a chat socket.
pub async fn upgrade(
    req: HttpRequest,
    state: web::Data<AppState>,
    sockets: web::Data<SocketDeps>,
) -> Result<HttpResponse, ApiError> {
    upgrade_to(SocketMode::Chat, req, state, sockets).await
}

/// `GET /ws/echo`: an echo socket, for conformance runs.
pub async fn echo(
    req: HttpRequest,
    state: web::Data<AppState>,
    sockets: web::Data<SocketDeps>,
) -> Result<HttpResponse, ApiError> {
    upgrade_to(SocketMode::Echo, req, state, sockets).await
}

async fn upgrade_to(
    mode: SocketMode,
    req: HttpRequest,
    state: web::Data<AppState>,
    sockets: web::Data<SocketDeps>,
) -> Result<HttpResponse, ApiError> {
    let result = accept(mode, &req, &state, sockets.clone().into_inner()).await;
    if let Err(e) = &result {
        sockets.metrics.upgrades_refused.with_label_values(&[e.code()]).inc();
        tracing::info!(reason = e.code(), peer = ?req.peer_addr(), "websocket upgrade refused");
    }
    result
}

async fn accept(
    mode: SocketMode,
    req: &HttpRequest,
    state: &AppState,
    sockets: Arc<SocketDeps>,
) -> Result<HttpResponse, ApiError> {
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let ip = crate::http::client_ip(req);
    sockets.limits.handshake(ip).map_err(ApiError::TooManyHandshakes)?;
    check_origin(req, state)?;
    check_version(req)?;
    verify_handshake(req.head()).map_err(|e| ApiError::bad_request("bad_handshake", e.to_string()))?;
    if req.extensions().get::<UpgradePath>().is_none() {
        return Err(ApiError::bad_request("bad_handshake", "a WebSocket handshake cannot carry a chunked body"));
    }
    let principal = match presented(req, sockets.auth.mode(), &sockets.config)? {
        Some((value, method)) => Some((sockets.auth.authenticate(credential(&value, method)).await?, method)),
        // An echo socket echoes its first message too: it cannot authenticate with it.
        None if mode == SocketMode::Echo => return Err(AuthError::MissingCredentials.into()),
        None => None,
    };

    let conn_id = state.conn_ids.next();
    let identity = principal.as_ref().map(|(p, method)| identity_of(p, *method));
    let method = principal.as_ref().map_or(AuthMethod::FirstMessage, |(_, m)| *m);
    let user = principal.as_ref().map(|(p, _)| p.user.clone());
    let (mut place, auth) = match principal {
        Some((principal, method)) => {
            let place = sockets.admission.admit(conn_id, &principal.user).map_err(|r| refused(r, true))?;
            (place, AuthState::Ready { principal, method })
        }
        None => {
            let (place, pending) =
                sockets.admission.admit_unauthenticated(conn_id, ip).map_err(|r| refused(r, false))?;
            (place, AuthState::Pending(pending))
        }
    };
    let outbox = Outbox::new(sockets.config.max_outbound_bytes);
    let (wire, reader) = Wire::new();
    let inbound = Inbound::new(reader, sockets.config.max_message_size);
    let output = Rc::new(Output::new(conn_id, mode, sockets.clone(), outbox.clone()));
    let (delivered, delivery) = SocketOutbox::local(output.clone());
    let session = WsSession::new(conn_id, sockets.clone(), auth, output, delivery, mode);
    WsSession::create(|ctx| {
        ctx.add_stream(inbound);
        session
    });
    // Goes in this worker's next batch of notes to the registry, which is sent before the 101
    // goes out (`takeover` waits for it), so nothing the socket sends the registry can overtake
    // it. The place rides with the socket until its TCP connection is gone.
    place.register(delivered, ip, identity);
    let mut response = switching_protocols(req).finish();
    response.extensions_mut().insert(Handoff::new(wire, outbox, place));
    if user.is_some() {
        sockets.metrics.upgrades_accepted.with_label_values(&[method.as_str()]).inc();
    }
    tracing::info!(%conn_id, user = user.as_ref().map(|u| u.as_str()), method = method.as_str(), "websocket accepted");
    Ok(response)
}

/// Why a socket was not admitted, as the upgrade's answer.
fn refused(refusal: Refusal, authenticated: bool) -> ApiError {
    match refusal {
        Refusal::TooManyConnections if authenticated => {
            ApiError::TooManyConnections("this user has too many connections open")
        }
        Refusal::TooManyConnections => {
            ApiError::TooManyConnections("too many unauthenticated connections from this address")
        }
        Refusal::ServerFull => ApiError::ServerFull,
        Refusal::UnknownConnection => ApiError::ShuttingDown,
    }
}

/// The 101 answer (RFC 6455 §4.2.2), naming [`PROTOCOL`] when the client offered it. The
/// handshake was verified before.
fn switching_protocols(req: &HttpRequest) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    response.upgrade("websocket");
    if let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) {
        let accept = header::HeaderValue::from_bytes(&hash_key(key.as_bytes())).expect("base64 is a header value");
        response.insert_header((header::SEC_WEBSOCKET_ACCEPT, accept));
    }
    if offered_protocols(req).any(|p| p == PROTOCOL) {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL));
    }
    response
}

/// Every entry of every `Sec-WebSocket-Protocol` header line: repeated lines are one
/// comma-separated list (RFC 9110 §5.3). Split as bytes, so an entry that is not ASCII drops
/// only itself, not the entries beside it.
fn offered_protocols(req: &HttpRequest) -> impl Iterator<Item = &str> {
    list_entries(req, header::SEC_WEBSOCKET_PROTOCOL)
}

/// The non-empty, trimmed entries of every `name` header line, as one list.
fn list_entries(req: &HttpRequest, name: header::HeaderName) -> impl Iterator<Item = &str> {
    req.headers()
        .get_all(name)
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

/// A client offering another version than 13, or several, is told which one this server
/// speaks (426 with `Sec-WebSocket-Version: 13`, RFC 6455 §4.2.2). A missing version is left to
/// the handshake check (400).
fn check_version(req: &HttpRequest) -> Result<(), ApiError> {
    if !req.headers().contains_key(header::SEC_WEBSOCKET_VERSION) {
        return Ok(());
    }
    let mut versions = list_entries(req, header::SEC_WEBSOCKET_VERSION);
    match (versions.next(), versions.next()) {
        (Some(crate::http::WEBSOCKET_VERSION), None) => Ok(()),
        _ => Err(ApiError::UnsupportedWebSocketVersion),
    }
}

/// Browsers send `Origin` on every WebSocket handshake and do not apply CORS to it, so this
/// exact-match allowlist is what stops cross-site WebSocket hijacking. No `Origin` means a
/// non-browser client, which is allowed.
fn check_origin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    match req.headers().get(header::ORIGIN) {
        None => Ok(()),
        Some(origin) => match origin.to_str() {
            Ok(origin) if state.allowed_origins.contains(origin) => Ok(()),
            _ => Err(ApiError::OriginNotAllowed),
        },
    }
}

/// The credential the upgrade request presents, and how; `None` for a socket that will
/// authenticate with its first message. In session mode only the session cookie counts (the
/// Origin check is what keeps other sites' pages out); in JWT mode, first match wins. Public
/// for the fuzz target (fuzz/).
pub fn presented(
    req: &HttpRequest,
    mode: AuthMode,
    config: &SocketConfig,
) -> Result<Option<(String, AuthMethod)>, ApiError> {
    if mode == AuthMode::Session {
        return crate::http::session::session_secret(req)
            .map(|secret| Some((secret, AuthMethod::Session)))
            .ok_or(ApiError::Auth(AuthError::MissingCredentials));
    }
    if let Some(ticket) = query_param(req.query_string(), "ticket") {
        return Ok(Some((ticket, AuthMethod::Ticket)));
    }
    let offered: Vec<&str> = offered_protocols(req).collect();
    if let Some(token) = offered.iter().find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX)) {
        if !offered.contains(&PROTOCOL) {
            return Err(ApiError::bad_request(
                "protocol_required",
                format!(
                    "offer {PROTOCOL} alongside {BEARER_PROTOCOL_PREFIX}<token>; the server answers with {PROTOCOL}"
                ),
            ));
        }
        return Ok(Some((token.to_owned(), AuthMethod::Subprotocol)));
    }
    if let Some(token) = crate::http::extract::bearer_token(req)? {
        return Ok(Some((token.to_owned(), AuthMethod::Header)));
    }
    if let Some(token) = query_param(req.query_string(), "token") {
        if !config.query_token {
            return Err(ApiError::bad_request(
                "query_token_disabled",
                "?token= is disabled on this server (auth.query_token); use the subprotocol or the Authorization header",
            ));
        }
        return Ok(Some((token, AuthMethod::Query)));
    }
    if config.first_message {
        return Ok(None);
    }
    Err(AuthError::MissingCredentials.into())
}

/// The presented value as the [`Credential`] its method makes it.
fn credential(value: &str, method: AuthMethod) -> Credential<'_> {
    match method {
        AuthMethod::Ticket => Credential::Ticket(value),
        AuthMethod::Session => Credential::SessionCookie(value),
        AuthMethod::Subprotocol | AuthMethod::Header | AuthMethod::Query | AuthMethod::FirstMessage => {
            Credential::Token(value)
        }
    }
}

/// The first value of `name` in a query string (`application/x-www-form-urlencoded`: `+` is a
/// space, `%XX` a byte). Only keys are decoded until one matches: a query carrying a JWT is
/// long, and a JWT needs no decoding.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key) == name).then(|| form_decode(value).into_owned())
    })
}

fn form_decode(component: &str) -> std::borrow::Cow<'_, str> {
    if !component.bytes().any(|b| b == b'%' || b == b'+') {
        return component.into();
    }
    let spaced = component.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned().into()
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn query_params_are_form_decoded_and_the_first_wins() {
        let query = "a=1&tok%65n=x%2By+z&token=second&empty&ticket=";
        assert_eq!(query_param(query, "token").as_deref(), Some("x+y z"), "the key is decoded too");
        assert_eq!(query_param(query, "empty").as_deref(), Some(""));
        assert_eq!(query_param(query, "ticket").as_deref(), Some(""));
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(
            query_param("token=%FF%FE", "token").as_deref(),
            Some("\u{fffd}\u{fffd}"),
            "invalid UTF-8 is replaced"
        );
    }
}

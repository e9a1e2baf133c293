//! The HTTP surface: routes, CORS for the REST API, the request deadline, the client address,
//! and the access log.

pub mod admin;
pub mod api;
pub mod cookies;
pub mod error;
pub mod extract;
pub mod forwarded;
pub mod ops;
pub mod session;
pub mod token;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use actix_cors::Cors;
use actix_files::Files;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{http::Method, web};
use actix_web::{HttpRequest, HttpResponse};

use crate::config::Settings;
use crate::state::AppState;
use crate::telemetry::redact_target;

/// Every HTTP route of the server (the WebSocket route is added by `startup`, so this layer
/// does not depend on the socket layer above it).
pub fn routes(cfg: &mut web::ServiceConfig, state: &AppState, settings: &Settings) {
    cfg.route("/healthz", web::get().to(ops::healthz)).route("/readyz", web::get().to(ops::readyz));
    // With a listener of its own, /metrics is served there only.
    if settings.metrics.listen.is_none() {
        cfg.route("/metrics", web::get().to(ops::local_metrics));
    }
    cfg.service(web::scope("/api").wrap(cors(state)).configure(|cfg| api::routes(cfg, settings.auth.mode)))
        .service(web::scope("/admin").wrap(cors(state)).configure(admin::routes));
    let dir = &settings.server.static_dir;
    if dir.is_dir() {
        cfg.service(Files::new("/", dir).index_file("index.html").prefer_utf8(true));
    } else {
        tracing::warn!(static_dir = %dir.display(), "server.static_dir is not a directory; the web UI is not served");
    }
}

/// Headers on every response: the CSP lets pages load only this origin's scripts and styles
/// and connect only to this origin (its WebSocket included); no framing, no MIME sniffing,
/// no referrer sent elsewhere.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("X-Frame-Options", "DENY"))
}

/// CORS for the REST API, from the same allowlist as the WebSocket Origin check.
fn cors(state: &AppState) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::DELETE])
        .allowed_headers(["authorization", "content-type"])
        .supports_credentials()
        .max_age(600);
    for origin in state.allowed_origins.iter() {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// The address a request comes from, for every per-client limit (login throttling,
/// handshakes, unauthenticated sockets) and the access log: the TCP peer, or, when the peer is
/// one of `server.trusted_proxies`, the client its `Forwarded` / `X-Forwarded-For` names.
pub fn client_ip(req: &HttpRequest) -> IpAddr {
    let peer = req.peer_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    match req.app_data::<forwarded::TrustedProxies>() {
        Some(proxies) => proxies.client_of(peer, req.headers()),
        None => peer,
    }
}

/// The route that outlives its request: its handler returns at the upgrade, and the socket
/// then lives on its own heartbeat and token deadlines.
const WEBSOCKET_PATH: &str = "/ws";

/// The one WebSocket version spoken here (RFC 6455), named in the 426 answer to any other.
pub const WEBSOCKET_VERSION: &str = "13";

/// Every request but the WebSocket upgrade must be read (body included) and answered within
/// `server.request_timeout`; otherwise the client gets 408 and, its body being unread, actix
/// closes the connection. Actix cuts off slow headers by itself, but not slow bodies.
///
/// The refusal is returned as an error, not a response: a response needs the `HttpRequest`,
/// and a clone of it taken before routing would make routing panic.
pub async fn request_deadline(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.path() == WEBSOCKET_PATH {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let limit = req.app_data::<web::Data<Settings>>().expect("Settings are registered").server.request_timeout;
    match tokio::time::timeout(limit, next.call(req)).await {
        Ok(response) => Ok(response?.map_into_boxed_body()),
        Err(_) => Err(error::ApiError::RequestTimeout(limit).into()),
    }
}

/// Which listener a request came in on (application data of each listener's application).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls,
    Plain,
}

/// On a TLS server: a request that came in on the plain redirect port is sent to HTTPS (308,
/// method and body kept) at `tls.redirect_origin`, and every TLS response carries
/// `Strict-Transport-Security`.
pub async fn transport_security(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().expect("AppState is registered");
    if state.tls_port.is_none() {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    if req.app_data::<Transport>() != Some(&Transport::Tls) {
        // The origin is configured: the request's Host is the client's to write.
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let path = if path.starts_with('/') { path } else { "/" };
        let location = format!("{}{path}", state.redirect_origin);
        let response = HttpResponse::PermanentRedirect().insert_header((header::LOCATION, location)).finish();
        return Ok(req.into_response(response));
    }
    let settings = req.app_data::<web::Data<Settings>>().expect("Settings are registered").clone();
    let mut response = next.call(req).await?.map_into_boxed_body();
    let max_age = settings.tls.hsts_max_age.as_secs();
    if max_age > 0 {
        let value = header::HeaderValue::from_str(&format!("max-age={max_age}")).expect("digits are a valid header");
        response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
    Ok(response)
}

/// One line per request, with credential query parameters redacted: `peer` is the TCP peer,
/// `client` the address the limits count (they differ behind a trusted proxy).
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Redacting the target costs more than the rest of a WebSocket handshake's routing: only
    // when the line is written.
    if !tracing::enabled!(target: "authchat::access", tracing::Level::INFO) {
        return next.call(req).await;
    }
    let started = Instant::now();
    let method = req.method().clone();
    let target = redact_target(req.path(), req.query_string()).into_owned();
    let peer = req.peer_addr();
    let client = client_ip(req.request());
    let response = next.call(req).await;
    // A middleware's refusal (e.g. the request deadline) is an error answered by actix itself.
    let status = match &response {
        Ok(response) => response.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    tracing::info!(
        target: "authchat::access",
        %method,
        %target,
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        peer = ?peer,
        %client,
        "request"
    );
    response
}

//! Building and running the server: [`Application::build`] binds the listener and wires the
//! parts; [`Application::run_until_stopped`] serves until the shutdown future resolves, then
//! drains. Tests bind port 0 and pass their own shutdown future.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_http::HttpService;
use actix_service::map_config;
use actix_web::dev::{AppConfig, Server};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context as _;

use crate::auth::authenticator::{Authenticator, JwtMode, SessionMode};
use crate::auth::jwks::remote::Remote;
use crate::auth::jwks::Provider;
use crate::auth::jwt::TokenService;
use crate::auth::login::PasswordLogin;
use crate::auth::password::UserDirectory;
use crate::auth::sessions::Sessions;
use crate::chat::access::Rules;
use crate::cluster::Engine;
use crate::config::{AuthMode, LoadOptions, Settings, StoreBackend, MIN_HS_SECRET_BYTES};
use crate::fleet::Fleet;
use crate::http::error::ApiError;
use crate::http::token::TokenApi;
use crate::http::Transport;
use crate::ids::ConnIdAllocator;
use crate::metrics::Metrics;
use crate::protocol::{close, ServerMessage};
use crate::ratelimit::SharedLimits;
use crate::registry::admission::{Admission, Caps};
use crate::registry::{CloseAll, Registry, RegistryConfig, SetRules};
use crate::state::AppState;
use crate::store::Stores;
use crate::tls::CertStore;
use crate::ws::session::{SocketConfig, SocketDeps};
use crate::ws::takeover::Takeover;

/// Re-reads reloadable inputs without dropping connections: the TLS files, the JWKS file, and
/// (when it knows where the configuration comes from) the room rules.
#[derive(Clone)]
pub struct ReloadHandle {
    tokens: Arc<TokenService>,
    metrics: Arc<Metrics>,
    certs: Option<Arc<CertStore>>,
    registry: Addr<Registry>,
    /// Where the configuration is read again from, for `[rooms]`; `None`: not re-read.
    config: Option<LoadOptions>,
}

impl ReloadHandle {
    /// Re-reads the configuration from these layers at each reload; only its room rules take
    /// effect (everything else needs a restart).
    pub fn with_config(mut self, options: LoadOptions) -> Self {
        self.config = Some(options);
        self
    }

    pub fn reload(&self) {
        if let Some(certs) = &self.certs {
            match certs.reload() {
                Ok(()) => tracing::info!("TLS certificate and key re-read; new handshakes use them"),
                Err(e) => tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use"),
            }
        }
        if self.tokens.is_verify_only() {
            crate::auth::jwks::reload(&self.tokens, &self.metrics, "SIGHUP");
        }
        if let Some(options) = &self.config {
            self.reload_rules(options);
        }
    }

    /// New room rules, in force at once: sockets they no longer allow in a room leave it.
    fn reload_rules(&self, options: &LoadOptions) {
        let settings = match Settings::load(options) {
            Ok(settings) => settings,
            Err(e) => return tracing::error!(error = %e, "configuration not re-read; the room rules in force stay"),
        };
        let rules = Rules::new(&settings.rooms.rules);
        let count = rules.len();
        let registry = self.registry.clone();
        actix_web::rt::spawn(async move {
            match registry.send(SetRules { rules }).await {
                Ok(left) => tracing::info!(rules = count, left, "room rules re-read; sockets they refuse left rooms"),
                Err(e) => tracing::error!(error = %e, "the registry did not take the new room rules"),
            }
        });
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({"error": "not_found", "message": "no such route"}))
}

/// A listening socket with SO_REUSEADDR, so a restarted server gets its port back at once.
/// Accepted connections inherit (one system call each fewer than setting them per connection):
/// - `user_timeout` (TCP_USER_TIMEOUT): the kernel drops a connection whose peer leaves data
///   unacknowledged, or its receive window shut, that long, which frees a socket whose peer
///   stopped reading even while a write to it is blocked;
/// - TCP_NODELAY: a WebSocket's frames go out as they come, where Nagle's algorithm would hold
///   a small frame behind the previous one's ACK (up to 40 ms with a delayed-ACK peer).
fn bind(host: std::net::IpAddr, port: u16, user_timeout: Duration) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let address = std::net::SocketAddr::new(host, port);
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_user_timeout(Some(user_timeout))?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// `tls.redirect_origin`, or else this listener's own address (validation made sure
/// `server.host` is one address then).
fn redirect_origin(settings: &Settings, tls_port: u16) -> String {
    if !settings.tls.redirect_origin.is_empty() {
        return settings.tls.redirect_origin.trim_end_matches('/').to_owned();
    }
    let host = match settings.server.host {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    match tls_port {
        443 => format!("https://{host}"),
        port => format!("https://{host}:{port}"),
    }
}

/// TCP connections allowed beyond `server.max_connections` WebSockets, for plain HTTP.
const TCP_HEADROOM: usize = 1024;

/// How often idle keys are dropped from the per-user and per-address limiters.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// What the HTTP server hands its handlers, each asked for by type (`web::Data<T>`).
#[derive(Clone)]
struct Shared {
    state: web::Data<AppState>,
    settings: web::Data<Settings>,
    auth: web::Data<Authenticator>,
    tokens: web::Data<TokenService>,
    stores: web::Data<Stores>,
    registry: web::Data<Addr<Registry>>,
    fleet: web::Data<Fleet>,
    metrics: web::Data<Metrics>,
    token_api: web::Data<TokenApi>,
    sockets: web::Data<SocketDeps>,
}

/// A bound, wired server, not yet running.
pub struct Application {
    port: u16,
    /// The plain-HTTP port that redirects to HTTPS, when `tls.redirect_port` is set.
    redirect_port: Option<u16>,
    server: Server,
    /// The listener of `metrics.listen`, when set: its bound port and its server, started
    /// with the main one and stopped after it.
    metrics: Option<(u16, Server)>,
    shared: Shared,
    certs: Option<Arc<CertStore>>,
}

impl Application {
    /// Wiring: keys, stores, the registry, the authenticator and what sockets and handlers
    /// share, then the listener handed to `serve`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let hs_secret = match settings.hs_secret() {
            Some(secret) => secret.clone(),
            None => {
                // Only JWT mode signing with the secret cares; the others never use it.
                if settings.auth.mode == AuthMode::Jwt && !settings.auth.is_verify_only() {
                    tracing::warn!(
                        "dev mode: auth.secret is shorter than {MIN_HS_SECRET_BYTES} bytes, so a random one was \
                         generated; tokens stop verifying when the process restarts (set AUTHCHAT__AUTH__SECRET to keep them)"
                    );
                }
                secrecy::SecretString::from(crate::ids::random_id(48))
            }
        };
        let metrics = Arc::new(Metrics::new());
        let tokens = Arc::new(TokenService::from_settings(&settings, &hs_secret, &metrics)?);
        match tokens.provider() {
            Some(Provider::File(path)) => {
                let interval = settings.auth.jwks_poll_interval;
                if !interval.is_zero() {
                    let watch = crate::auth::jwks::watch(tokens.clone(), metrics.clone(), path.clone(), interval);
                    actix_web::rt::spawn(watch);
                }
            }
            Some(Provider::Remote(remote)) => {
                remote.load_first(&tokens).await?;
                actix_web::rt::spawn(Remote::keep_fresh(tokens.clone()));
            }
            None => {}
        }
        let users = Arc::new(UserDirectory::new(&settings.users));
        // One id for this start of the server: `welcome.boot`, and the default node name's suffix.
        let boot_id = crate::ids::random_id(6);
        let node = settings.node_id(&boot_id);

        let certs = match settings.tls.files() {
            Some((cert, key)) => Some(Arc::new(CertStore::load(cert, key)?)),
            None => None,
        };
        let (host, port) = (settings.server.host, settings.server.port);
        let user_timeout = settings.ws.close_timeout;
        let listener = bind(host, port, user_timeout)
            .with_context(|| format!("cannot listen on {host}:{port} (server.host, server.port)"))?;
        let port = listener.local_addr()?.port();

        let mut allowed_origins: HashSet<String> = settings.server.allowed_origins.iter().cloned().collect();
        if settings.dev_mode {
            // The bundled UI talks to the server it was served from.
            for name in ["127.0.0.1", "localhost", &host.to_string()] {
                allowed_origins.insert(format!("http://{name}:{port}"));
            }
        }

        let stores = match settings.store.backend {
            StoreBackend::Redis => {
                Stores::redis(&settings.redis).await.map_err(|e| anyhow::anyhow!("store.backend = \"redis\": {e}"))?
            }
            StoreBackend::Memory => Stores::memory(),
        };
        let login = PasswordLogin::new(users.clone(), stores.attempts.clone(), &settings.auth);
        // Several nodes: the Redis engine numbers messages, keeps history and presence, and
        // carries operator requests; it also gives this node its number (connection ids unique
        // across nodes) and the cluster's boot id (the same `welcome.boot` everywhere).
        let engine = match settings.store.backend {
            StoreBackend::Redis => Some(
                Engine::start(&settings, node.clone(), metrics.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("store.backend = \"redis\": the chat engine: {e}"))?,
            ),
            StoreBackend::Memory => None,
        };
        let registry_config = RegistryConfig::from_settings(&settings, node.clone(), boot_id.clone());
        let mut registry = Registry::new(registry_config, metrics.clone());
        let (mut boot_id, mut conn_ids) = (boot_id, ConnIdAllocator::default());
        let engine = match engine {
            Some((engine, events)) => {
                registry = registry.with_engine(engine.clone(), events);
                boot_id = engine.boot().to_owned();
                conn_ids = ConnIdAllocator::starting_at(engine.node_number() << crate::cluster::CONN_ID_BITS);
                Some(engine)
            }
            None => None,
        };
        let registry = registry.start();
        let fleet = web::Data::new(Fleet::new(node.clone(), registry.clone(), engine));
        let revocations = stores.revocations.clone();
        let auth = match settings.auth.mode {
            AuthMode::Jwt => {
                Authenticator::Jwt(JwtMode { tokens: tokens.clone(), tickets: stores.tickets.clone(), revocations })
            }
            AuthMode::Session => {
                // Only session mode binds sockets to server-side sessions, so only it follows them.
                actix_web::rt::spawn(crate::registry::sessions::follow_sessions(
                    stores.clone(),
                    registry.clone(),
                    settings.session.reconcile_interval,
                ));
                let sessions = Sessions::new(stores.sessions.clone(), settings.session.clone());
                Authenticator::Session(SessionMode { sessions, revocations })
            }
        };
        let settings = Arc::new(settings);
        let auth = Arc::new(auth);
        let sockets = web::Data::new(SocketDeps {
            config: SocketConfig::from_settings(&settings),
            auth: auth.clone(),
            registry: registry.clone(),
            admission: Admission::new(registry.clone(), Caps::from_settings(&settings)),
            metrics: metrics.clone(),
            limits: SharedLimits::from_settings(&settings.ws),
            node: node.clone(),
            boot_id,
        });
        let allowed_origins = Arc::new(allowed_origins);
        let secure_cookies = certs.is_some() || settings.auth.secure_cookies;
        let token_api = web::Data::new(TokenApi {
            auth: auth.clone(),
            tokens: tokens.clone(),
            users,
            login,
            stores: stores.clone(),
            fleet: fleet.get_ref().clone(),
            config: settings.auth.clone(),
            secure_cookies,
            allowed_origins: allowed_origins.clone(),
        });
        let state = web::Data::new(AppState {
            node,
            allowed_origins,
            tls_port: certs.is_some().then_some(port),
            redirect_origin: redirect_origin(&settings, port),
            secure_cookies,
            conn_ids,
            draining: Default::default(),
            started: std::time::Instant::now(),
        });
        let shared = Shared {
            state,
            settings: web::Data::from(settings.clone()),
            auth: web::Data::from(auth),
            tokens: web::Data::from(tokens),
            stores: web::Data::new(stores),
            registry: web::Data::new(registry),
            fleet,
            metrics: web::Data::from(metrics),
            token_api,
            sockets,
        };

        let sweeping = shared.sockets.clone();
        actix_web::rt::spawn(async move {
            let mut ticker = tokio::time::interval(LIMITER_SWEEP);
            loop {
                ticker.tick().await;
                sweeping.limits.forget_idle();
            }
        });
        let metrics = match settings.metrics.listen {
            Some(address) => Some(serve_metrics(shared.metrics.clone(), address, user_timeout)?),
            None => None,
        };
        let (server, redirect_port) = serve(shared.clone(), listener, certs.as_ref(), user_timeout)?;
        let scheme = if certs.is_some() { "https" } else { "http" };
        tracing::info!(
            address = %format!("{host}:{port}"),
            scheme,
            redirect_port,
            metrics_port = metrics.as_ref().map(|(port, _)| *port),
            node = %shared.state.node,
            dev_mode = settings.dev_mode,
            "listening"
        );
        Ok(Self { port, redirect_port, server, metrics, shared, certs })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn redirect_port(&self) -> Option<u16> {
        self.redirect_port
    }

    /// The bound port of `metrics.listen`, when set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    /// Something that re-reads what can change under a running server (the identity
    /// provider's keys, the TLS certificate and key, and with [`ReloadHandle::with_config`] the
    /// room rules), for SIGHUP.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            tokens: self.shared.tokens.clone().into_inner(),
            metrics: self.shared.metrics.clone().into_inner(),
            certs: self.certs.clone(),
            registry: self.shared.registry.get_ref().clone(),
            config: None,
        }
    }

    /// Serves until `shutdown` resolves, then drains: `/readyz` turns 503, every socket gets
    /// `server_shutdown` and close 1001, and open connections get `server.shutdown_timeout`.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let metrics = self.metrics.map(|(_, server)| {
            let handle = server.handle();
            actix_web::rt::spawn(server);
            handle
        });
        let result = Self::serve_then_drain(self.server, self.shared, shutdown).await;
        if let Some(metrics) = metrics {
            metrics.stop(true).await;
        }
        result
    }

    /// The main server until `shutdown`, then the drain.
    async fn serve_then_drain(
        server: Server,
        shared: Shared,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let handle = server.handle();
        let mut server = std::pin::pin!(server);
        tokio::select! {
            result = &mut server => return result,
            () = shutdown => {}
        }
        shared.state.start_draining();
        let delay = shared.settings.server.drain_delay;
        if !delay.is_zero() {
            tracing::info!(?delay, "draining: /readyz reports not ready; sockets close after the drain delay");
            // The server keeps serving meanwhile; polling it is what lets /readyz answer.
            tokio::select! {
                result = &mut server => return result,
                () = tokio::time::sleep(delay) => {}
            }
        }
        let farewell = CloseAll {
            farewell: Some(ServerMessage::ServerShutdown.to_json()),
            code: close::GOING_AWAY,
            reason: "server shutting down",
        };
        let closed = shared.registry.send(farewell).await.unwrap_or(0);
        tracing::info!(closed, "draining: sockets told to close");
        shared.fleet.leave_cluster().await;
        // The stop command is carried out by the server future itself, so both are polled.
        let ((), result) = tokio::join!(handle.stop(true), server);
        result
    }
}

/// The listener of `metrics.listen`: `/metrics` and nothing else, to whoever reaches it.
fn serve_metrics(
    metrics: web::Data<Metrics>,
    address: std::net::SocketAddr,
    user_timeout: Duration,
) -> anyhow::Result<(u16, Server)> {
    let listener = bind(address.ip(), address.port(), user_timeout)
        .with_context(|| format!("cannot listen on {address} (metrics.listen)"))?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(metrics.clone())
            .route("/metrics", web::get().to(crate::http::ops::metrics))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((port, server))
}

/// How long an HTTP connection lingers after its answer to read the rest of a request body it
/// did not need (actix-web's default), so that a refusal of a body too big to read still
/// reaches the client.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// actix-http's HTTP/1 service over the application that `$apps.0` builds for `$transport`,
/// with WebSocket upgrades taken over by [`Takeover`] and answered by the application that
/// `$apps.1` builds. A macro because the service's type cannot be named, and `.tcp()` and
/// `.rustls_0_23()` each need it whole.
macro_rules! http_service {
    ($apps:expr, $transport:expr, $addr:expr) => {{
        let ((app, upgrade_app), transport) = ($apps.clone(), $transport);
        HttpService::build()
            .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
            .local_addr($addr)
            .upgrade(Takeover::new(move || upgrade_app(transport)))
            .finish(map_config(app(transport), |_| AppConfig::default()))
    }};
}

/// Serving: the HTTP server with its middleware and routes, on `listener` (TLS when `certs`),
/// plus the plain redirect port when configured. Started, not yet awaited.
fn serve(
    shared: Shared,
    listener: std::net::TcpListener,
    certs: Option<&Arc<CertStore>>,
    user_timeout: Duration,
) -> anyhow::Result<(Server, Option<u16>)> {
    let settings = shared.settings.clone();
    let host = settings.server.host;
    let workers = match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let proxies = crate::http::forwarded::TrustedProxies::new(settings.server.trusted_proxies.clone());
    // What both applications share: application data and routes.
    let configure = move |cfg: &mut web::ServiceConfig| {
        let Shared { state, settings, auth, tokens, stores, registry, fleet, metrics, token_api, sockets } =
            shared.clone();
        cfg.app_data(state.clone())
            .app_data(settings.clone())
            .app_data(auth)
            .app_data(tokens)
            .app_data(stores)
            .app_data(registry)
            .app_data(fleet)
            .app_data(metrics)
            .app_data(token_api)
            .app_data(sockets)
            .app_data(proxies.clone())
            .app_data(web::JsonConfig::default().limit(16 * 1024).error_handler(|e, _| {
                ApiError::bad_request("bad_json", format!("the request body is not the expected JSON: {e}")).into()
            }))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::bad_request("bad_query", e.to_string()).into()),
            )
            .route("/ws", web::get().to(crate::ws::upgrade));
        if settings.ws.echo {
            cfg.route(crate::ws::ECHO_PATH, web::get().to(crate::ws::echo));
        }
        crate::http::routes(cfg, &state, &settings);
    };
    let upgrade_configure = configure.clone();
    let app = move |transport: Transport| {
        App::new()
            .app_data(transport)
            .configure(configure.clone())
            .wrap(from_fn(crate::http::request_deadline))
            .wrap(from_fn(crate::http::transport_security))
            .wrap(crate::http::security_headers())
            .wrap(from_fn(crate::http::access_log))
            .default_service(web::to(not_found))
    };
    // The application for requests that ask for a WebSocket: the same routes, without the two
    // layers a handshake has no use for (3,500 of its 138,000 instructions, by callgrind): the
    // request deadline, which does not apply to the socket, and the headers that tell a browser
    // how to show a page (a browser's WebSocket shows none; a browser cannot send a page request
    // with `Upgrade`).
    let upgrade_app = move |transport: Transport| {
        App::new()
            .app_data(transport)
            .configure(upgrade_configure.clone())
            .wrap(from_fn(crate::http::transport_security))
            .wrap(from_fn(crate::http::access_log))
            .default_service(web::to(not_found))
    };
    let apps = (app, upgrade_app);
    let server = actix_server::Server::build()
        .workers(workers)
        // The hard TCP cap, per worker: room above server.max_connections WebSockets for HTTP
        // requests, so the 503 `server_full` answers and the API keep flowing.
        .max_concurrent_connections((settings.server.max_connections + TCP_HEADROOM).div_ceil(workers))
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs().max(1))
        .disable_signals();
    let addr = listener.local_addr()?;
    let server = match certs {
        Some(certs) => {
            let (apps, tls) = (apps.clone(), certs.server_config());
            server.listen("authchat-tls", listener, move || {
                http_service!(apps, Transport::Tls, addr).rustls_0_23(tls.clone())
            })?
        }
        None => {
            let apps = apps.clone();
            server.listen("authchat", listener, move || http_service!(apps, Transport::Plain, addr).tcp())?
        }
    };
    let (server, redirect_port) = match settings.tls.redirect_port {
        0 => (server, None),
        wanted => {
            let plain = bind(host, wanted, user_timeout)
                .with_context(|| format!("cannot listen on {host}:{wanted} (tls.redirect_port)"))?;
            let bound = plain.local_addr()?;
            let server = server
                .listen("authchat-redirect", plain, move || http_service!(apps, Transport::Plain, bound).tcp())?;
            (server, Some(bound.port()))
        }
    };
    Ok((server.run(), redirect_port))
}

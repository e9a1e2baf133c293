//! What every request handler and socket shares.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;

use crate::auth::authenticator::Authenticator;
use crate::auth::jwt::TokenService;
use crate::auth::login::PasswordLogin;
use crate::auth::password::UserDirectory;
use crate::config::Settings;
use crate::ids::ConnIdAllocator;
use crate::metrics::Metrics;
use crate::ratelimit::SharedLimits;
use crate::registry::Registry;
use crate::store::Stores;

/// Shared, read-mostly state of one server.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub tokens: Arc<TokenService>,
    pub users: Arc<UserDirectory>,
    /// Password checks for `POST /api/login`: throttled, and capped in concurrency.
    pub login: PasswordLogin,
    pub stores: Stores,
    /// JWTs or sessions, decided once at start-up.
    pub auth: Authenticator,
    pub registry: Addr<Registry>,
    pub metrics: Arc<Metrics>,
    pub conn_ids: ConnIdAllocator,
    /// Message and handshake limits shared by every socket of this node.
    pub limits: Arc<SharedLimits>,
    /// This node's name.
    pub node: String,
    /// Random per process start: tells clients that room message ids started over.
    pub boot_id: String,
    /// `Origin` values allowed at the upgrade and by CORS (config plus, in dev mode, our own).
    pub allowed_origins: HashSet<String>,
    /// The port of the TLS listener, when it speaks TLS: cookies get `Secure`, responses get
    /// HSTS, and the redirect port points here.
    pub tls_port: Option<u16>,
    /// Set when a graceful stop begins: `/readyz` fails and new upgrades are refused.
    draining: AtomicBool,
    pub started: Instant,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Settings>,
        tokens: Arc<TokenService>,
        users: Arc<UserDirectory>,
        login: PasswordLogin,
        stores: Stores,
        auth: Authenticator,
        registry: Addr<Registry>,
        metrics: Arc<Metrics>,
        node: String,
        allowed_origins: HashSet<String>,
        tls_port: Option<u16>,
    ) -> Self {
        Self {
            limits: Arc::new(SharedLimits::from_settings(&settings.ws)),
            settings,
            tokens,
            users,
            login,
            stores,
            auth,
            registry,
            metrics,
            conn_ids: ConnIdAllocator::default(),
            node,
            boot_id: crate::ids::random_id(6),
            allowed_origins,
            tls_port,
            draining: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// Cookies are `Secure` on TLS, or when the config says so (TLS terminated in front).
    pub fn secure_cookies(&self) -> bool {
        self.tls_port.is_some() || self.settings.auth.secure_cookies
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

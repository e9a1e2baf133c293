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
    /// JWTs or sessions, decided once at start-up (shared with the sockets).
    pub auth: Arc<Authenticator>,
    pub registry: Addr<Registry>,
    pub metrics: Arc<Metrics>,
    pub conn_ids: ConnIdAllocator,
    /// This node's name.
    pub node: String,
    /// `Origin` values allowed at the upgrade and by CORS (config plus, in dev mode, our own).
    pub allowed_origins: HashSet<String>,
    /// The port of the TLS listener, when it speaks TLS: cookies get `Secure`, responses get
    /// HSTS, and the redirect port points here.
    pub tls_port: Option<u16>,
    /// Set when a graceful stop begins: `/readyz` fails and new upgrades are refused.
    pub(crate) draining: AtomicBool,
    pub started: Instant,
}

impl AppState {
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

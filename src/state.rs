//! The server's own facts that several HTTP handlers and the upgrade read: its name, who may
//! call it from a browser, whether it speaks TLS, and whether it is draining. Everything else a
//! handler uses it asks for by type (`web::Data<Stores>`, `web::Data<Authenticator>`, …), so
//! each handler's signature says what it depends on.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::ids::ConnIdAllocator;

/// Shared, read-mostly facts about this server.
pub struct AppState {
    /// This node's name.
    pub node: String,
    /// `Origin` values allowed at the upgrade and by CORS (config plus, in dev mode, our own).
    pub allowed_origins: Arc<HashSet<String>>,
    /// The port of the TLS listener, when it speaks TLS: responses get HSTS, and the redirect
    /// port points here.
    pub tls_port: Option<u16>,
    /// Where the redirect port sends clients (`tls.redirect_origin`, or this listener's own
    /// address): never the request's `Host`.
    pub redirect_origin: String,
    /// Cookies get `Secure`: on TLS, or when the config says TLS is terminated in front.
    pub secure_cookies: bool,
    pub conn_ids: ConnIdAllocator,
    /// Set when a graceful stop begins: `/readyz` fails and new upgrades are refused.
    pub(crate) draining: AtomicBool,
    pub started: Instant,
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

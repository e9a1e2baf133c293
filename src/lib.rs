//! authchat: a chat server that gets WebSocket authentication right.
//!
//! # Layout
//! - [`config`]: typed, layered configuration, validated at start.
//! - [`startup`]: [`startup::Application`] binds, wires and runs the server.
//! - [`auth`]: the one [`auth::authenticator::Authenticator`] per mode, built at start-up;
//!   token verification and minting ([`auth::jwt`]), the user directory
//!   ([`auth::password`]), throttled password login ([`auth::login`]) behind a cap on concurrent
//!   hashing ([`auth::hashing`]), the revocation check ([`auth::revocation`]), an identity
//!   provider's keys from a file or fetched over HTTPS ([`auth::jwks`]). No HTTP serving in
//!   here; the one HTTP client fetches those keys.
//! - [`registry`]: the actor that knows every connection, its expiry and its rooms; it warns,
//!   force-closes at `exp`, fans messages out and serves the admin API.
//! - [`store`]: refresh tokens, tickets, revocation marks, sessions and failed-login counters
//!   behind small async traits; in memory by default, or in Redis.
//! - [`chat`]: rooms, membership, history, and who may be in a room (rules, private rooms,
//!   direct conversations) as plain data.
//! - [`protocol`]: the JSON messages and close codes.
//! - [`ws`]: the upgrade (credential checked first), the bounded wire ([`ws::transport`]) and
//!   the per-socket actor.
//! - [`http`]: REST API, admin API, health and metrics, the access log, the client's address
//!   (behind trusted proxies too).
//! - [`tls`]: rustls, with the certificate re-read on SIGHUP.
//! - [`healthcheck`]: `authchat healthcheck`, the server's own `/healthz` asked from outside.
//! - [`principal`]: who a credential proves, as plain data below the stores.
//! - [`metrics`], [`telemetry`], [`ratelimit`], [`ids`], [`time`], [`state`]: support.
//! - `testkit` (feature `testkit`, for the tests and `bench/`): tokens signed as a client's
//!   identity provider signs them.
//!
//! The modules form layers without cycles; the `layering` test below enforces the order.

pub mod auth;
pub mod chat;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod fleet;
pub mod healthcheck;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod principal;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod time;
pub mod tls;
pub mod ws;

/// The layers, lowest first: a module may `use crate::` only modules of lower layers, so there
/// are no cycles and the domain never depends on the transport. The test reads the sources.
#[cfg(test)]
mod layering {
    const LAYERS: &[&[&str]] = &[
        &["ids", "time", "testkit"],
        &["config"],
        &["principal", "metrics", "telemetry", "tls"],
        &["ratelimit"],
        &["store"],
        &["auth"],
        &["protocol"],
        &["chat"],
        &["cluster"],
        &["registry"],
        &["fleet"],
        &["state"],
        &["http"],
        &["ws"],
        &["startup", "healthcheck"],
        &["cli"],
    ];

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|layer| layer.contains(&module))
    }

    /// Every `crate::<module>` a file names, outside comments.
    fn uses(source: &str) -> Vec<String> {
        let code: String = source.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        code.match_indices("crate::")
            .map(|(i, _)| code[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>())
            .collect()
    }

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn no_module_uses_a_module_of_its_own_or_a_higher_layer() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut upward = Vec::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let module = relative.split(['/', '.']).next().unwrap().to_owned();
            if module == "lib" || module == "main" {
                continue;
            }
            let own = layer_of(&module).unwrap_or_else(|| panic!("src/{relative}: add module `{module}` to LAYERS"));
            for used in uses(&std::fs::read_to_string(&file).unwrap()) {
                if used == module {
                    continue;
                }
                let layer = layer_of(&used).unwrap_or_else(|| panic!("src/{relative}: unknown module crate::{used}"));
                if layer >= own {
                    upward.push(format!("src/{relative}: {module} uses crate::{used}"));
                }
            }
        }
        assert!(upward.is_empty(), "uses that point up or sideways in the layers:\n{}", upward.join("\n"));
    }
}

//! authchat: a chat server that gets WebSocket authentication right.
//!
//! # Layout
//! - [`config`]: typed, layered configuration, validated at start.
//! - [`startup`]: [`startup::Application`] binds, wires and runs the server.
//! - [`auth`]: token verification and minting ([`auth::jwt`]), the user directory
//!   ([`auth::password`]), throttled password login ([`auth::login`]) behind a cap on concurrent
//!   hashing ([`auth::hashing`]), the revocation check ([`auth::revocation`]), JWKS files
//!   ([`auth::jwks`]). No HTTP in here.
//! - [`registry`]: the actor that knows every connection, its expiry and its rooms; it warns,
//!   force-closes at `exp`, fans messages out and serves the admin API.
//! - [`store`]: refresh tokens, tickets, revocation marks, sessions and failed-login counters
//!   behind small async traits; in memory by default, or in Redis.
//! - [`chat`]: rooms, membership and history as plain data.
//! - [`protocol`]: the JSON messages and close codes.
//! - [`ws`]: the upgrade (credential checked first) and the per-socket actor.
//! - [`http`]: REST API, admin API, health and metrics, the access log.
//! - [`tls`]: rustls, with the certificate re-read on SIGHUP.
//! - [`metrics`], [`telemetry`], [`ratelimit`], [`ids`], [`time`], [`state`]: support.

pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod ws;

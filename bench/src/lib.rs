//! authchat-bench: what a connection and a message cost on authchat, measured over loopback,
//! and side by side on two peer servers that speak the same subset of its protocol.
//!
//! # Layout
//! - [`cli`]: the command line, one subcommand per scenario plus `compare`.
//! - [`target`]: the servers under test: authchat (its release binary as a child process, in
//!   this process, or already running), the peers in `bench/peers/`, and several authchat
//!   nodes sharing a private redis-server.
//! - [`client`]: opening sockets: tokens, source addresses across 127.0.0.0/8, the carrier of
//!   the credential, and the server frames the scenarios read.
//! - [`scenario`]: connect, hold, fanout (one node or several), ops, expiry, churn, slow.
//! - [`compare`]: the side-by-side table: each target in turn, round after round, and medians.
//! - [`sys`]: what /proc says: RSS, CPU per thread, how busy the machine is, open-file limits.
//! - [`http`]: the few plain HTTP requests the tool makes, and a Prometheus text parser.
//! - [`stats`]: percentiles, medians and distributions.
//!
//! Every connection goes to a loopback address and every wait is bounded, so a run stops by
//! itself; servers it started are stopped when it ends.

pub mod cli;
pub mod client;
pub mod compare;
pub mod http;
pub mod scenario;
pub mod stats;
pub mod sys;
pub mod target;

//! Integration tests: the real server on port 0, driven over real HTTP and WebSocket
//! connections. One binary, so the crate is linked once.

mod admin;
mod binary;
mod chat;
mod connection;
mod echo;
mod edges;
mod expiry;
mod frames;
#[path = "../support/mod.rs"]
mod helpers;
mod hostile;
mod idp;
mod jwks;
mod jwks_https;
mod keys;
mod lifecycle;
mod limits;
mod node;
mod ops;
mod ordering;
mod proxy;
mod rooms;
mod sessions;
mod shared;
mod strict;
mod tls;
mod upgrade;

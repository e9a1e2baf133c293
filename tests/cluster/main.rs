//! Issue 12, several nodes as one chat on Redis: three real `authchat serve` processes
//! (`n1`, `n2`, `n3`) and the redis-server they share, started by each test and driven over
//! real sockets. Needs `redis-server` on the PATH.
//!
//! # Layout
//! - `harness`: the cluster, its nodes (start, SIGTERM, SIGKILL, restart) and [`harness::Member`],
//!   a socket that records what it was sent.
//! - `delivery`: messages across nodes, one id order, node identity.
//! - `recovery`: `since` on another node and after a node restart.
//! - `presence`: members across nodes, and a killed node's users leaving.
//! - `admin`: operator actions and logins ended on one node, sockets closed on another.
//! - `faults`: Redis restarted, pub/sub connections killed.
//! - `rooms`: private rooms, direct conversations and kicks, enforced by every node.
//! - `shards` and `sharded` (issue 14): a real Redis Cluster (three primaries, one replica
//!   each) and the chat on it: sharded channels, every store, and a primary's failover.

mod admin;
mod delivery;
mod faults;
mod harness;
#[path = "../support/mod.rs"]
mod helpers;
mod presence;
mod recovery;
mod rooms;
mod sharded;
mod shards;

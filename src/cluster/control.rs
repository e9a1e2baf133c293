//! Operator requests across nodes, over Redis pub/sub (as Socket.IO's Redis adapter does for
//! fetchSockets and disconnectSockets): a request goes out on the control channel, every
//! other live node answers on the requester's own channel, and the requester waits at most
//! `cluster.request_timeout`, then names the nodes that did not answer. Who must answer comes
//! from the heartbeats (the live-node set), not from Redis's subscriber count, which counts
//! hung subscribers and names nobody.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::Engine;
use crate::chat::access::RoomAccess;
use crate::ids::{ConnId, RoomId, SessionId, UserId};

/// What a node is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlOp {
    /// List its connections (of one user).
    List { user: Option<UserId> },
    /// Close one connection, by id.
    CloseConnection { conn_id: ConnId, code: u16, reason: String },
    /// Close every connection of a user.
    CloseUser { user: UserId, code: u16, reason: String },
    /// Close every connection of one login or server-side session.
    CloseSession { session_id: SessionId, code: u16, reason: String },
    /// List the rooms it follows (or, alone, keeps): users, last message id, list.
    ListRooms,
    /// A room's list changed (written to Redis): keep it if newer, put out whoever it no
    /// longer lets in, and tell `invited` (let in by `by`) on their sockets.
    RoomAccess { room: RoomId, access: RoomAccess, invited: Vec<UserId>, by: Option<UserId> },
    /// An operator withdrew `role` from `user`: their sockets no longer hold it, and leave the
    /// rooms only it let them into.
    WithdrawRole { user: UserId, role: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlRequest {
    pub id: String,
    pub from: String,
    #[serde(flatten)]
    pub op: ControlOp,
}

/// One node's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControlReply {
    #[serde(default)]
    pub re: String,
    pub node: String,
    /// Connections it closed (or, for `RoomAccess` and `WithdrawRole`, the times it put a socket
    /// out of a room).
    #[serde(default)]
    pub closed: usize,
    /// Its connections, for a `List`; its rooms, for a `ListRooms`.
    #[serde(default)]
    pub rows: Vec<serde_json::Value>,
}

/// The other nodes' answers to one request.
#[derive(Debug, Default)]
pub struct Gathered {
    pub replies: Vec<ControlReply>,
    /// Live nodes that did not answer within `cluster.request_timeout`.
    pub missing: Vec<String>,
}

/// Requests waiting for answers.
#[derive(Default)]
pub(super) struct Pending(Mutex<HashMap<String, Waiting>>);

struct Waiting {
    expected: BTreeSet<String>,
    replies: Vec<ControlReply>,
    done: Option<oneshot::Sender<()>>,
}

impl Pending {
    /// Takes an answer off the node's reply channel.
    pub(super) fn answer(&self, payload: &str) {
        let Ok(reply) = serde_json::from_str::<ControlReply>(payload) else {
            tracing::warn!("ignored a malformed control reply");
            return;
        };
        let mut pending = self.0.lock().expect("not poisoned");
        let Some(waiting) = pending.get_mut(&reply.re) else { return };
        if waiting.expected.remove(&reply.node) {
            waiting.replies.push(reply);
        }
        if waiting.expected.is_empty() {
            if let Some(done) = waiting.done.take() {
                let _ = done.send(());
            }
        }
    }
}

impl Engine {
    /// Asks every other live node; answers what came back in time and who stayed silent.
    /// Never waits longer than `cluster.request_timeout` (plus one Redis round trip).
    pub async fn request(&self, op: ControlOp) -> Gathered {
        let peers: BTreeSet<String> = self.live_peers().await.into_iter().collect();
        if peers.is_empty() {
            return Gathered::default();
        }
        let id = crate::ids::random_id(16);
        let (done, finished) = oneshot::channel();
        let waiting = Waiting { expected: peers.clone(), replies: Vec::new(), done: Some(done) };
        self.inner.pending.0.lock().expect("not poisoned").insert(id.clone(), waiting);
        let request = ControlRequest { id: id.clone(), from: self.inner.node.clone(), op };
        let body = serde_json::to_string(&request).expect("control requests serialise");
        let sent: Result<i64, _> =
            redis::cmd("PUBLISH").arg(self.control_channel()).arg(body).query_async(&mut self.conn()).await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not send an operator request to the other nodes");
        } else {
            let _ = tokio::time::timeout(self.inner.request_timeout, finished).await;
        }
        let waiting = self.inner.pending.0.lock().expect("not poisoned").remove(&id).expect("only removed here");
        Gathered { replies: waiting.replies, missing: waiting.expected.into_iter().collect() }
    }

    /// The other nodes with a recent heartbeat, read now (a node started since this one's
    /// last heartbeat counts too); the last heartbeat's list when Redis cannot be asked.
    async fn live_peers(&self) -> Vec<String> {
        let since = crate::time::now_unix_ms().saturating_sub(self.inner.node_timeout.as_millis() as u64);
        let live: Result<Vec<String>, _> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key("{c}:nodes"))
            .arg(since)
            .arg("+inf")
            .query_async(&mut self.conn())
            .await;
        match live {
            Ok(live) => live.into_iter().filter(|n| *n != self.inner.node).collect(),
            Err(_) => self.inner.peers.lock().expect("not poisoned").clone(),
        }
    }

    /// Answers another node's request.
    pub async fn reply(&self, to: &str, reply: ControlReply) {
        let body = serde_json::to_string(&reply).expect("control replies serialise");
        // A node's channels are sharded on a cluster: only the shard of `{n:<node>}` carries them.
        let sent: Result<i64, _> = redis::cmd(self.inner.publish_command)
            .arg(self.node_channel(to, "ctl"))
            .arg(body)
            .query_async(&mut self.conn())
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, to, "could not answer another node's operator request");
        }
    }
}

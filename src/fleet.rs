//! Operator actions over every node: list connections, close them by id, user or login.
//! The local registry answers for this node; with several nodes (`store.backend = "redis"`)
//! the others are asked through Redis at the same time, and the answer counts every node's
//! part and names the nodes that did not answer within `cluster.request_timeout`. It never
//! waits longer than that.

use std::collections::BTreeMap;

use actix::{Addr, MailboxError};
use serde::Serialize;

use crate::cluster::{ControlOp, Engine, Health};
use crate::registry::{Execute, Registry};

/// Every node's connections, as one.
#[derive(Clone)]
pub struct Fleet {
    node: String,
    registry: Addr<Registry>,
    engine: Option<Engine>,
}

/// What a close did, over every node.
#[derive(Debug, Default, Serialize)]
pub struct Tally {
    pub closed: usize,
    /// Closes per node that answered (this one included).
    pub nodes: BTreeMap<String, usize>,
    /// Live nodes that did not answer in time: their sockets may still be open.
    pub missing: Vec<String>,
}

/// Connections over every node.
#[derive(Debug, Default, Serialize)]
pub struct Listing {
    pub connections: Vec<serde_json::Value>,
    pub missing: Vec<String>,
}

impl Fleet {
    pub fn new(node: String, registry: Addr<Registry>, engine: Option<Engine>) -> Self {
        Self { node, registry, engine }
    }

    /// Closes what `op` names on every node.
    pub async fn close(&self, op: ControlOp) -> Result<Tally, MailboxError> {
        let (local, others) = tokio::join!(self.registry.send(Execute(op.clone())), self.ask_others(op));
        let local = local?;
        let mut tally = Tally { closed: local.closed, missing: others.missing, ..Tally::default() };
        tally.nodes.insert(self.node.clone(), local.closed);
        for reply in others.replies {
            tally.closed += reply.closed;
            tally.nodes.insert(reply.node, reply.closed);
        }
        Ok(tally)
    }

    /// Every node's connections (of one user), by connection id.
    pub async fn list(&self, user: Option<crate::ids::UserId>) -> Result<Listing, MailboxError> {
        let op = ControlOp::List { user };
        let (local, others) = tokio::join!(self.registry.send(Execute(op.clone())), self.ask_others(op));
        let mut connections = local?.rows;
        connections.extend(others.replies.into_iter().flat_map(|r| r.rows));
        connections.sort_by_key(|row| row["conn_id"].as_u64());
        Ok(Listing { connections, missing: others.missing })
    }

    async fn ask_others(&self, op: ControlOp) -> crate::cluster::Gathered {
        match &self.engine {
            Some(engine) => engine.request(op).await,
            None => crate::cluster::Gathered::default(),
        }
    }

    /// With several nodes: leaves the cluster on a clean stop, so that this node's users leave
    /// presence now rather than after `cluster.node_timeout`.
    pub async fn leave_cluster(&self) {
        if let Some(engine) = &self.engine {
            engine.leave_cluster().await;
        }
    }

    /// With several nodes, whether this one is in touch with the others (`/readyz`).
    pub fn health(&self) -> Option<Health> {
        self.engine.as_ref().map(Engine::health)
    }
}

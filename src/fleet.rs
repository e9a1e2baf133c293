//! Operator actions over every node: list connections, close them by id, user or login; list
//! rooms, and change who may be in one.
//! The local registry answers for this node; with several nodes (`store.backend = "redis"`)
//! the others are asked through Redis at the same time, and the answer counts every node's
//! part and names the nodes that did not answer within `cluster.request_timeout`. It never
//! waits longer than that.

use std::collections::BTreeMap;

use actix::{Addr, MailboxError};
use serde::Serialize;

use crate::chat::access::Change;
use crate::cluster::{ControlOp, Engine, Health};
use crate::ids::RoomId;
use crate::registry::{AccessError, ChangeAccess, Execute, Registry, Requester, RoomChanged, RoomRow};

/// Every node's connections, as one.
#[derive(Clone)]
pub struct Fleet {
    node: String,
    registry: Addr<Registry>,
    engine: Option<Engine>,
}

/// What a close (or another operator action) did, over every node.
#[derive(Debug, Default, Serialize)]
pub struct Tally {
    /// Connections closed; for a withdrawn role, the times a socket left a room.
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

/// Rooms over every node.
#[derive(Debug, Default, Serialize)]
pub struct RoomListing {
    pub rooms: Vec<RoomRow>,
    pub missing: Vec<String>,
}

impl Fleet {
    pub fn new(node: String, registry: Addr<Registry>, engine: Option<Engine>) -> Self {
        Self { node, registry, engine }
    }

    /// Closes what `op` names on every node (or carries out another op that counts what it did).
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

    /// Every node's rooms, merged by name: the users in them on any node, and the newest list.
    pub async fn list_rooms(&self) -> Result<RoomListing, MailboxError> {
        let op = ControlOp::ListRooms;
        let (local, others) = tokio::join!(self.registry.send(Execute(op.clone())), self.ask_others(op));
        let rows = local?.rows.into_iter().chain(others.replies.into_iter().flat_map(|r| r.rows));
        let mut rooms: BTreeMap<RoomId, RoomRow> = BTreeMap::new();
        for row in rows.filter_map(|row| serde_json::from_value::<RoomRow>(row).ok()) {
            match rooms.entry(row.room.clone()) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(row);
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    let held = slot.get_mut();
                    held.members.extend(row.members.iter().cloned());
                    held.members.sort();
                    held.members.dedup();
                    held.messages = held.messages.max(row.messages);
                    if row.version > held.version {
                        *held = RoomRow { members: std::mem::take(&mut held.members), messages: held.messages, ..row };
                    }
                }
            }
        }
        Ok(RoomListing { rooms: rooms.into_values().collect(), missing: others.missing })
    }

    /// An operator's change to who may be in a room; on every node, whoever it puts out leaves.
    pub async fn change_access(
        &self,
        room: RoomId,
        change: Change,
    ) -> Result<Result<RoomChanged, AccessError>, MailboxError> {
        self.registry.send(ChangeAccess { room, change, requester: Requester::Operator }).await
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

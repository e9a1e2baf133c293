//! What operators ask of the registry: list connections, close them, counts.

use actix::prelude::*;

use super::*;
use crate::chat::access::RoomAccess;
use crate::cluster::{ControlOp, ControlReply};

impl Registry {
    /// An operator request, from this node's HTTP API or another node's: what it did here.
    pub(super) fn execute(&mut self, op: ControlOp) -> ControlReply {
        let node = self.config.node.clone();
        let ids: Vec<ConnId> = match &op {
            ControlOp::List { user } => {
                let rows =
                    self.rows(user.as_ref()).into_iter().map(|row| serde_json::to_value(row).expect("rows serialise"));
                return ControlReply { node, rows: rows.collect(), ..ControlReply::default() };
            }
            ControlOp::CloseConnection { conn_id, .. } => vec![*conn_id],
            ControlOp::CloseUser { user, .. } => self.by_user.get(user).into_iter().flatten().copied().collect(),
            ControlOp::CloseSession { session_id, .. } => {
                self.by_session.get(session_id).into_iter().flatten().copied().collect()
            }
            ControlOp::ListRooms => {
                let rows = self.room_rows().into_iter().map(|row| serde_json::to_value(row).expect("rows serialise"));
                return ControlReply { node, rows: rows.collect(), ..ControlReply::default() };
            }
            ControlOp::RoomAccess { room, access, invited, by } => {
                let (left, _) = self.access_changed(room, access, invited, by.as_ref());
                return ControlReply { node, closed: left, ..ControlReply::default() };
            }
            ControlOp::WithdrawRole { user, role } => {
                let left = self.withdraw_role(user, role);
                return ControlReply { node, closed: left, ..ControlReply::default() };
            }
        };
        let (ControlOp::CloseConnection { code, reason, .. }
        | ControlOp::CloseUser { code, reason, .. }
        | ControlOp::CloseSession { code, reason, .. }) = op
        else {
            unreachable!("the lists are answered above")
        };
        let reason = crate::protocol::close::known_reason(&reason);
        let closed = ids.into_iter().filter(|id| self.close(*id, code, reason)).count();
        ControlReply { node, closed, ..ControlReply::default() }
    }

    /// The rooms this node keeps (alone) or follows (with several nodes: the others follow
    /// theirs), by name.
    fn room_rows(&self) -> Vec<RoomRow> {
        let row = |room: &RoomId, members: Vec<UserId>, messages: u64, access: Option<&RoomAccess>| {
            let access = access.cloned().unwrap_or_else(RoomAccess::public);
            let view = access.view();
            RoomRow {
                room: room.clone(),
                kind: view.kind,
                owner: view.owner,
                allowed: view.allowed,
                kicked: access.kicked.into_iter().collect(),
                version: access.version,
                members,
                messages,
            }
        };
        let mut rows: Vec<RoomRow> = match self.engine() {
            None => self
                .rooms
                .summaries()
                .map(|(room, users, last)| row(room, users, last, self.rooms.access(room)))
                .collect(),
            Some(_) => self
                .feeds
                .iter()
                .map(|(room, feed)| {
                    let mut users: Vec<UserId> = feed.users.iter().cloned().chain(self.rooms.users(room)).collect();
                    users.sort();
                    users.dedup();
                    row(room, users, self.rooms.last_id(room), feed.access.as_ref())
                })
                .collect(),
        };
        rows.sort_by(|a, b| a.room.cmp(&b.room));
        rows
    }

    /// Connections (of one user), oldest first.
    fn rows(&self, user: Option<&UserId>) -> Vec<ConnectionInfo> {
        let mut rows: Vec<ConnectionInfo> = match user {
            Some(user) => self
                .by_user
                .get(user)
                .into_iter()
                .flatten()
                .filter_map(|id| self.conns.get(id).map(|c| self.info(*id, c)))
                .collect(),
            None => self.conns.iter().map(|(id, c)| self.info(*id, c)).collect(),
        };
        rows.sort_by_key(|r| r.conn_id);
        rows
    }
}

impl Handler<Execute> for Registry {
    type Result = MessageResult<Execute>;

    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) -> Self::Result {
        let reply = self.execute(msg.0);
        self.arm_timer(ctx);
        MessageResult(reply)
    }
}

impl Handler<ListConnections> for Registry {
    type Result = MessageResult<ListConnections>;

    /// Lists connections, oldest first.
    fn handle(&mut self, msg: ListConnections, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.rows(msg.user.as_ref()))
    }
}

impl Handler<CloseConnection> for Registry {
    type Result = bool;

    fn handle(&mut self, msg: CloseConnection, ctx: &mut Context<Self>) -> bool {
        self.close_many(vec![msg.conn_id], msg.code, msg.reason, ctx) == 1
    }
}

impl Handler<CloseUser> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseUser, ctx: &mut Context<Self>) -> usize {
        let ids = self.by_user.get(&msg.user).into_iter().flatten().copied().collect();
        self.close_many(ids, msg.code, msg.reason, ctx)
    }
}

impl Handler<CloseSession> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) -> usize {
        let ids = self.by_session.get(&msg.session_id).into_iter().flatten().copied().collect();
        self.close_many(ids, msg.code, msg.reason, ctx)
    }
}

impl Handler<CloseAll> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, ctx: &mut Context<Self>) -> usize {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in &ids {
            if let (Some(farewell), Some(conn)) = (&msg.farewell, self.conns.get(id)) {
                conn.outbox.do_send(Outbound::Frame(farewell.clone()));
            }
            self.close(*id, msg.code, msg.reason);
        }
        self.arm_timer(ctx);
        ids.len()
    }
}

impl Handler<ListSessionIds> for Registry {
    type Result = MessageResult<ListSessionIds>;

    fn handle(&mut self, _: ListSessionIds, _: &mut Context<Self>) -> Self::Result {
        let session_bound = |ids: &ConnSet| {
            ids.iter()
                .any(|id| self.conns.get(id).and_then(|c| c.identity.as_ref()).is_some_and(Identity::session_bound))
        };
        MessageResult(
            self.by_session.iter().filter(|(_, ids)| session_bound(ids)).map(|(sid, _)| sid.clone()).collect(),
        )
    }
}

impl Handler<GetStats> for Registry {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Stats {
            node: self.config.node.clone(),
            connections: self.conns.len(),
            closing: self.closing.len(),
            authenticated: self.conns.values().filter(|c| c.identity.is_some()).count(),
            users: self.by_user.len(),
            rooms: self.rooms.len(),
        })
    }
}

//! What operators ask of the registry: list connections, close them, counts.

use std::collections::HashSet;

use actix::prelude::*;

use super::*;

impl Handler<ListConnections> for Registry {
    type Result = MessageResult<ListConnections>;

    /// Lists connections, oldest first.
    fn handle(&mut self, msg: ListConnections, _: &mut Context<Self>) -> Self::Result {
        let mut rows: Vec<ConnectionInfo> = match &msg.user {
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
        MessageResult(rows)
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
        let session_bound = |ids: &HashSet<ConnId>| {
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

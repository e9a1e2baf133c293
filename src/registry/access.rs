//! Who may be in a room, enforced. Every join is checked against the rules and the room's own
//! list (`chat::access`); whenever an identity (a renewal), a rule (SIGHUP) or a list changes,
//! the connections no longer allowed in a room are put out of it at once, with `left` and a
//! reason, and the others see their presence go.

use actix::prelude::*;

use super::{Identity, Registry, SetRules};
use crate::chat::access::{is_dm_name, Denial, RoomAccess};
use crate::ids::{ConnId, RoomId};
use crate::protocol::{LeaveReason, ServerMessage};

impl Registry {
    /// The room's own list: this node's (one node), or this node's mirror of Redis's.
    pub(super) fn access_of(&self, room: &RoomId) -> Option<&RoomAccess> {
        match self.engine() {
            None => self.rooms.access(room),
            Some(_) => self.feeds.get(room).and_then(|feed| feed.access.as_ref()),
        }
    }

    /// Whether `identity` may be in `room`: the room's list lets its user in (a `dm.` name
    /// without one lets nobody in), and so do the rules.
    pub(super) fn may_enter(&self, identity: &Identity, room: &RoomId) -> Result<(), Denial> {
        match self.access_of(room) {
            Some(access) => access.admits(&identity.user)?,
            None if is_dm_name(room) => return Err(Denial::NotOpened),
            None => {}
        }
        self.rules.check(room, &identity.grants)
    }

    /// Takes a connection out of a room: `left` (with `reason` when the server decided), and
    /// its user's departure for the others if it was their last socket there. False if it was
    /// not in the room.
    pub(super) fn take_out(&mut self, conn_id: ConnId, room: &RoomId, reason: Option<LeaveReason>) -> bool {
        let Some(user) = self.user_of(conn_id) else { return false };
        let Some(user_left) = self.rooms.leave(room, conn_id, self.clock.now_ms()) else { return false };
        if let Some(conn) = self.conns.get_mut(&conn_id) {
            conn.rooms.remove(room);
        }
        self.send(conn_id, &ServerMessage::Left { room: room.clone(), reason });
        self.left_room(room, &user, user_left);
        true
    }

    /// Puts the connection out of every room it may no longer be in; answers how many.
    pub(super) fn recheck_conn(&mut self, conn_id: ConnId) -> usize {
        let Some(conn) = self.conns.get(&conn_id) else { return 0 };
        let Some(identity) = conn.identity.as_ref() else { return 0 };
        let out: Vec<(RoomId, LeaveReason)> = conn
            .rooms
            .iter()
            .filter_map(|room| self.may_enter(identity, room).err().map(|denial| (room.clone(), denial.reason())))
            .collect();
        out.into_iter().filter(|(room, reason)| self.take_out(conn_id, room, Some(*reason))).count()
    }
}

impl Handler<SetRules> for Registry {
    type Result = usize;

    /// New rules for every later join, and at once for every connection in a room.
    fn handle(&mut self, msg: SetRules, _: &mut Context<Self>) -> usize {
        self.rules = msg.rules;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.into_iter().map(|conn_id| self.recheck_conn(conn_id)).sum()
    }
}

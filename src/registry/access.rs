//! Who may be in a room, enforced. Every join is checked against the rules and the room's own
//! list (`chat::access`); whenever an identity (a renewal), a rule (SIGHUP) or a list changes,
//! the connections no longer allowed in a room are put out of it at once, with `left` and a
//! reason, and the others see their presence go.

use actix::prelude::*;

use std::convert::Infallible;

use super::{
    AccessError, ChangeAccess, CreateRoom, Identity, Join, ListOwnRooms, OpenDm, Outbound, Registry, Requester,
    RoomChanged, SetRules,
};
use crate::chat::access::{dm_room, is_dm_name, Actor, ChangeRefusal, Denial, RoomAccess, MAX_ALLOWED};
use crate::cluster::{AccessWriteError, ControlOp, Gathered};
use crate::ids::{ConnId, RoomId, UserId};
use crate::protocol::{Echo, ErrorCode, LeaveReason, RoomEntry, RoomKind, ServerMessage};

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

    /// Puts out of `room` every connection here that may no longer be in it; answers how many.
    pub(super) fn recheck_room(&mut self, room: &RoomId) -> usize {
        let out: Vec<(ConnId, LeaveReason)> = self
            .rooms
            .members(room)
            .filter_map(|conn_id| {
                let identity = self.conns.get(&conn_id)?.identity.as_ref()?;
                self.may_enter(identity, room).err().map(|denial| (conn_id, denial.reason()))
            })
            .collect();
        out.into_iter().filter(|(conn_id, reason)| self.take_out(*conn_id, room, Some(*reason))).count()
    }

    /// An operator withdrew `role` from `user`: their connections here no longer hold it and
    /// leave the rooms it alone let them into; answers how many times one left a room.
    pub(super) fn withdraw_role(&mut self, user: &UserId, role: &str) -> usize {
        let ids: Vec<ConnId> = self.by_user.get(user).into_iter().flatten().copied().collect();
        for conn_id in &ids {
            if let Some(identity) = self.conns.get_mut(conn_id).and_then(|c| c.identity.as_mut()) {
                identity.grants.roles.retain(|held| held != role);
            }
        }
        ids.into_iter().map(|conn_id| self.recheck_conn(conn_id)).sum()
    }

    /// A room's list changed (here, or on another node): the mirror takes it if it is newer,
    /// whoever it no longer lets in leaves, the members still here see the new list, and the
    /// users it let in (`invited`, by `by`) are told on their sockets here. Answers how many
    /// sockets left, and whether the list as members see it changed.
    pub(super) fn access_changed(
        &mut self,
        room: &RoomId,
        access: &RoomAccess,
        invited: &[UserId],
        by: Option<&UserId>,
    ) -> (usize, bool) {
        let before = self.access_of(room).map(RoomAccess::view);
        match self.engine() {
            None => {
                self.rooms.set_access(room, access.clone());
            }
            Some(_) => {
                if let Some(feed) = self.feeds.get_mut(room) {
                    if feed.access.as_ref().is_none_or(|held| held.version < access.version) {
                        feed.access = Some(access.clone());
                    }
                }
            }
        }
        let left = self.recheck_room(room);
        let view = self.access_of(room).map(RoomAccess::view).unwrap_or_default();
        let changed = before.as_ref() != Some(&view);
        if changed {
            self.broadcast(room, &ServerMessage::Access { room: room.clone(), access: view.clone() });
        }
        if let Some(by) = by {
            let frame = ServerMessage::Invited { room: room.clone(), by: by.clone(), access: access.view() }.to_json();
            for conn_id in invited.iter().filter_map(|user| self.by_user.get(user)).flatten() {
                if let Some(conn) = self.conns.get(conn_id) {
                    conn.outbox.do_send(Outbound::Frame(frame.clone()));
                }
            }
        }
        (left, changed)
    }

    /// One node: makes a change to a room's list as `actor` asks.
    fn change_here(
        &mut self,
        room: &RoomId,
        change: &crate::chat::access::Change,
        actor: &Actor,
    ) -> Result<(RoomChanged, bool), AccessError> {
        if !self.rooms.exists(room) {
            return Err(ChangeRefusal::NoRoom(room.clone()).into());
        }
        let mut access = self.rooms.access(room).cloned().unwrap_or_else(RoomAccess::public);
        let applied = access.apply(change, actor)?;
        access.version += 1;
        let by = match actor {
            Actor::User(user) => Some(user.clone()),
            Actor::Operator => None,
        };
        let (left, changed) = self.access_changed(room, &access, &applied.invited, by.as_ref());
        let node = self.config.node.clone();
        let answer =
            RoomChanged { room: room.clone(), access: access.view(), left: [(node, left)].into(), missing: Vec::new() };
        Ok((answer, changed))
    }

    /// Tells a socket that asked for a change how it went: the new list (which, if it is in
    /// the room and the list changed, it has had already), or why not.
    fn answer_change(&self, requester: &Requester, result: &Result<(RoomChanged, bool), AccessError>) {
        let Requester::Conn { conn_id, echo } = requester else { return };
        match result {
            Ok((changed, told)) if *told && self.rooms.is_member(&changed.room, *conn_id) => {}
            Ok((changed, _)) => self
                .send(*conn_id, &ServerMessage::Access { room: changed.room.clone(), access: changed.access.clone() }),
            Err(AccessError::Refused(refusal)) => {
                self.send_error(*conn_id, ErrorCode::Forbidden, echo.clone(), refusal.to_string())
            }
            Err(AccessError::Unavailable(_)) => self.send_error(
                *conn_id,
                ErrorCode::Unavailable,
                echo.clone(),
                "the chat store is unreachable; try again shortly",
            ),
        }
    }

    /// Tells a socket the chat store (Redis) could not be reached for its request.
    fn refuse_unreachable(&self, conn_id: ConnId, echo: Echo, error: &dyn std::fmt::Display) {
        tracing::warn!(error = %error, "a room's list could not be read or written");
        let message = "the chat store is unreachable; try again shortly";
        self.send_error(conn_id, ErrorCode::Unavailable, echo, message);
    }

    /// Several nodes: tells every other node of a list just written to Redis (their sockets it
    /// puts out leave, their users it lets in are told); answers what they did.
    fn tell_others(
        &self,
        room: &RoomId,
        access: &RoomAccess,
        invited: Vec<UserId>,
        by: Option<UserId>,
    ) -> impl std::future::Future<Output = Gathered> + 'static {
        let engine = self.engine().cloned().expect("only with several nodes");
        let op = ControlOp::RoomAccess { room: room.clone(), access: access.clone(), invited, by };
        async move { engine.request(op).await }
    }

    /// Whether the connection may enter one more room; tells it otherwise.
    fn has_room_for_one_more(&self, conn_id: ConnId, echo: &Echo) -> bool {
        let rooms = self.conns.get(&conn_id).map_or(0, |c| c.rooms.len());
        let limit = self.config.max_rooms_per_connection;
        if rooms < limit {
            return true;
        }
        let message = format!("a connection may be in at most {limit} rooms");
        self.send_error(conn_id, ErrorCode::TooManyRooms, echo.clone(), message);
        false
    }

    /// A room was just opened with its list (`by` its creator): the users it lets in are told,
    /// here and (several nodes) everywhere, and the connection joins it.
    fn enter_opened(&mut self, join: Join, access: &RoomAccess, by: &UserId, ctx: &mut Context<Self>) {
        let invited: Vec<UserId> = access.allowed.iter().filter(|u| *u != by).cloned().collect();
        self.access_changed(&join.room, access, &invited, Some(by));
        if self.engine().is_some() {
            let told = self.tell_others(&join.room, access, invited, Some(by.clone()));
            actix::spawn(async move {
                told.await;
            });
            return self.join_through_feed(join, ctx);
        }
        if let Some((join, arrival)) = self.admit(join) {
            self.answer_admitted(join, arrival, ctx);
        }
    }
}

impl Handler<CreateRoom> for Registry {
    type Result = ();

    /// Creates the private room (a name no room has) and joins it; the invitees are told.
    fn handle(&mut self, msg: CreateRoom, ctx: &mut Context<Self>) {
        let Some(identity) = self.conns.get(&msg.conn_id).and_then(|c| c.identity.as_ref()) else { return };
        let owner = identity.user.clone();
        if is_dm_name(&msg.room) {
            let message = "names starting with dm. are kept for direct conversations (open one with dm)";
            return self.send_error(msg.conn_id, ErrorCode::InvalidRoom, msg.echo, message);
        }
        if let Err(denial) = self.rules.check(&msg.room, &identity.grants) {
            let message = format!("you may not create {}: {denial}", msg.room);
            return self.send_error(msg.conn_id, ErrorCode::Forbidden, msg.echo, message);
        }
        let access = RoomAccess::private(owner.clone(), msg.invite);
        if access.allowed.len() > MAX_ALLOWED {
            let message = format!("a private room lets in at most {MAX_ALLOWED} users");
            return self.send_error(msg.conn_id, ErrorCode::InvalidField, msg.echo, message);
        }
        if !self.has_room_for_one_more(msg.conn_id, &msg.echo) {
            return;
        }
        let join = Join { conn_id: msg.conn_id, room: msg.room, since: None, epoch: None, echo: msg.echo };
        let exists = |room: &RoomId| format!("a room named {room} exists already: join it, or pick another name");
        let Some(engine) = self.engine().cloned() else {
            if self.rooms.exists(&join.room) {
                return self.send_error(join.conn_id, ErrorCode::RoomExists, join.echo, exists(&join.room));
            }
            let access = RoomAccess { version: 1, ..access };
            if let Err(e) = self.rooms.open(&join.room, &owner, access.clone(), self.clock.now_ms()) {
                return self.send_error(join.conn_id, ErrorCode::TooManyRooms, join.echo, e.to_string());
            }
            return self.enter_opened(join, &access, &owner, ctx);
        };
        let room = join.room.clone();
        let write = async move {
            let written = engine.update_access(&room, true, |_| Ok::<_, Infallible>((access.clone(), ()))).await;
            if let Ok((access, ())) = &written {
                engine.index_rooms(&room, &access.allowed.iter().cloned().collect::<Vec<_>>(), &[]).await;
            }
            written
        };
        ctx.spawn(write.into_actor(self).map(move |written, registry, ctx| match written {
            Ok((access, ())) => registry.enter_opened(join, &access, &owner, ctx),
            Err(AccessWriteError::Exists) => {
                registry.send_error(join.conn_id, ErrorCode::RoomExists, join.echo, exists(&join.room))
            }
            Err(AccessWriteError::Unavailable(e)) => registry.refuse_unreachable(join.conn_id, join.echo, &e),
            Err(AccessWriteError::Refused(never)) => match never {},
        }));
    }
}

impl Handler<OpenDm> for Registry {
    type Result = ();

    /// Opens the conversation the first time (telling the other user) and joins it.
    fn handle(&mut self, msg: OpenDm, ctx: &mut Context<Self>) {
        let Some(identity) = self.conns.get(&msg.conn_id).and_then(|c| c.identity.as_ref()) else { return };
        let user = identity.user.clone();
        if msg.with == user {
            let message = "a direct conversation is with someone else";
            return self.send_error(msg.conn_id, ErrorCode::InvalidField, msg.echo, message);
        }
        let room = dm_room(&user, &msg.with);
        let echo = Echo { room: Some(room.to_string()), ..msg.echo };
        if let Err(denial) = self.rules.check(&room, &identity.grants) {
            let message = format!("you may not open a direct conversation: {denial}");
            return self.send_error(msg.conn_id, ErrorCode::Forbidden, echo, message);
        }
        if !self.has_room_for_one_more(msg.conn_id, &echo) {
            return;
        }
        let join = Join { conn_id: msg.conn_id, room: room.clone(), since: None, epoch: None, echo };
        let fresh = RoomAccess::direct(user.clone(), msg.with);
        let Some(engine) = self.engine().cloned() else {
            if self.rooms.access(&room).is_some() {
                if let Some((join, arrival)) = self.admit(join) {
                    self.answer_admitted(join, arrival, ctx);
                }
                return;
            }
            let access = RoomAccess { version: 1, ..fresh };
            if let Err(e) = self.rooms.open(&room, &user, access.clone(), self.clock.now_ms()) {
                return self.send_error(join.conn_id, ErrorCode::TooManyRooms, join.echo, e.to_string());
            }
            return self.enter_opened(join, &access, &user, ctx);
        };
        // Written even when it exists: that gives the room an epoch, so a conversation quiet
        // past its TTL is taken up again rather than dropped as a room starting over.
        let write = async move {
            let written = engine
                .update_access(&room, false, |read| match read.access {
                    Some(held) if held.kind == RoomKind::Dm => Ok::<_, Infallible>((held, false)),
                    _ => Ok((fresh.clone(), true)),
                })
                .await;
            if let Ok((access, true)) = &written {
                engine.index_rooms(&room, &access.allowed.iter().cloned().collect::<Vec<_>>(), &[]).await;
            }
            written
        };
        ctx.spawn(write.into_actor(self).map(move |written, registry, ctx| match written {
            Ok((access, true)) => registry.enter_opened(join, &access, &user, ctx),
            Ok((_, false)) => registry.join_through_feed(join, ctx),
            Err(AccessWriteError::Unavailable(e)) => registry.refuse_unreachable(join.conn_id, join.echo, &e),
            Err(AccessWriteError::Exists) => unreachable!("a conversation need not be new"),
            Err(AccessWriteError::Refused(never)) => match never {},
        }));
    }
}

impl Handler<ListOwnRooms> for Registry {
    type Result = ();

    /// Answers `rooms`: the private rooms and conversations the user may join, by name.
    fn handle(&mut self, msg: ListOwnRooms, ctx: &mut Context<Self>) {
        let Some(identity) = self.conns.get(&msg.conn_id).and_then(|c| c.identity.as_ref()) else { return };
        let Some(engine) = self.engine().cloned() else {
            let mut rooms: Vec<RoomEntry> = self
                .rooms
                .accesses()
                .filter(|(room, access)| access.kind != RoomKind::Public && self.may_enter(identity, room).is_ok())
                .map(|(room, access)| RoomEntry { room: room.clone(), access: access.view() })
                .collect();
            rooms.sort_by(|a, b| a.room.cmp(&b.room));
            return self.send(msg.conn_id, &ServerMessage::Rooms { rooms });
        };
        let (user, grants) = (identity.user.clone(), identity.grants.clone());
        let read = async move { engine.rooms_of(&user).await };
        ctx.spawn(read.into_actor(self).map(move |listed, registry, _| match listed {
            Ok(listed) => {
                let rooms = listed
                    .into_iter()
                    .filter(|(room, _)| registry.rules.check(room, &grants).is_ok())
                    .map(|(room, access)| RoomEntry { room, access: access.view() })
                    .collect();
                registry.send(msg.conn_id, &ServerMessage::Rooms { rooms });
            }
            Err(e) => registry.refuse_unreachable(msg.conn_id, msg.echo, &e),
        }));
    }
}

impl Handler<ChangeAccess> for Registry {
    type Result = ResponseActFuture<Self, Result<RoomChanged, AccessError>>;

    /// Invites or kicks, for a private room's owner or an operator; with several nodes, written
    /// to Redis and then made known to every node, whose tallies the answer carries.
    fn handle(&mut self, msg: ChangeAccess, _: &mut Context<Self>) -> Self::Result {
        let actor = match &msg.requester {
            Requester::Operator => Actor::Operator,
            Requester::Conn { conn_id, .. } => match self.user_of(*conn_id) {
                Some(user) => Actor::User(user),
                None => {
                    return Box::pin(actix::fut::ready(Err(AccessError::Unavailable("the connection is gone".into()))))
                }
            },
        };
        let by = match &actor {
            Actor::User(user) => Some(user.clone()),
            Actor::Operator => None,
        };
        let Some(engine) = self.engine().cloned() else {
            let result = self.change_here(&msg.room, &msg.change, &actor);
            self.answer_change(&msg.requester, &result);
            return Box::pin(actix::fut::ready(result.map(|(changed, _)| changed)));
        };
        let ChangeAccess { room, change, requester } = msg;
        let target = room.clone();
        let write = async move {
            let written = engine
                .update_access(&target, false, |read| {
                    if read.access.is_none() && !read.exists {
                        return Err(AccessError::Refused(ChangeRefusal::NoRoom(target.clone())));
                    }
                    let mut access = read.access.unwrap_or_else(RoomAccess::public);
                    let applied = access.apply(&change, &actor)?;
                    Ok((access, applied))
                })
                .await;
            if let Ok((access, applied)) = &written {
                let listed = if access.kind == RoomKind::Public { &[][..] } else { &applied.invited[..] };
                engine.index_rooms(&target, listed, &applied.kicked).await;
            }
            written.map_err(|e| match e {
                AccessWriteError::Refused(e) => e,
                AccessWriteError::Unavailable(e) => AccessError::Unavailable(e.to_string()),
                AccessWriteError::Exists => unreachable!("a change need not make a new room"),
            })
        };
        let applied = write.into_actor(self).map(move |written, registry, _| {
            let result = written.map(|(access, applied)| {
                let (left, changed) = registry.access_changed(&room, &access, &applied.invited, by.as_ref());
                let node = registry.config.node.clone();
                let answer = RoomChanged {
                    room: room.clone(),
                    access: access.view(),
                    left: [(node, left)].into(),
                    missing: Vec::new(),
                };
                let others = registry.tell_others(&room, &access, applied.invited, by);
                ((answer, changed), others)
            });
            let told = result.as_ref().map(|(answer, _)| answer.clone()).map_err(Clone::clone);
            registry.answer_change(&requester, &told);
            result
        });
        Box::pin(applied.then(|result, _, _| {
            actix::fut::wrap_future(async move {
                let ((mut answer, _), others) = result?;
                let gathered = others.await;
                answer.left.extend(gathered.replies.into_iter().map(|reply| (reply.node, reply.closed)));
                answer.missing = gathered.missing;
                Ok(answer)
            })
        }))
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

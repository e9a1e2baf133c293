//! Several nodes (`store.backend = "redis"`): per room with local members, a feed that keeps
//! the room's mirror in [`crate::chat::Rooms`] whole and in Redis's order.
//!
//! - Following a room subscribes first and reads the room's state after, so nothing is missed
//!   in between; joins wait for that read, and events that arrive meanwhile are buffered and
//!   applied after it (duplicates dropped by id).
//! - Live, a message with the next id is mirrored and sent to every local member (serialised
//!   once); an older id is a duplicate; a newer one means a gap: the feed buffers and refills
//!   from the stream. So does every feed after the subscription was re-established.
//! - A sender's `ack` is held until its message has gone out here, so the sender sees its
//!   message first, as on one node.
//! - An epoch change means Redis lost the room and ids restarted: the mirror starts again and
//!   every local member gets a fresh `joined` with `recovered: false`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use super::{Join, Outbound, Registry};
use crate::chat::access::RoomAccess;
use crate::cluster::{Engine, EngineEvent, RoomState, Unavailable};
use crate::ids::{ConnId, ConnMap, ConnSet, RoomId, UserId};
use crate::protocol::{ChatMessage, ErrorCode, PresenceEvent, ServerMessage};

/// How long a failed refill waits before the next try.
const REFILL_RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Feed {
    /// The numbering the mirror holds ("" until the room's first message).
    pub(super) epoch: String,
    /// A read of the room's state is under way: events are buffered meanwhile.
    loading: bool,
    /// The subscription was re-established during the read: read again after it.
    stale: bool,
    /// The feed delivered before (a failed read is then retried rather than refused).
    was_live: bool,
    buffered: Vec<EngineEvent>,
    waiting: Vec<Join>,
    /// Users in the room on any node.
    pub(super) users: BTreeSet<UserId>,
    /// The room's own list as Redis holds it (the newest version heard of); `None`: it has none.
    pub(super) access: Option<RoomAccess>,
    /// Acks to send once the message with that id has gone out here.
    held_acks: BTreeMap<u64, Vec<(ConnId, ByteString)>>,
    /// Members whose `joined` waits for their user's presence to be written, so that whoever
    /// joins after them on any node sees them: nothing is sent to them meanwhile (their
    /// `joined` then carries the history up to that moment).
    pub(super) unanswered: ConnMap<Join>,
}

impl Registry {
    pub(super) fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// Redis mode: a join waits for the room's feed to be live, starting it if needed.
    pub(super) fn join_through_feed(&mut self, msg: Join, ctx: &mut Context<Self>) {
        match self.feeds.get_mut(&msg.room) {
            Some(feed) if !feed.loading => self.join_now(msg, ctx),
            Some(feed) => feed.waiting.push(msg),
            None => {
                let room = msg.room.clone();
                self.feeds.insert(room.clone(), Feed { loading: true, waiting: vec![msg], ..Feed::default() });
                let engine = self.engine.clone().expect("feeds exist only in Redis mode");
                let target = room.clone();
                let follow = async move {
                    engine.follow(&target).await?;
                    engine.room_state(&target).await
                };
                ctx.spawn(follow.into_actor(self).map(move |state, registry, ctx| registry.loaded(room, state, ctx)));
            }
        }
    }

    /// Reads the room's state again (after a gap, or a new subscription).
    pub(super) fn refill(&mut self, room: &RoomId, ctx: &mut Context<Self>) {
        let Some(feed) = self.feeds.get_mut(room) else { return };
        if feed.loading {
            feed.stale = true;
            return;
        }
        feed.loading = true;
        let engine = self.engine.clone().expect("feeds exist only in Redis mode");
        let (room, target) = (room.clone(), room.clone());
        let read = async move { engine.room_state(&target).await };
        ctx.spawn(read.into_actor(self).map(move |state, registry, ctx| registry.loaded(room, state, ctx)));
    }

    /// The room's state arrived (or could not be read).
    fn loaded(&mut self, room: RoomId, state: Result<RoomState, Unavailable>, ctx: &mut Context<Self>) {
        self.metrics.cluster_refills.inc();
        let Some(feed) = self.feeds.get_mut(&room) else { return };
        let state = match state {
            Ok(state) => state,
            Err(e) if feed.was_live || self.rooms.members(&room).next().is_some() => {
                tracing::warn!(error = %e, %room, "could not refill a room from Redis; retrying");
                feed.loading = false;
                ctx.run_later(REFILL_RETRY, move |registry, ctx| registry.refill(&room, ctx));
                return;
            }
            Err(e) => {
                // Nobody is in the room here yet: refuse the joins instead of holding them.
                tracing::warn!(error = %e, %room, "could not follow a room");
                let feed = self.feeds.remove(&room).expect("checked above");
                for join in feed.waiting {
                    self.send_error(
                        join.conn_id,
                        ErrorCode::Unavailable,
                        join.echo,
                        "the chat store is unreachable; join again shortly",
                    );
                }
                self.engine.as_ref().expect("Redis mode").unfollow(&room);
                return;
            }
        };
        let reset = !feed.epoch.is_empty() && !state.epoch.is_empty() && feed.epoch != state.epoch;
        if !state.epoch.is_empty() {
            feed.epoch = state.epoch.clone();
        }
        let users: BTreeSet<UserId> = state.users.into_iter().collect();
        // Arrivals and departures announced while this node was not listening (a new
        // subscription, a gap): told now, so every member ends up with the same picture.
        let mut changes = Vec::new();
        if feed.was_live {
            changes.extend(users.difference(&feed.users).map(|u| (u.clone(), PresenceEvent::Join)));
            changes.extend(feed.users.difference(&users).map(|u| (u.clone(), PresenceEvent::Leave)));
        }
        feed.users = users;
        // The newer of the list read and the one heard of meanwhile (a change read before it
        // was made may arrive after it). None read while one is held: Redis lost it, and the
        // list held keeps the room closed here.
        let access_before = feed.access.clone();
        match (&feed.access, state.access) {
            (Some(held), Some(read)) if held.version >= read.version => {}
            (_, Some(read)) => feed.access = Some(read),
            (_, None) => {}
        }
        let access_changed = feed.access != access_before;
        let waiting = std::mem::take(&mut feed.waiting);
        let buffered = std::mem::take(&mut feed.buffered);
        let stale = std::mem::take(&mut feed.stale);
        feed.loading = false;
        feed.was_live = true;
        if reset {
            self.rooms.reset_history(&room);
        }
        if access_changed {
            self.recheck_room(&room);
        }
        // What this node missed goes to the members it already had, in order; the joiners
        // (members from now on, so that the room exists to hold it) find it in their history.
        let had: ConnSet = self.rooms.members(&room).collect();
        let admitted: Vec<_> = waiting.into_iter().filter_map(|join| self.admit(join)).collect();
        let last = self.rooms.last_id(&room);
        let now = self.clock.now_ms();
        for message in state.messages.into_iter().filter(|m| m.id > last) {
            self.rooms.mirror(message.clone(), now);
            if !reset {
                self.deliver_to(&room, &had, &ServerMessage::Message(message));
            }
        }
        for (user, event) in changes {
            let others: ConnSet = had.iter().copied().filter(|id| !self.is_users(*id, &user)).collect();
            self.deliver_to(&room, &others, &ServerMessage::Presence { room: room.clone(), user, event });
        }
        if reset {
            for conn_id in &had {
                self.answer_join(*conn_id, &room, None, None, Some(false));
            }
        }
        for (join, arrival) in admitted {
            self.answer_admitted(join, arrival, ctx);
        }
        for event in buffered {
            self.on_engine_event(event, ctx);
        }
        self.release_acks(&room);
        if self.rooms.members(&room).next().is_none() {
            self.unfollow(&room);
        } else if stale {
            self.refill(&room, ctx);
        }
    }

    /// Redis mode: answers `join` once the arrival of its user has been written to Redis.
    pub(super) fn answer_when_present(
        &mut self,
        msg: Join,
        written: impl std::future::Future<Output = ()> + 'static,
        ctx: &mut Context<Self>,
    ) {
        let (conn_id, room) = (msg.conn_id, msg.room.clone());
        let Some(feed) = self.feeds.get_mut(&room) else {
            return self.answer_join(conn_id, &room, msg.since, msg.epoch.as_deref(), None);
        };
        feed.unanswered.insert(conn_id, msg);
        ctx.spawn(written.into_actor(self).map(move |(), registry, _| {
            let Some(msg) = registry.feeds.get_mut(&room).and_then(|f| f.unanswered.remove(&conn_id)) else { return };
            if registry.rooms.is_member(&room, conn_id) {
                registry.answer_join(conn_id, &room, msg.since, msg.epoch.as_deref(), None);
            }
        }));
    }

    /// Whether the connection is `user`'s.
    fn is_users(&self, conn_id: ConnId, user: &UserId) -> bool {
        self.conns.get(&conn_id).and_then(|c| c.identity.as_ref()).is_some_and(|i| i.user == *user)
    }

    /// Sends one frame to these connections of `room` (not to those whose `joined` waits).
    fn deliver_to(&self, room: &RoomId, conns: &ConnSet, message: &ServerMessage) {
        let frame = message.to_json();
        let unanswered = self.feeds.get(room).map(|f| &f.unanswered);
        for conn_id in conns.iter().filter(|id| !unanswered.is_some_and(|u| u.contains_key(id))) {
            if let Some(conn) = self.conns.get(conn_id) {
                conn.outbox.do_send(Outbound::Frame(frame.clone()));
            }
        }
    }

    /// Stops following a room with no local member left: its mirror is dropped, since nothing
    /// keeps it current any more.
    pub(super) fn unfollow(&mut self, room: &RoomId) {
        let Some(feed) = self.feeds.get(room) else { return };
        if feed.loading || !feed.waiting.is_empty() {
            return;
        }
        for (conn_id, ack) in self.feeds.remove(room).into_iter().flat_map(|f| f.held_acks.into_values().flatten()) {
            if let Some(conn) = self.conns.get(&conn_id) {
                conn.outbox.do_send(Outbound::Frame(ack));
            }
        }
        self.rooms.reset_history(room);
        self.engine.as_ref().expect("Redis mode").unfollow(room);
    }

    /// Acks the sender once its message went out here (at once if it already did).
    pub(super) fn ack_when_delivered(&mut self, conn_id: ConnId, room: &RoomId, id: u64, ack: ByteString) {
        let delivered = self.rooms.last_id(room) >= id;
        match self.feeds.get_mut(room) {
            Some(feed) if !delivered || feed.loading => feed.held_acks.entry(id).or_default().push((conn_id, ack)),
            _ => {
                if let Some(conn) = self.conns.get(&conn_id) {
                    conn.outbox.do_send(Outbound::Frame(ack));
                }
            }
        }
    }

    fn release_acks(&mut self, room: &RoomId) {
        let last = self.rooms.last_id(room);
        let Some(feed) = self.feeds.get_mut(room) else { return };
        let later = feed.held_acks.split_off(&(last + 1));
        let due = std::mem::replace(&mut feed.held_acks, later);
        for (conn_id, ack) in due.into_values().flatten() {
            if let Some(conn) = self.conns.get(&conn_id) {
                conn.outbox.do_send(Outbound::Frame(ack));
            }
        }
    }

    /// What arrives from Redis.
    pub(super) fn on_engine_event(&mut self, event: EngineEvent, ctx: &mut Context<Self>) {
        match event {
            EngineEvent::Message { epoch, message } => self.on_message(epoch, message, ctx),
            EngineEvent::Presence { room, user, event } => self.on_presence(room, user, event, ctx),
            EngineEvent::Control(request) => {
                let reply = self.execute(request.op);
                self.arm_timer(ctx);
                let engine = self.engine.clone().expect("Redis mode");
                let reply = crate::cluster::ControlReply { re: request.id, ..reply };
                actix::spawn(async move { engine.reply(&request.from, reply).await });
            }
            EngineEvent::PresenceStale => self.sync_presence(),
            EngineEvent::Resubscribed => {
                self.sync_presence();
                let rooms: Vec<RoomId> = self.feeds.keys().cloned().collect();
                for room in rooms {
                    self.refill(&room, ctx);
                }
            }
        }
    }

    /// Hands this node's whole presence to the engine to write (it retries until it can).
    fn sync_presence(&mut self) {
        let present: Vec<(RoomId, Vec<UserId>)> = self.feeds.keys().map(|r| (r.clone(), self.rooms.users(r))).collect();
        self.engine.as_ref().expect("Redis mode").sync_presence(present);
    }

    fn on_message(&mut self, epoch: String, message: Arc<ChatMessage>, ctx: &mut Context<Self>) {
        let room = message.room.clone();
        let Some(feed) = self.feeds.get_mut(&room) else { return };
        if feed.loading {
            feed.buffered.push(EngineEvent::Message { epoch, message });
            return;
        }
        let last = self.rooms.last_id(&room);
        let new_numbering = !feed.epoch.is_empty() && feed.epoch != epoch;
        if !new_numbering && message.id <= last {
            return;
        }
        if new_numbering || message.id > last + 1 {
            feed.buffered.push(EngineEvent::Message { epoch, message });
            return self.refill(&room, ctx);
        }
        if feed.epoch.is_empty() {
            feed.epoch = epoch;
        }
        self.rooms.mirror(message.clone(), self.clock.now_ms());
        self.broadcast(&room, &ServerMessage::Message(message));
        self.release_acks(&room);
    }

    fn on_presence(&mut self, room: RoomId, user: UserId, event: PresenceEvent, _: &mut Context<Self>) {
        let Some(feed) = self.feeds.get_mut(&room) else { return };
        if feed.loading {
            feed.buffered.push(EngineEvent::Presence { room, user, event });
            return;
        }
        let changed = match event {
            PresenceEvent::Join => feed.users.insert(user.clone()),
            PresenceEvent::Leave => feed.users.remove(&user),
        };
        if !changed {
            return;
        }
        // The user's own sockets know already.
        let others: ConnSet = self.rooms.members(&room).filter(|id| !self.is_users(*id, &user)).collect();
        self.deliver_to(&room, &others, &ServerMessage::Presence { room: room.clone(), user, event });
    }
}

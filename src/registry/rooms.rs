//! Rooms: join, leave, publish and history, and the fan-out to members. On one node the
//! registry numbers and stores messages itself; with several (`feeds`), Redis does, and the
//! registry delivers what comes back through the subscription.

use std::collections::VecDeque;

use actix::prelude::*;

use super::{FetchHistory, Join, Leave, Outbound, Publish, Registry};
use crate::chat::{Posted, MAX_REF_LEN};
use crate::ids::{ConnId, RoomId, UserId};
use crate::protocol::{ErrorCode, PresenceEvent, ServerMessage};

impl Handler<Join> for Registry {
    type Result = ();

    /// Adds the connection to the room, answers `joined` with members and history, and
    /// announces the user to the others if this is their first socket there.
    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        if self.engine().is_some() && !self.rooms.is_member(&msg.room, msg.conn_id) {
            return self.join_through_feed(msg, ctx);
        }
        self.join_now(msg, ctx);
    }
}

/// With several nodes: the write of a user's arrival, which the join's answer waits for.
pub(super) type Arrival = Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>;

impl Registry {
    /// Joins at once: on one node, or once the room's feed is live.
    pub(super) fn join_now(&mut self, msg: Join, ctx: &mut Context<Self>) {
        if let Some((msg, arrival)) = self.admit(msg) {
            self.answer_admitted(msg, arrival, ctx);
        }
    }

    /// Answers an admitted join: at once, or once its user's arrival is written.
    pub(super) fn answer_admitted(&mut self, msg: Join, arrival: Arrival, ctx: &mut Context<Self>) {
        match arrival {
            Some(written) => self.answer_when_present(msg, written, ctx),
            None => self.answer_join(msg.conn_id, &msg.room, msg.since, msg.epoch.as_deref(), None),
        }
    }

    /// Makes the connection a member (announcing its user if new there), within the limits;
    /// answers the join to be answered, or `None` when it was refused (and told so).
    pub(super) fn admit(&mut self, msg: Join) -> Option<(Join, Arrival)> {
        let conn = self.conns.get(&msg.conn_id)?;
        let identity = conn.identity.as_ref()?;
        let user = identity.user.clone();
        let member = self.rooms.is_member(&msg.room, msg.conn_id);
        // A member was let in before, and is put out whenever that changes.
        if let Some(denial) = (!member).then(|| self.may_enter(identity, &msg.room).err()).flatten() {
            let message = format!("you may not join {}: {denial}", msg.room);
            self.send_error(msg.conn_id, ErrorCode::Forbidden, msg.echo, message);
            if self.rooms.members(&msg.room).next().is_none() {
                self.unfollow(&msg.room);
            }
            return None;
        }
        let conn_rooms = conn.rooms.len();
        if !member && conn_rooms >= self.config.max_rooms_per_connection {
            let limit = self.config.max_rooms_per_connection;
            let message = format!("a connection may be in at most {limit} rooms");
            self.send_error(msg.conn_id, ErrorCode::TooManyRooms, msg.echo, message);
            return None;
        }
        let joined = match self.rooms.join(&msg.room, msg.conn_id, &user, self.clock.now_ms()) {
            Ok(joined) => joined,
            Err(e) => {
                self.send_error(msg.conn_id, ErrorCode::TooManyRooms, msg.echo, e.to_string());
                if self.rooms.members(&msg.room).next().is_none() {
                    self.unfollow(&msg.room);
                }
                return None;
            }
        };
        if let Some(conn) = self.conns.get_mut(&msg.conn_id) {
            conn.rooms.insert(msg.room.clone());
        }
        let arrival = if joined.user_arrived { self.announce_arrival(&msg.room, &user, msg.conn_id) } else { None };
        Some((msg, arrival))
    }

    /// One node tells the others in the room itself; with several, Redis tells every node
    /// (only if the user was on no node there yet), and the write is to be waited for.
    fn announce_arrival(&mut self, room: &RoomId, user: &UserId, joiner: ConnId) -> Arrival {
        match self.engine() {
            None => {
                let frame =
                    ServerMessage::Presence { room: room.clone(), user: user.clone(), event: PresenceEvent::Join }
                        .to_json();
                for member in self.rooms.members(room).filter(|m| *m != joiner) {
                    if let Some(conn) = self.conns.get(&member) {
                        conn.outbox.do_send(Outbound::Frame(frame.clone()));
                    }
                }
                None
            }
            Some(engine) => Some(Box::pin(engine.announce_and_wait(room, user, PresenceEvent::Join))),
        }
    }

    /// Sends `joined`: members, the room's numbering and last id, and history. With `since`
    /// (in the numbering `epoch`, when given), the history after it and whether that is
    /// complete; when it is not, the whole kept history, for the client to reload from.
    pub(super) fn answer_join(
        &self,
        conn_id: ConnId,
        room: &RoomId,
        since: Option<u64>,
        epoch: Option<&str>,
        recovered: Option<bool>,
    ) {
        let current = match self.engine() {
            Some(_) => self.feeds.get(room).map(|f| f.epoch.clone()).unwrap_or_default(),
            None => self.config.epoch.clone(),
        };
        let recovered = recovered
            .or_else(|| since.map(|s| epoch.is_none_or(|e| e == current) && self.rooms.holds_all_after(room, s)));
        let after = since.filter(|_| recovered == Some(true));
        let history = self.rooms.history(room, after, None, self.config.history_size);
        let mut members = self.rooms.users(room);
        if let Some(feed) = self.feeds.get(room) {
            members.extend(feed.users.iter().cloned());
            members.sort();
            members.dedup();
        }
        let offset = self.rooms.last_id(room);
        let access = self.access_of(room).map(crate::chat::access::RoomAccess::view).unwrap_or_default();
        let joined =
            ServerMessage::Joined { room: room.clone(), members, history, epoch: current, offset, recovered, access };
        self.send(conn_id, &joined);
    }

    /// Several nodes: posts the connection's next waiting message through Redis; the next one
    /// goes once this one is answered, so one sender's messages keep their order.
    fn post_next(&mut self, conn_id: ConnId, ctx: &mut Context<Self>) {
        let Some(engine) = self.engine().cloned() else { return };
        // A message waiting for a room its sender has been put out of meanwhile is not posted.
        while let Some(room) = self.posting.get(&conn_id).and_then(|queue| queue.front()).map(|m| m.room.clone()) {
            if self.rooms.is_member(&room, conn_id) {
                break;
            }
            let msg = self.posting.get_mut(&conn_id).and_then(VecDeque::pop_front).expect("seen just above");
            let message = format!("not sent: you are no longer in {room}");
            self.send_error(conn_id, ErrorCode::NotMember, msg.echo, message);
        }
        let Some(msg) = self.posting.get(&conn_id).and_then(|queue| queue.front()) else {
            self.posting.remove(&conn_id);
            return;
        };
        let Some(user) = self.user_of(conn_id) else { return };
        let (room, text) = (msg.room.clone(), msg.text.clone());
        let client_ref = msg.echo.client_ref.as_ref().and_then(|r| r.as_str()).filter(|r| r.len() <= MAX_REF_LEN);
        let client_ref = client_ref.map(str::to_owned);
        let post = async move { engine.publish(&room, &user, &text, client_ref.as_deref()).await };
        ctx.spawn(post.into_actor(self).map(move |result, registry, ctx| {
            let Some(msg) = registry.posting.get_mut(&conn_id).and_then(VecDeque::pop_front) else { return };
            match result {
                Ok(id) => {
                    let ack = ServerMessage::Ack { client_ref: msg.echo.client_ref, room: msg.room.clone(), id };
                    registry.ack_when_delivered(conn_id, &msg.room, id, ack.to_json());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a message could not be posted");
                    registry.send_error(
                        conn_id,
                        ErrorCode::Unavailable,
                        msg.echo,
                        "not sent: the chat store (Redis) is unreachable; send it again (with the same ref, it is delivered once)",
                    );
                }
            }
            if registry.posting.get(&conn_id).is_some_and(|q| q.is_empty()) {
                registry.posting.remove(&conn_id);
            } else {
                registry.post_next(conn_id, ctx);
            }
        }));
    }
}

impl Handler<Leave> for Registry {
    type Result = ();

    /// Removes the connection from the room and announces the user's departure if it was
    /// their last socket there.
    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        if self.user_of(msg.conn_id).is_none() || self.take_out(msg.conn_id, &msg.room, None) {
            return;
        }
        let message = format!("not a member of {}", msg.room);
        self.send_error(msg.conn_id, ErrorCode::NotMember, msg.echo, message);
    }
}

impl Handler<Publish> for Registry {
    type Result = ();

    /// Stores the message, broadcasts it to the room (sender included), then acks the sender.
    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        let Some(user) = self.user_of(msg.conn_id) else { return };
        if !self.rooms.is_member(&msg.room, msg.conn_id) {
            let message = format!("join {} before sending to it", msg.room);
            return self.send_error(msg.conn_id, ErrorCode::NotMember, msg.echo, message);
        }
        if self.engine().is_some() {
            let conn_id = msg.conn_id;
            let queue = self.posting.entry(conn_id).or_default();
            queue.push_back(msg);
            if queue.len() == 1 {
                self.post_next(conn_id, ctx);
            }
            return;
        }
        let client_ref = msg.echo.client_ref.as_ref().and_then(|r| r.as_str());
        let id = match self.rooms.post(&msg.room, &user, msg.text, client_ref, self.clock.now_ms()) {
            Posted::New(message) => {
                let id = message.id;
                self.broadcast(&msg.room, &ServerMessage::Message(message));
                id
            }
            // Sent before (a resend after a reconnect): acknowledged again, delivered once.
            Posted::Duplicate(id) => id,
        };
        self.send(msg.conn_id, &ServerMessage::Ack { client_ref: msg.echo.client_ref, room: msg.room, id });
    }
}

impl Handler<FetchHistory> for Registry {
    type Result = ();

    /// Answers `history` for a room the connection is in.
    fn handle(&mut self, msg: FetchHistory, _: &mut Context<Self>) {
        if self.user_of(msg.conn_id).is_none() {
            return;
        }
        if !self.rooms.is_member(&msg.room, msg.conn_id) {
            return self.send_error(
                msg.conn_id,
                ErrorCode::NotMember,
                msg.echo,
                format!("join {} to read its history", msg.room),
            );
        }
        let messages = self.rooms.history(&msg.room, None, msg.before, msg.limit);
        self.send(msg.conn_id, &ServerMessage::History { room: msg.room, messages });
    }
}

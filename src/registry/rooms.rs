//! Rooms: join, leave, publish and history, and the fan-out to members.

use actix::prelude::*;

use super::{FetchHistory, Join, Leave, Outbound, Publish, Registry};
use crate::chat::Posted;
use crate::protocol::{ErrorCode, PresenceEvent, ServerMessage};

impl Handler<Join> for Registry {
    type Result = ();

    /// Adds the connection to the room, answers `joined` with members and history, and
    /// announces the user to the others if this is their first socket there.
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let Some(user) = self.user_of(msg.conn_id) else { return };
        let conn_rooms = self.conns.get(&msg.conn_id).map(|c| c.rooms.len()).unwrap_or(0);
        if !self.rooms.is_member(&msg.room, msg.conn_id) && conn_rooms >= self.config.max_rooms_per_connection {
            let limit = self.config.max_rooms_per_connection;
            return self.send_error(
                msg.conn_id,
                ErrorCode::TooManyRooms,
                msg.echo,
                format!("a connection may be in at most {limit} rooms"),
            );
        }
        let joined = match self.rooms.join(&msg.room, msg.conn_id, &user, self.clock.now_ms()) {
            Ok(joined) => joined,
            Err(e) => return self.send_error(msg.conn_id, ErrorCode::TooManyRooms, msg.echo, e.to_string()),
        };
        if let Some(conn) = self.conns.get_mut(&msg.conn_id) {
            conn.rooms.insert(msg.room.clone());
        }
        if joined.user_arrived {
            let event =
                ServerMessage::Presence { room: msg.room.clone(), user: user.clone(), event: PresenceEvent::Join };
            let frame = event.to_json();
            for member in self.rooms.members(&msg.room).filter(|m| *m != msg.conn_id) {
                if let Some(conn) = self.conns.get(&member) {
                    conn.outbox.do_send(Outbound::Frame(frame.clone()));
                }
            }
        }
        let history = self.rooms.history(&msg.room, msg.since, None, self.config.history_size);
        let members = self.rooms.users(&msg.room);
        self.send(msg.conn_id, &ServerMessage::Joined { room: msg.room, members, history });
    }
}

impl Handler<Leave> for Registry {
    type Result = ();

    /// Removes the connection from the room and announces the user's departure if it was
    /// their last socket there.
    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        let Some(user) = self.user_of(msg.conn_id) else { return };
        let Some(user_left) = self.rooms.leave(&msg.room, msg.conn_id, self.clock.now_ms()) else {
            return self.send_error(
                msg.conn_id,
                ErrorCode::NotMember,
                msg.echo,
                format!("not a member of {}", msg.room),
            );
        };
        if let Some(conn) = self.conns.get_mut(&msg.conn_id) {
            conn.rooms.remove(&msg.room);
        }
        if user_left {
            self.broadcast(
                &msg.room,
                &ServerMessage::Presence { room: msg.room.clone(), user, event: PresenceEvent::Leave },
            );
        }
        self.send(msg.conn_id, &ServerMessage::Left { room: msg.room });
    }
}

impl Handler<Publish> for Registry {
    type Result = ();

    /// Stores the message, broadcasts it to the room (sender included), then acks the sender.
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        let Some(user) = self.user_of(msg.conn_id) else { return };
        if !self.rooms.is_member(&msg.room, msg.conn_id) {
            let message = format!("join {} before sending to it", msg.room);
            return self.send_error(msg.conn_id, ErrorCode::NotMember, msg.echo, message);
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

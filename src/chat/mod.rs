//! Rooms, membership and history, as plain data: the registry actor owns one [`Rooms`] and
//! does the delivering. Presence is per user: a user with two sockets in a room is announced
//! once when the first joins and once when the last leaves.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::ids::{ConnId, RoomId, UserId};
use crate::protocol::ChatMessage;

/// One room.
#[derive(Debug, Default)]
struct Room {
    members: HashMap<ConnId, UserId>,
    /// Sockets per user in this room, for per-user presence.
    user_counts: HashMap<UserId, usize>,
    /// Id of the last message posted (0: none yet).
    last_id: u64,
    history: VecDeque<Arc<ChatMessage>>,
    /// Unix ms of the last join, leave or post; decides which empty room is evicted first.
    last_active: u64,
}

/// What a join changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The connection was a member already; nothing changed.
    pub already_member: bool,
    /// The user had no other socket in the room: announce them.
    pub user_arrived: bool,
}

/// The room cap is reached and every room has members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this server holds its maximum number of rooms")]
pub struct TooManyRooms;

/// All rooms of this node.
#[derive(Debug)]
pub struct Rooms {
    rooms: HashMap<RoomId, Room>,
    history_size: usize,
    max_rooms: usize,
}

impl Rooms {
    pub fn new(history_size: usize, max_rooms: usize) -> Self {
        Self { rooms: HashMap::new(), history_size, max_rooms }
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    pub fn join(&mut self, room: &RoomId, conn: ConnId, user: &UserId, now_ms: u64) -> Result<Joined, TooManyRooms> {
        if !self.rooms.contains_key(room) {
            self.make_space()?;
        }
        let r = self.rooms.entry(room.clone()).or_default();
        r.last_active = now_ms;
        if r.members.contains_key(&conn) {
            return Ok(Joined { already_member: true, user_arrived: false });
        }
        r.members.insert(conn, user.clone());
        let count = r.user_counts.entry(user.clone()).or_default();
        *count += 1;
        Ok(Joined { already_member: false, user_arrived: *count == 1 })
    }

    /// Removes `conn` from `room`. `None` if it was not a member; `Some(true)` if its user has
    /// no socket left there.
    pub fn leave(&mut self, room: &RoomId, conn: ConnId, now_ms: u64) -> Option<bool> {
        let r = self.rooms.get_mut(room)?;
        let user = r.members.remove(&conn)?;
        r.last_active = now_ms;
        let count = r.user_counts.get_mut(&user).expect("member's user is counted");
        *count -= 1;
        if *count == 0 {
            r.user_counts.remove(&user);
            return Some(true);
        }
        Some(false)
    }

    pub fn is_member(&self, room: &RoomId, conn: ConnId) -> bool {
        self.rooms.get(room).is_some_and(|r| r.members.contains_key(&conn))
    }

    /// Appends a message and returns it with its id. The caller checked membership.
    pub fn post(&mut self, room: &RoomId, from: &UserId, text: String, now_ms: u64) -> Arc<ChatMessage> {
        let r = self.rooms.entry(room.clone()).or_default();
        r.last_id += 1;
        r.last_active = now_ms;
        let message = Arc::new(ChatMessage { room: room.clone(), id: r.last_id, from: from.clone(), text, ts: now_ms });
        if r.history.len() == self.history_size {
            r.history.pop_front();
        }
        r.history.push_back(message.clone());
        message
    }

    /// Connections in `room`.
    pub fn members(&self, room: &RoomId) -> impl Iterator<Item = ConnId> + '_ {
        self.rooms.get(room).into_iter().flat_map(|r| r.members.keys().copied())
    }

    /// Distinct users in `room`, sorted.
    pub fn users(&self, room: &RoomId) -> Vec<UserId> {
        let mut users: Vec<UserId> =
            self.rooms.get(room).map(|r| r.user_counts.keys().cloned().collect()).unwrap_or_default();
        users.sort();
        users
    }

    /// Kept messages with `after < id < before`, the newest `limit` of them, oldest first.
    pub fn history(
        &self,
        room: &RoomId,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Vec<Arc<ChatMessage>> {
        let Some(r) = self.rooms.get(room) else { return Vec::new() };
        let after = after.unwrap_or(0);
        let before = before.unwrap_or(u64::MAX);
        let mut picked: Vec<_> =
            r.history.iter().rev().filter(|m| m.id > after && m.id < before).take(limit).cloned().collect();
        picked.reverse();
        picked
    }

    /// At the cap, drops the empty room that was idle longest; refuses if none is empty.
    fn make_space(&mut self) -> Result<(), TooManyRooms> {
        if self.rooms.len() < self.max_rooms {
            return Ok(());
        }
        let idle = self
            .rooms
            .iter()
            .filter(|(_, r)| r.members.is_empty())
            .min_by_key(|(_, r)| r.last_active)
            .map(|(id, _)| id.clone())
            .ok_or(TooManyRooms)?;
        self.rooms.remove(&idle);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    #[test]
    fn presence_is_per_user_not_per_socket() {
        let mut rooms = Rooms::new(10, 10);
        let (r, alice) = (room("r"), UserId::new("alice"));
        assert!(rooms.join(&r, ConnId(1), &alice, 0).unwrap().user_arrived);
        assert!(!rooms.join(&r, ConnId(2), &alice, 0).unwrap().user_arrived);
        assert!(rooms.join(&r, ConnId(2), &alice, 0).unwrap().already_member);
        assert_eq!(rooms.leave(&r, ConnId(1), 0), Some(false));
        assert_eq!(rooms.leave(&r, ConnId(1), 0), None);
        assert_eq!(rooms.leave(&r, ConnId(2), 0), Some(true));
        assert!(rooms.users(&r).is_empty());
    }

    #[test]
    fn history_keeps_the_newest_and_pages_backwards() {
        let mut rooms = Rooms::new(3, 10);
        let (r, bob) = (room("r"), UserId::new("bob"));
        for i in 1..=5 {
            assert_eq!(rooms.post(&r, &bob, format!("m{i}"), i).id, i);
        }
        let ids = |v: Vec<Arc<ChatMessage>>| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(rooms.history(&r, None, None, 100)), [3, 4, 5]);
        assert_eq!(ids(rooms.history(&r, None, Some(5), 1)), [4]);
        assert_eq!(ids(rooms.history(&r, Some(3), None, 100)), [4, 5]);
    }

    #[test]
    fn the_room_cap_evicts_idle_empty_rooms_only() {
        let mut rooms = Rooms::new(3, 2);
        let u = UserId::new("u");
        rooms.join(&room("a"), ConnId(1), &u, 1).unwrap();
        rooms.join(&room("b"), ConnId(1), &u, 2).unwrap();
        assert_eq!(rooms.join(&room("c"), ConnId(1), &u, 3), Err(TooManyRooms));
        rooms.leave(&room("a"), ConnId(1), 4);
        assert!(rooms.join(&room("c"), ConnId(1), &u, 5).is_ok());
        assert_eq!(rooms.len(), 2);
        assert!(!rooms.is_member(&room("a"), ConnId(1)));
    }
}

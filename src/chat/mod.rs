//! Rooms, membership and history, as plain data: the registry actor owns one [`Rooms`] and
//! does the delivering. Presence is per user: a user with two sockets in a room is announced
//! once when the first joins and once when the last leaves.
//!
//! Rooms cannot be used as a weapon: a user may create only so many rooms, and only so fast;
//! at the node's cap new rooms are refused, and a room is dropped only when it has been empty
//! and idle for `idle_room_ttl`, never to make space for someone else's.

pub mod access;
pub mod text;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::ids::{ConnId, ConnMap, RoomId, UserId};
use crate::protocol::ChatMessage;
use access::RoomAccess;

/// One room.
#[derive(Debug, Default)]
struct Room {
    members: ConnMap<UserId>,
    /// Sockets per user in this room, for per-user presence.
    user_counts: HashMap<UserId, usize>,
    /// Id of the last message posted (0: none yet).
    last_id: u64,
    history: VecDeque<Arc<ChatMessage>>,
    /// Unix ms of the last join, leave or post; an empty room idle past the TTL is dropped.
    last_active: u64,
    /// Who created it: counts against their `max_rooms_created_per_user` while it exists.
    creator: Option<UserId>,
    /// Recent `(sender, ref)` of posts, and the id each got: a `send` resent with the same
    /// `ref` (after a reconnect) is acknowledged again instead of posted twice.
    recent_refs: HashMap<(UserId, String), u64>,
    /// The same keys, oldest first, with when they were posted, for forgetting them.
    ref_order: VecDeque<(u64, UserId, String)>,
    /// Its own list (private room, direct conversation, someone kicked), on one node: it lives
    /// and goes with the room. With several nodes the registry mirrors Redis's instead.
    access: Option<RoomAccess>,
}

/// What a post did.
#[derive(Debug, Clone, PartialEq)]
pub enum Posted {
    /// A new message, to deliver.
    New(Arc<ChatMessage>),
    /// The same sender posted with this `ref` before: the id it got then; nothing to deliver.
    Duplicate(u64),
}

/// How long, and for how many posts per room, a `ref` is remembered.
pub const REF_WINDOW_MS: u64 = 5 * 60 * 1000;
const MAX_REFS_PER_ROOM: usize = 4096;
/// Longer `ref`s are echoed but not remembered.
pub const MAX_REF_LEN: usize = 128;

/// What a join changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The connection was a member already; nothing changed.
    pub already_member: bool,
    /// The user had no other socket in the room: announce them.
    pub user_arrived: bool,
}

/// Why a new room was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooManyRooms {
    #[error("this server holds its maximum of {0} rooms; join an existing room")]
    NodeFull(usize),
    #[error("you created {0} rooms that still exist, the most allowed; use one of them")]
    CreatedTooMany(usize),
    #[error("you are creating rooms too fast (at most {0} a minute); try again shortly")]
    CreatingTooFast(u32),
}

/// Limits on creating rooms.
#[derive(Debug, Clone)]
pub struct RoomLimits {
    pub max_rooms: usize,
    pub max_created_per_user: usize,
    pub creations_per_minute: u32,
    /// An empty room idle this long is dropped, history and all.
    pub idle_ttl_ms: u64,
}

const MINUTE_MS: u64 = 60_000;

/// All rooms of this node.
#[derive(Debug)]
pub struct Rooms {
    rooms: HashMap<RoomId, Room>,
    history_size: usize,
    limits: RoomLimits,
    /// Rooms each user created that still exist.
    created: HashMap<UserId, usize>,
    /// When each user created rooms in the last minute (a sliding window).
    recent_creations: HashMap<UserId, VecDeque<u64>>,
}

impl Rooms {
    pub fn new(history_size: usize, limits: RoomLimits) -> Self {
        Self { rooms: HashMap::new(), history_size, limits, created: HashMap::new(), recent_creations: HashMap::new() }
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    pub fn join(&mut self, room: &RoomId, conn: ConnId, user: &UserId, now_ms: u64) -> Result<Joined, TooManyRooms> {
        if !self.rooms.contains_key(room) {
            self.create(room, user, now_ms)?;
        }
        let r = self.rooms.get_mut(room).expect("the room exists now");
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

    /// Whether the room is kept here (it has members, or was active within the idle TTL).
    pub fn exists(&self, room: &RoomId) -> bool {
        self.rooms.contains_key(room)
    }

    /// The room's own list, when it has one.
    pub fn access(&self, room: &RoomId) -> Option<&RoomAccess> {
        self.rooms.get(room)?.access.as_ref()
    }

    /// Creates `room` for `user` with its own list, within the creation limits; nobody is in
    /// it yet. The caller made sure it does not exist.
    pub fn open(&mut self, room: &RoomId, user: &UserId, access: RoomAccess, now_ms: u64) -> Result<(), TooManyRooms> {
        self.create(room, user, now_ms)?;
        self.set_access(room, access);
        Ok(())
    }

    /// Gives an existing room its list (answers false if there is no such room).
    pub fn set_access(&mut self, room: &RoomId, access: RoomAccess) -> bool {
        let Some(r) = self.rooms.get_mut(room) else { return false };
        r.access = Some(access);
        true
    }

    /// Every kept room with its list, in no order.
    pub fn accesses(&self) -> impl Iterator<Item = (&RoomId, &RoomAccess)> + '_ {
        self.rooms.iter().filter_map(|(id, r)| Some((id, r.access.as_ref()?)))
    }

    /// Every kept room's name, users here and last message id, in no order.
    pub fn summaries(&self) -> impl Iterator<Item = (&RoomId, Vec<UserId>, u64)> + '_ {
        self.rooms.iter().map(|(id, r)| {
            let mut users: Vec<UserId> = r.user_counts.keys().cloned().collect();
            users.sort();
            (id, users, r.last_id)
        })
    }

    pub fn is_member(&self, room: &RoomId, conn: ConnId) -> bool {
        self.rooms.get(room).is_some_and(|r| r.members.contains_key(&conn))
    }

    /// Appends a message and returns it with its id, unless `client_ref` shows the sender
    /// posted it already within [`REF_WINDOW_MS`]. The caller checked membership.
    pub fn post(
        &mut self,
        room: &RoomId,
        from: &UserId,
        text: String,
        client_ref: Option<&str>,
        now_ms: u64,
    ) -> Posted {
        let r = self.rooms.entry(room.clone()).or_default();
        while r.ref_order.front().is_some_and(|(at, ..)| at + REF_WINDOW_MS <= now_ms)
            || r.ref_order.len() > MAX_REFS_PER_ROOM
        {
            let (_, user, key) = r.ref_order.pop_front().expect("checked non-empty");
            r.recent_refs.remove(&(user, key));
        }
        let key = client_ref.filter(|k| k.len() <= MAX_REF_LEN).map(|k| (from.clone(), k.to_owned()));
        if let Some(id) = key.as_ref().and_then(|key| r.recent_refs.get(key)) {
            return Posted::Duplicate(*id);
        }
        r.last_id += 1;
        if let Some((user, k)) = key {
            r.recent_refs.insert((user.clone(), k.clone()), r.last_id);
            r.ref_order.push_back((now_ms, user, k));
        }
        r.last_active = now_ms;
        let message = Arc::new(ChatMessage { room: room.clone(), id: r.last_id, from: from.clone(), text, ts: now_ms });
        if r.history.len() == self.history_size {
            r.history.pop_front();
        }
        r.history.push_back(message.clone());
        Posted::New(message)
    }

    /// Id of the room's last message (0: none, or no such room).
    pub fn last_id(&self, room: &RoomId) -> u64 {
        self.rooms.get(room).map_or(0, |r| r.last_id)
    }

    /// Whether the kept history holds every message after `since`: nothing was dropped
    /// between it and the last message (ids are dense, so a count proves it).
    pub fn holds_all_after(&self, room: &RoomId, since: u64) -> bool {
        let Some(r) = self.rooms.get(room) else { return since == 0 };
        since <= r.last_id && r.history.iter().filter(|m| m.id > since).count() as u64 == r.last_id - since
    }

    /// Several nodes: appends a message Redis numbered (the caller delivers it in id order,
    /// each once). A room that is not here (no local member any more) ignores it.
    pub fn mirror(&mut self, message: Arc<ChatMessage>, now_ms: u64) {
        let Some(r) = self.rooms.get_mut(&message.room) else { return };
        r.last_id = message.id;
        r.last_active = now_ms;
        if r.history.len() == self.history_size {
            r.history.pop_front();
        }
        r.history.push_back(message);
    }

    /// Several nodes: Redis lost the room and its ids restart; forget the old numbering.
    pub fn reset_history(&mut self, room: &RoomId) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.last_id = 0;
            r.history.clear();
        }
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

    /// Creates `room` for `user`, within the user's count and rate and the node's cap.
    fn create(&mut self, room: &RoomId, user: &UserId, now_ms: u64) -> Result<(), TooManyRooms> {
        let limits = &self.limits;
        let created = self.created.get(user).copied().unwrap_or(0);
        if created >= limits.max_created_per_user {
            return Err(TooManyRooms::CreatedTooMany(created));
        }
        let recent = self.recent_creations.entry(user.clone()).or_default();
        while recent.front().is_some_and(|&at| at + MINUTE_MS <= now_ms) {
            recent.pop_front();
        }
        if recent.len() >= limits.creations_per_minute as usize {
            return Err(TooManyRooms::CreatingTooFast(limits.creations_per_minute));
        }
        if self.rooms.len() >= limits.max_rooms {
            self.drop_idle(now_ms);
            if self.rooms.len() >= self.limits.max_rooms {
                return Err(TooManyRooms::NodeFull(self.limits.max_rooms));
            }
        }
        self.recent_creations.entry(user.clone()).or_default().push_back(now_ms);
        *self.created.entry(user.clone()).or_default() += 1;
        let r = Room { creator: Some(user.clone()), last_active: now_ms, ..Room::default() };
        self.rooms.insert(room.clone(), r);
        Ok(())
    }

    /// Drops every room that has been empty and idle for the TTL, and forgets creation times
    /// older than a minute; answers how many rooms went.
    pub fn drop_idle(&mut self, now_ms: u64) -> usize {
        let ttl = self.limits.idle_ttl_ms;
        let idle: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.members.is_empty() && r.last_active.saturating_add(ttl) <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            let Some(creator) = self.rooms.remove(id).and_then(|r| r.creator) else { continue };
            if let Some(count) = self.created.get_mut(&creator) {
                *count -= 1;
                if *count == 0 {
                    self.created.remove(&creator);
                }
            }
        }
        self.recent_creations.retain(|_, times| times.back().is_some_and(|&at| at + MINUTE_MS > now_ms));
        idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    fn limits(max_rooms: usize) -> RoomLimits {
        RoomLimits { max_rooms, max_created_per_user: 100, creations_per_minute: 100, idle_ttl_ms: 1000 }
    }

    #[test]
    fn presence_is_per_user_not_per_socket() {
        let mut rooms = Rooms::new(10, limits(10));
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
        let mut rooms = Rooms::new(3, limits(10));
        let (r, bob) = (room("r"), UserId::new("bob"));
        rooms.join(&r, ConnId(1), &bob, 0).unwrap();
        for i in 1..=5 {
            assert!(matches!(rooms.post(&r, &bob, format!("m{i}"), None, i), Posted::New(m) if m.id == i));
        }
        let ids = |v: Vec<Arc<ChatMessage>>| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(rooms.history(&r, None, None, 100)), [3, 4, 5]);
        assert_eq!(ids(rooms.history(&r, None, Some(5), 1)), [4]);
        assert_eq!(ids(rooms.history(&r, Some(3), None, 100)), [4, 5]);
    }

    #[test]
    fn at_the_cap_new_rooms_are_refused_until_an_empty_room_idles_out() {
        let mut rooms = Rooms::new(3, limits(2));
        let u = UserId::new("u");
        rooms.join(&room("a"), ConnId(1), &u, 1).unwrap();
        rooms.post(&room("a"), &u, "kept".into(), None, 1);
        rooms.join(&room("b"), ConnId(1), &u, 2).unwrap();
        rooms.leave(&room("a"), ConnId(1), 4);
        // "a" is empty but has history and is not idle long enough: it stays
        assert_eq!(rooms.join(&room("c"), ConnId(2), &UserId::new("v"), 500), Err(TooManyRooms::NodeFull(2)));
        assert_eq!(rooms.history(&room("a"), None, None, 10).len(), 1);
        // past the TTL it goes, and its creator's count with it
        assert!(rooms.join(&room("c"), ConnId(2), &UserId::new("v"), 1004).is_ok());
        assert_eq!(rooms.len(), 2);
        assert_eq!(rooms.created.get(&u), Some(&1));
    }

    #[test]
    fn a_user_creates_rooms_within_a_count_and_a_rate() {
        let mut rooms = Rooms::new(
            3,
            RoomLimits { max_rooms: 100, max_created_per_user: 2, creations_per_minute: 100, idle_ttl_ms: 1 },
        );
        let u = UserId::new("u");
        rooms.join(&room("a"), ConnId(1), &u, 0).unwrap();
        rooms.join(&room("b"), ConnId(1), &u, 0).unwrap();
        assert_eq!(rooms.join(&room("c"), ConnId(1), &u, 0), Err(TooManyRooms::CreatedTooMany(2)));
        // joining rooms others created is not creating
        rooms.join(&room("x"), ConnId(2), &UserId::new("w"), 0).unwrap();
        assert!(rooms.join(&room("x"), ConnId(1), &u, 0).is_ok());

        let mut rooms = Rooms::new(
            3,
            RoomLimits { max_rooms: 100, max_created_per_user: 100, creations_per_minute: 2, idle_ttl_ms: 1 },
        );
        rooms.join(&room("a"), ConnId(1), &u, 0).unwrap();
        rooms.join(&room("b"), ConnId(1), &u, 10).unwrap();
        assert_eq!(rooms.join(&room("c"), ConnId(1), &u, 20), Err(TooManyRooms::CreatingTooFast(2)));
        assert!(rooms.join(&room("c"), ConnId(1), &u, MINUTE_MS + 1).is_ok(), "the window slides");
    }

    #[test]
    fn only_a_history_without_holes_after_since_counts_as_recovered() {
        let mut rooms = Rooms::new(3, limits(10));
        let (r, bob) = (room("r"), UserId::new("bob"));
        rooms.join(&r, ConnId(1), &bob, 0).unwrap();
        for i in 1..=5 {
            rooms.post(&r, &bob, format!("m{i}"), None, i);
        }
        assert!(rooms.holds_all_after(&r, 2), "3, 4 and 5 are kept");
        assert!(rooms.holds_all_after(&r, 5), "nothing after the last");
        assert!(!rooms.holds_all_after(&r, 1), "2 was dropped");
        assert!(!rooms.holds_all_after(&r, 9), "a since beyond the last is another numbering");
        let message = |id| Arc::new(ChatMessage { room: r.clone(), id, from: bob.clone(), text: String::new(), ts: 0 });
        rooms.mirror(message(9), 0);
        assert!(!rooms.holds_all_after(&r, 4), "6 to 8 never arrived");
        assert!(rooms.holds_all_after(&r, 8));
    }

    #[test]
    fn a_resent_ref_is_acknowledged_with_its_first_id_and_not_posted_again() {
        let mut rooms = Rooms::new(10, limits(10));
        let (r, bob, eve) = (room("r"), UserId::new("bob"), UserId::new("eve"));
        rooms.join(&r, ConnId(1), &bob, 0).unwrap();
        assert!(matches!(rooms.post(&r, &bob, "hi".into(), Some("c1"), 0), Posted::New(m) if m.id == 1));
        assert_eq!(rooms.post(&r, &bob, "hi".into(), Some("c1"), 10), Posted::Duplicate(1));
        // another sender's ref is another key; no ref, no key
        assert!(matches!(rooms.post(&r, &eve, "hi".into(), Some("c1"), 20), Posted::New(m) if m.id == 2));
        assert!(matches!(rooms.post(&r, &bob, "x".into(), None, 30), Posted::New(_)));
        assert_eq!(rooms.history(&r, None, None, 10).len(), 3);
        // after the window the ref is forgotten
        assert!(matches!(rooms.post(&r, &bob, "hi".into(), Some("c1"), REF_WINDOW_MS + 1), Posted::New(_)));
    }
}

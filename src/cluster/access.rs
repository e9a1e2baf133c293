//! Rooms' own lists in Redis (private rooms, direct conversations, kicks), so that every node
//! enforces the same ones.
//!
//! A room's list is one hash under the room's hash tag, `{r:<room>}:a`: `k` its kind, `o` its
//! owner, `a:<user>` for each user it lets in, `x:<user>` for each user kicked, `v` its version.
//! It is read with the room's state when a node starts following the room, and changed by
//! compare-and-set ([`scripts::ACCESS_WRITE`]): the node decides the new list in Rust from the
//! one it read, and tries again if another node changed it meanwhile. The node then tells every
//! other node through the control channel (`ControlOp::RoomAccess`), and each keeps the newest
//! version it heard of.
//!
//! A list lives twice the room's idle TTL from its last change or follow, and the nodes that
//! follow a room refresh it ([`Engine::keep_access`]), so it outlives the room's history; it goes
//! when the room starts over with nobody in it ([`scripts::ROOM_STATE`]).
//!
//! Each user's private rooms and conversations are listed under `{u:<user>}:rooms`, for
//! `rooms`: written after the list (another hash slot), pruned when read; the room's own list
//! decides, the index only finds.

use std::sync::LazyLock;

use redis::Script;

use super::{scripts, unavailable, Engine, Unavailable};
use crate::chat::access::RoomAccess;
use crate::ids::{RoomId, UserId};
use crate::protocol::RoomKind;

static ACCESS_READ: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::ACCESS_READ));
/// Run by hash in a pipeline (see [`Engine::write_access`]), so only its hash is kept.
static ACCESS_WRITE_HASH: LazyLock<String> = LazyLock::new(|| Script::new(scripts::ACCESS_WRITE).get_hash().to_owned());

/// Writes that found the list changed meanwhile are tried again this often, then given up.
const WRITE_ATTEMPTS: usize = 8;

/// A room's own list as Redis holds it, and whether the room exists.
#[derive(Debug, Clone)]
pub struct AccessRead {
    pub access: Option<RoomAccess>,
    /// It has an epoch (it was joined or written to within its TTL) or somebody in it.
    pub exists: bool,
}

/// Why a room's list was not written.
#[derive(Debug)]
pub enum AccessWriteError<E> {
    /// The caller's decision refused it.
    Refused(E),
    /// The room exists and had to be new.
    Exists,
    Unavailable(Unavailable),
}

impl<E> From<Unavailable> for AccessWriteError<E> {
    fn from(e: Unavailable) -> Self {
        Self::Unavailable(e)
    }
}

impl Engine {
    fn access_key(&self, room: &RoomId) -> String {
        self.room_key(room, "a")
    }

    fn user_rooms_key(&self, user: &UserId) -> String {
        format!("{}{{u:{user}}}:rooms", self.inner.prefix)
    }

    /// Twice the idle TTL: a list outlives its room's history, never the other way round.
    fn access_ttl_ms(&self) -> u64 {
        self.inner.room_ttl_ms.saturating_mul(2)
    }

    pub async fn read_access(&self, room: &RoomId) -> Result<AccessRead, Unavailable> {
        let (fields, exists): (Vec<String>, u8) = ACCESS_READ
            .key(self.access_key(room))
            .key(self.room_key(room, "m"))
            .key(self.room_key(room, "pu"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(AccessRead { access: parse_access(fields), exists: exists == 1 })
    }

    /// Changes a room's list: `decide` sees it as it is and answers the new one (and what to
    /// hand back), or refuses; tried again when another node changed the list meanwhile. With
    /// `must_be_new`, a room that exists is refused with [`AccessWriteError::Exists`]. Answers
    /// the list as written, with its version.
    pub async fn update_access<T, E>(
        &self,
        room: &RoomId,
        must_be_new: bool,
        mut decide: impl FnMut(AccessRead) -> Result<(RoomAccess, T), E>,
    ) -> Result<(RoomAccess, T), AccessWriteError<E>> {
        for _ in 0..WRITE_ATTEMPTS {
            let read = self.read_access(room).await?;
            let expected = read.access.as_ref().map_or(0, |a| a.version);
            let (mut access, extra) = decide(read).map_err(AccessWriteError::Refused)?;
            let (outcome, version) = self.write_access(room, expected, must_be_new, &access).await?;
            match outcome {
                1 => {
                    access.version =
                        version.parse().map_err(|_| Unavailable("a list version that is no number".into()))?;
                    return Ok((access, extra));
                }
                -1 => return Err(AccessWriteError::Exists),
                _ => continue,
            }
        }
        Err(AccessWriteError::Unavailable(Unavailable("the room's list kept changing; try again".into())))
    }

    /// One [`scripts::ACCESS_WRITE`]: answers its outcome and version. With
    /// `redis.ack_replicas`, a list written is answered only once that many replicas hold it
    /// (else [`Unavailable`]: a failover could lose it, and with it a kick), as messages are.
    async fn write_access(
        &self,
        room: &RoomId,
        expected: u64,
        must_be_new: bool,
        access: &RoomAccess,
    ) -> Result<(i64, String), Unavailable> {
        let keys =
            [self.access_key(room), self.room_key(room, "m"), self.room_key(room, "s"), self.room_key(room, "pu")];
        let epoch = crate::ids::random_id(8);
        let fields = access_fields(access);
        let (answer, replicas) = self
            .invoke_replicated(scripts::ACCESS_WRITE, &ACCESS_WRITE_HASH, &keys, |call| {
                call.arg(expected).arg(u8::from(must_be_new)).arg(&epoch).arg(self.inner.room_ttl_ms);
                call.arg(self.access_ttl_ms());
                for (field, value) in &fields {
                    call.arg(field).arg(value);
                }
            })
            .await?;
        let (outcome, version): (i64, String) = redis::from_redis_value(answer).map_err(super::malformed)?;
        // A conflict wrote nothing: only a written list must have reached the replicas.
        if outcome == 1 {
            self.check_replicas(replicas, "the room's list")?;
        }
        Ok((outcome, version))
    }

    /// Keeps the lists of the rooms this node follows (someone is in them) from expiring.
    pub async fn keep_access(&self, rooms: &[RoomId]) {
        for room in rooms {
            let kept: Result<i64, _> = redis::cmd("PEXPIRE")
                .arg(self.access_key(room))
                .arg(self.access_ttl_ms())
                .query_async(&mut self.conn())
                .await;
            if let Err(e) = kept {
                return tracing::warn!(error = %e, "could not refresh the rooms' lists");
            }
        }
    }

    /// Lists `room` among the rooms of `added`, and no longer among those of `removed`
    /// (best effort: the room's own list decides; this only finds).
    pub async fn index_rooms(&self, room: &RoomId, added: &[UserId], removed: &[UserId]) {
        for (users, command) in [(added, "SADD"), (removed, "SREM")] {
            for user in users {
                let done: Result<i64, _> = redis::cmd(command)
                    .arg(self.user_rooms_key(user))
                    .arg(room.as_str())
                    .query_async(&mut self.conn())
                    .await;
                if let Err(e) = done {
                    tracing::warn!(error = %e, "could not update a user's list of rooms");
                }
            }
        }
    }

    /// The private rooms and conversations whose lists let `user` in, by name (rooms that no
    /// longer do are dropped from the user's index on the way).
    pub async fn rooms_of(&self, user: &UserId) -> Result<Vec<(RoomId, RoomAccess)>, Unavailable> {
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.user_rooms_key(user))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut rooms = Vec::new();
        let mut stale = Vec::new();
        for room in names.iter().filter_map(|name| RoomId::parse(name).ok()) {
            match self.read_access(&room).await?.access {
                Some(access) if access.kind != RoomKind::Public && access.admits(user).is_ok() => {
                    rooms.push((room, access))
                }
                _ => stale.push(room),
            }
        }
        for room in stale {
            self.index_rooms(&room, &[], std::slice::from_ref(user)).await;
        }
        rooms.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rooms)
    }
}

/// A list's fields, as [`scripts::ACCESS_WRITE`] stores them (the version is its own).
fn access_fields(access: &RoomAccess) -> Vec<(String, String)> {
    let kind = match access.kind {
        RoomKind::Public => "public",
        RoomKind::Private => "private",
        RoomKind::Dm => "dm",
    };
    let mut fields = vec![("k".to_owned(), kind.to_owned())];
    fields.extend(access.owner.iter().map(|owner| ("o".to_owned(), owner.to_string())));
    fields.extend(access.allowed.iter().map(|user| (format!("a:{user}"), "1".to_owned())));
    fields.extend(access.kicked.iter().map(|user| (format!("x:{user}"), "1".to_owned())));
    fields
}

/// A list from its hash's fields and values (`HGETALL`); `None` for no hash. A list without a
/// kind this version knows lets nobody in: a private room with nobody on it.
pub(super) fn parse_access(fields: Vec<String>) -> Option<RoomAccess> {
    if fields.is_empty() {
        return None;
    }
    let mut access = RoomAccess::public();
    let mut kind = None;
    for pair in fields.chunks_exact(2) {
        let (field, value) = (&pair[0], &pair[1]);
        match field.as_str() {
            "k" => {
                kind = match value.as_str() {
                    "public" => Some(RoomKind::Public),
                    "private" => Some(RoomKind::Private),
                    "dm" => Some(RoomKind::Dm),
                    _ => None,
                }
            }
            "o" => access.owner = Some(UserId::new(value.as_str())),
            "v" => access.version = value.parse().unwrap_or(0),
            _ => {
                if let Some(user) = field.strip_prefix("a:") {
                    access.allowed.insert(UserId::new(user));
                } else if let Some(user) = field.strip_prefix("x:") {
                    access.kicked.insert(UserId::new(user));
                }
            }
        }
    }
    match kind {
        Some(kind) => access.kind = kind,
        None => {
            return Some(RoomAccess { kind: RoomKind::Private, owner: None, allowed: Default::default(), ..access })
        }
    }
    Some(access)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_reads_back_as_it_was_written() {
        let mut access = RoomAccess::private(UserId::new("alice"), [UserId::new("b:o b"), UserId::new("carol")]);
        access.kicked.insert(UserId::new("x:eve"));
        let mut fields: Vec<String> = access_fields(&access).into_iter().flat_map(|(f, v)| [f, v]).collect();
        fields.extend(["v".to_owned(), "1700000000123456".to_owned()]);
        let read = parse_access(fields).unwrap();
        assert_eq!(read, RoomAccess { version: 1_700_000_000_123_456, ..access });
        assert_eq!(parse_access(Vec::new()), None);
        let unknown = parse_access(vec!["k".into(), "secret".into(), "a:bob".into(), "1".into()]).unwrap();
        assert!(unknown.admits(&UserId::new("bob")).is_err(), "a list this version cannot read lets nobody in");
        let dm = RoomAccess::direct(UserId::new("a"), UserId::new("b"));
        let fields = access_fields(&dm).into_iter().flat_map(|(f, v)| [f, v]).collect();
        assert_eq!(parse_access(fields).unwrap().kind, RoomKind::Dm);
    }
}

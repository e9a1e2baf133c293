//! The registry actor: every live connection of this node, its token's expiry, and its rooms.
//!
//! It warns a connection `warn_before` ahead of `exp`, closes it with 4001 at `exp` (one timer,
//! armed for the earliest deadline in [`deadlines::Deadlines`]), fans chat messages out to
//! room members, and serves the admin API. It holds each socket as a [`post::SocketOutbox`] (the
//! socket's worker thread and its sending side there, or any actor's `Recipient<Outbound>`),
//! never as the socket type, so it does not depend on the WebSocket transport.
//!
//! - [`messages`]: what sockets and the HTTP layer send it, and what it answers.
//! - this file: its state, and the connection lifecycle (register, authenticate, renew,
//!   closing, unregister) with token expiry.
//! - [`admission`]: the caps on sockets, checked by the workers before the registry hears of
//!   a socket; [`lifecycle`]: the sockets' lifecycle notes, sent to it in batches; [`post`]:
//!   what it sends the sockets, handed to their workers in batches.
//! - `rooms`: join, leave, publish and history, and the fan-out.
//! - `access`: who may be in a room, checked at every join and again at every change.
//! - `operator`: listing and closing connections for the admin API, and counts.
//! - [`sessions`]: following server-side sessions (session mode).
//! - [`deadlines`]: the ordered deadline queue; [`clock`]: the time it reads.

mod access;
pub mod admission;
pub mod clock;
pub mod deadlines;
mod feeds;
pub mod lifecycle;
pub mod messages;
mod operator;
pub mod post;
mod rooms;
pub mod sessions;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::chat::access::Rules;
use crate::chat::{RoomLimits, Rooms};
use crate::cluster::{Engine, EngineEvent};
use crate::config::Settings;
use crate::ids::{ConnId, ConnMap, ConnSet, RoomId, SessionId, UserId};
use crate::metrics::Metrics;
use crate::protocol::{close, Echo, ErrorCode, PresenceEvent, ServerMessage};
use clock::Clock;
use deadlines::{Deadlines, Due};
pub use messages::*;
use post::SocketOutbox;

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// Deadlines handled per timer turn, so a mass expiry does not starve other messages.
const DEADLINE_BATCH: usize = 512;

/// Limits the registry enforces, from [`Settings`].
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub node: String,
    /// The numbering of message ids on one node (`joined.epoch`): new at each start, since
    /// ids restart then. With several nodes each room's epoch comes from Redis instead.
    pub epoch: String,
    pub warn_before: Duration,
    pub max_rooms_per_connection: usize,
    pub history_size: usize,
    pub rooms: RoomLimits,
    /// The room rules at start (SIGHUP replaces them: [`SetRules`]).
    pub rules: Rules,
}

impl RegistryConfig {
    pub fn from_settings(settings: &Settings, node: String, epoch: String) -> Self {
        Self {
            node,
            epoch,
            warn_before: settings.ws.warn_before,
            max_rooms_per_connection: settings.chat.max_rooms_per_connection,
            history_size: settings.chat.history_size,
            rooms: RoomLimits {
                max_rooms: settings.chat.max_rooms,
                max_created_per_user: settings.chat.max_rooms_created_per_user,
                creations_per_minute: settings.chat.room_creations_per_minute,
                idle_ttl_ms: settings.chat.idle_room_ttl.as_millis() as u64,
            },
            rules: Rules::new(&settings.rooms.rules),
        }
    }
}

/// One live connection.
struct Connection {
    outbox: SocketOutbox,
    ip: IpAddr,
    connected_at: u64,
    identity: Option<Identity>,
    rooms: BTreeSet<RoomId>,
}

/// The actor.
pub struct Registry {
    config: RegistryConfig,
    metrics: Arc<Metrics>,
    conns: ConnMap<Connection>,
    by_user: HashMap<UserId, ConnSet>,
    by_session: HashMap<SessionId, ConnSet>,
    /// Closed connections whose TCP connection is not gone yet (they keep their place under
    /// the caps, [`admission`], until then).
    closing: ConnSet,
    deadlines: Deadlines,
    /// Only while a turn of deadlines is handled: the room departures its expiries caused, in
    /// order, announced when the turn is done ([`Registry::announce_departures`]).
    departures: Option<Vec<(RoomId, UserId)>>,
    /// The one armed timer: when it fires (Unix ms) and its handle.
    timer: Option<(u64, SpawnHandle)>,
    rooms: Rooms,
    /// Who may join which rooms (`[[rooms.rules]]`).
    rules: Rules,
    /// What "now" is: the system clock, or in tests tokio's (pausable) time.
    clock: Arc<dyn Clock>,
    /// Several nodes: the Redis engine, what it reports (read once started), and the feed of
    /// each room with local members.
    engine: Option<Engine>,
    engine_events: Option<tokio::sync::mpsc::Receiver<EngineEvent>>,
    feeds: HashMap<RoomId, feeds::Feed>,
    /// Several nodes: posts waiting per connection, the first one in flight, so that one
    /// sender's messages keep their order.
    posting: ConnMap<VecDeque<Publish>>,
}

impl Registry {
    pub fn new(config: RegistryConfig, metrics: Arc<Metrics>) -> Self {
        Self::with_clock(config, metrics, Arc::new(clock::SystemClock))
    }

    pub fn with_clock(config: RegistryConfig, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Self {
        let rooms = Rooms::new(config.history_size, config.rooms.clone());
        Self {
            rules: config.rules.clone(),
            clock,
            config,
            metrics,
            conns: ConnMap::default(),
            by_user: HashMap::new(),
            by_session: HashMap::new(),
            closing: ConnSet::default(),
            deadlines: Deadlines::default(),
            departures: None,
            timer: None,
            rooms,
            engine: None,
            engine_events: None,
            feeds: HashMap::new(),
            posting: ConnMap::default(),
        }
    }

    /// Several nodes: rooms, history, presence and operator requests go through Redis.
    pub fn with_engine(mut self, engine: Engine, events: tokio::sync::mpsc::Receiver<EngineEvent>) -> Self {
        self.engine = Some(engine);
        self.engine_events = Some(events);
        self
    }

    fn send(&self, conn_id: ConnId, message: &ServerMessage) {
        if let Some(conn) = self.conns.get(&conn_id) {
            conn.outbox.do_send(Outbound::Frame(message.to_json()));
        }
    }

    fn send_error(&self, conn_id: ConnId, code: ErrorCode, echo: Echo, message: impl Into<String>) {
        self.send(conn_id, &ServerMessage::refused(code, message, echo));
    }

    /// Sends one serialised frame to every member of `room`.
    fn broadcast(&self, room: &RoomId, message: &ServerMessage) {
        let frame = message.to_json();
        let unanswered = self.feeds.get(room).map(|f| &f.unanswered);
        for member in self.rooms.members(room).filter(|m| !unanswered.is_some_and(|u| u.contains_key(m))) {
            if let Some(conn) = self.conns.get(&member) {
                conn.outbox.do_send(Outbound::Frame(frame.clone()));
            }
        }
    }

    /// The user behind an authenticated connection; answers `auth required` otherwise.
    fn user_of(&self, conn_id: ConnId) -> Option<UserId> {
        self.conns.get(&conn_id)?.identity.as_ref().map(|i| i.user.clone())
    }

    fn schedule_expiry(&mut self, conn_id: ConnId, expires_at: u64, session_bound: bool, ctx: &mut Context<Self>) {
        let expire_ms = expires_at.saturating_mul(1000);
        let warn_ms = expire_ms.saturating_sub(self.config.warn_before.as_millis() as u64);
        self.deadlines.schedule(conn_id, (!session_bound).then_some(warn_ms), expire_ms);
        self.arm_timer(ctx);
    }

    /// Keeps exactly one timer armed, for the earliest deadline.
    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let next = self.deadlines.next_at();
        if self.timer.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = next {
            let delay = Duration::from_millis(at.saturating_sub(self.clock.now_ms()));
            let handle = ctx.run_later(delay, |registry, ctx| {
                registry.timer = None;
                registry.fire_deadlines(ctx);
            });
            self.timer = Some((at, handle));
        }
    }

    /// Handles what is due, at most [`DEADLINE_BATCH`] at a time: when more remain, the timer is
    /// re-armed at once, so joins and messages queued meanwhile are served between batches.
    fn fire_deadlines(&mut self, ctx: &mut Context<Self>) {
        // Decided by the wall clock, which `exp` is measured in; if it stepped back since the
        // timer was armed, nothing is due yet and the timer is simply re-armed.
        let now = self.clock.now_ms();
        self.departures = Some(Vec::new());
        for (conn_id, due) in self.deadlines.pop_due(now, DEADLINE_BATCH) {
            let Some(identity) = self.conns.get(&conn_id).and_then(|c| c.identity.as_ref()) else {
                continue;
            };
            let (expires_at, session_bound) = (identity.expires_at, identity.session_bound());
            match due {
                Due::Warn => {
                    let seconds_left = (expires_at * 1000).saturating_sub(now).div_ceil(1000);
                    self.send(conn_id, &ServerMessage::Expiring { expires_at, seconds_left });
                }
                Due::Expire => {
                    let (code, reason) = if session_bound {
                        (close::SESSION_ENDED, "session expired")
                    } else {
                        (close::TOKEN_EXPIRED, "token expired")
                    };
                    if let Some(conn) = self.remove(conn_id, true) {
                        conn.outbox.do_send(Outbound::Close { code, reason, deadline_ms: Some(expires_at * 1000) });
                    }
                }
            }
        }
        if let Some(departures) = self.departures.take() {
            self.announce_departures(&departures, now);
        }
        self.arm_timer(ctx);
    }

    /// Announces the room departures of a turn of expiries, in the order they happened, to the
    /// members still there, except those whose own token expires by `now`: they are closed in
    /// this turn or the next, and telling each of them about the others would cost a room whose
    /// members' tokens expire together a frame per pair of them (10,000 members of one room: about
    /// 5 million frames, queued ahead of their closes).
    ///
    /// A member whose renewal lands between two turns of the burst that was to close it (a
    /// `reauth` racing its own `exp`) stays open without these frames; its next `joined` lists
    /// the room's members. One node only: with several, Redis announces departures (see
    /// [`Registry::left_room`]).
    fn announce_departures(&self, departures: &[(RoomId, UserId)], now: u64) {
        let mut audiences: HashMap<&RoomId, Vec<&SocketOutbox>> = HashMap::new();
        for (room, user) in departures {
            let audience = audiences.entry(room).or_insert_with(|| {
                self.rooms
                    .members(room)
                    .filter(|member| !self.deadlines.expires_by(*member, now))
                    .filter_map(|member| self.conns.get(&member).map(|c| &c.outbox))
                    .collect()
            });
            let event = ServerMessage::Presence { room: room.clone(), user: user.clone(), event: PresenceEvent::Leave };
            let frame = event.to_json();
            for outbox in audience {
                outbox.do_send(Outbound::Frame(frame.clone()));
            }
        }
    }

    /// Tells the socket to close and forgets it at once, so nothing more is sent to it.
    fn close(&mut self, conn_id: ConnId, code: u16, reason: &'static str) -> bool {
        match self.remove(conn_id, true) {
            Some(conn) => {
                conn.outbox.do_send(Outbound::Close { code, reason, deadline_ms: None });
                true
            }
            None => false,
        }
    }

    /// Closes each of `ids` still open; answers how many were.
    fn close_many(&mut self, ids: Vec<ConnId>, code: u16, reason: &'static str, ctx: &mut Context<Self>) -> usize {
        let closed = ids.into_iter().filter(|id| self.close(*id, code, reason)).count();
        self.arm_timer(ctx);
        closed
    }

    /// Drops a connection from rooms, deadlines and indexes, and announces its departure to
    /// its rooms. With `still_open`, its TCP connection is not gone yet: it is counted as
    /// closing until [`Unregister`].
    fn remove(&mut self, conn_id: ConnId, still_open: bool) -> Option<Connection> {
        let conn = self.conns.remove(&conn_id)?;
        self.deadlines.cancel(conn_id);
        let now = self.clock.now_ms();
        if still_open {
            self.closing.insert(conn_id);
        }
        if let Some(identity) = &conn.identity {
            unindex(&mut self.by_user, &identity.user, conn_id);
            if let Some(sid) = &identity.session_id {
                unindex(&mut self.by_session, sid, conn_id);
            }
            for room in &conn.rooms {
                if let Some(user_left) = self.rooms.leave(room, conn_id, now) {
                    self.left_room(room, &identity.user, user_left);
                }
            }
            self.posting.remove(&conn_id);
        }
        self.metrics.connections_open.set(self.conns.len() as i64);
        Some(conn)
    }

    /// A connection left `room`; `user_left`: it was its user's last one here. One node
    /// announces the departure itself; with several, Redis announces it (when the user is on no
    /// node any more), and the room stops being followed once nobody here is in it.
    fn left_room(&mut self, room: &RoomId, user: &UserId, user_left: bool) {
        let Some(engine) = self.engine.clone() else {
            if user_left {
                match &mut self.departures {
                    Some(departures) => departures.push((room.clone(), user.clone())),
                    None => {
                        let event = ServerMessage::Presence {
                            room: room.clone(),
                            user: user.clone(),
                            event: PresenceEvent::Leave,
                        };
                        self.broadcast(room, &event);
                    }
                }
            }
            return;
        };
        if user_left {
            engine.announce(room, user, PresenceEvent::Leave);
        }
        if self.rooms.members(room).next().is_none() {
            self.unfollow(room);
        }
    }

    fn add_identity(&mut self, conn_id: ConnId, identity: &Identity, ctx: &mut Context<Self>) {
        self.by_user.entry(identity.user.clone()).or_default().insert(conn_id);
        if let Some(sid) = &identity.session_id {
            self.by_session.entry(sid.clone()).or_default().insert(conn_id);
        }
        self.schedule_expiry(conn_id, identity.expires_at, identity.session_bound(), ctx);
    }

    fn info(&self, conn_id: ConnId, conn: &Connection) -> ConnectionInfo {
        let identity = conn.identity.as_ref();
        ConnectionInfo {
            conn_id,
            user: identity.map(|i| i.user.clone()),
            node: self.config.node.clone(),
            auth: identity.map(|i| i.method),
            token_id: identity.and_then(|i| i.token_id.clone()),
            expires_at: identity.map(|i| i.expires_at),
            rooms: conn.rooms.iter().cloned().collect(),
            connected_at: conn.connected_at,
            ip: conn.ip,
        }
    }
}

/// Removes `conn_id` from an index entry, dropping the entry when it empties.
fn unindex<K: std::hash::Hash + Eq>(index: &mut HashMap<K, ConnSet>, key: &K, conn_id: ConnId) {
    if let Some(set) = index.get_mut(key) {
        set.remove(&conn_id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// How often rooms that have been empty and idle past `chat.idle_room_ttl` are dropped.
const ROOM_SWEEP: Duration = Duration::from_secs(60);

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(mut events) = self.engine_events.take() {
            ctx.add_stream(futures_util::stream::poll_fn(move |cx| events.poll_recv(cx)));
        }
        ctx.run_interval(ROOM_SWEEP, |registry, _| {
            let now = registry.clock.now_ms();
            registry.rooms.drop_idle(now);
        });
        if let Some(engine) = self.engine.clone() {
            // The lists of rooms someone is in must not expire under them (twice the TTL, so
            // four refreshes fit in one lifetime).
            let every = Duration::from_millis((self.config.rooms.idle_ttl_ms / 2).max(1000));
            ctx.run_interval(every, move |registry, _| {
                let rooms: Vec<RoomId> = registry.feeds.keys().cloned().collect();
                let engine = engine.clone();
                actix::spawn(async move { engine.keep_access(&rooms).await });
            });
        }
    }
}

impl StreamHandler<EngineEvent> for Registry {
    fn handle(&mut self, event: EngineEvent, ctx: &mut Context<Self>) {
        self.on_engine_event(event, ctx);
    }

    /// The engine stops only with the process; the registry must outlive it regardless.
    fn finished(&mut self, _: &mut Context<Self>) {
        tracing::error!("the Redis engine stopped reporting; rooms are no longer shared with other nodes");
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

impl Handler<Register> for Registry {
    type Result = ();

    /// Adds a connection ([`admission`] admitted it within the caps) and arms its expiry.
    fn handle(&mut self, msg: Register, ctx: &mut Context<Self>) {
        if let Some(identity) = &msg.identity {
            self.add_identity(msg.conn_id, identity, ctx);
        }
        let conn = Connection {
            outbox: msg.outbox,
            ip: msg.ip,
            connected_at: self.clock.now_ms(),
            identity: msg.identity,
            rooms: BTreeSet::new(),
        };
        self.conns.insert(msg.conn_id, conn);
        self.metrics.connections_open.set(self.conns.len() as i64);
    }
}

impl Handler<Authenticate> for Registry {
    type Result = ();

    /// A connection that opened without a credential has authenticated with its first message
    /// ([`admission`] moved its place to its user). One closed meanwhile stays closed.
    fn handle(&mut self, msg: Authenticate, ctx: &mut Context<Self>) {
        let Some(conn) = self.conns.get_mut(&msg.conn_id) else { return };
        if conn.identity.is_some() {
            return;
        }
        conn.identity = Some(msg.identity.clone());
        self.add_identity(msg.conn_id, &msg.identity, ctx);
    }
}

impl Handler<Renew> for Registry {
    type Result = Result<(), RenewRefusal>;

    /// Replaces the connection's expiry (and warning) with the new token's, and follows the new
    /// token's login. Never for a session-bound connection: its session id is what logout and
    /// operators close it by, so it must never change.
    fn handle(&mut self, msg: Renew, ctx: &mut Context<Self>) -> Self::Result {
        let identity = self
            .conns
            .get_mut(&msg.conn_id)
            .and_then(|c| c.identity.as_mut())
            .ok_or(RenewRefusal::UnknownConnection)?;
        if identity.session_bound() {
            return Err(RenewRefusal::SessionBound);
        }
        identity.expires_at = msg.expires_at;
        identity.token_id = msg.token_id;
        identity.grants = msg.grants;
        let old_session = std::mem::replace(&mut identity.session_id, msg.session_id.clone());
        if old_session != msg.session_id {
            if let Some(sid) = old_session {
                unindex(&mut self.by_session, &sid, msg.conn_id);
            }
            if let Some(sid) = msg.session_id {
                self.by_session.entry(sid).or_default().insert(msg.conn_id);
            }
        }
        self.schedule_expiry(msg.conn_id, msg.expires_at, false, ctx);
        self.recheck_conn(msg.conn_id);
        Ok(())
    }
}

impl Handler<Unregister> for Registry {
    type Result = ();

    /// Forgets a connection whose TCP connection is gone.
    fn handle(&mut self, msg: Unregister, ctx: &mut Context<Self>) {
        if self.remove(msg.conn_id, false).is_some() {
            self.arm_timer(ctx);
        }
        self.closing.remove(&msg.conn_id);
    }
}

impl Handler<lifecycle::Notes> for Registry {
    type Result = ();

    /// A worker's batch of lifecycle notes, applied in order.
    fn handle(&mut self, notes: lifecycle::Notes, ctx: &mut Context<Self>) {
        for note in notes.0 {
            match note {
                lifecycle::Note::Register(msg) => Handler::<Register>::handle(self, msg, ctx),
                lifecycle::Note::Closing(msg) => Handler::<Closing>::handle(self, msg, ctx),
                lifecycle::Note::Unregister(msg) => Handler::<Unregister>::handle(self, msg, ctx),
            }
        }
    }
}

impl Handler<Closing> for Registry {
    type Result = ();

    /// Stops delivering to a connection that is closing; it keeps its place under the caps
    /// until its TCP connection is gone.
    fn handle(&mut self, msg: Closing, ctx: &mut Context<Self>) {
        if self.remove(msg.conn_id, true).is_some() {
            self.arm_timer(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;

    /// Stands in for a socket: takes what the registry sends and drops it.
    pub(super) struct Sink;

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<Outbound> for Sink {
        type Result = ();

        fn handle(&mut self, _: Outbound, _: &mut Context<Self>) {}
    }

    pub(super) fn registry() -> Addr<Registry> {
        let config = RegistryConfig {
            node: "test".into(),
            epoch: "e".into(),
            warn_before: Duration::from_secs(60),
            max_rooms_per_connection: 4,
            history_size: 4,
            rooms: RoomLimits { max_rooms: 4, max_created_per_user: 4, creations_per_minute: 4, idle_ttl_ms: 1000 },
            rules: Rules::default(),
        };
        Registry::new(config, Arc::new(Metrics::new())).start()
    }

    /// One of alice's sockets, of login session `session_id` when given (bound to it, as in
    /// session mode, when `session_bound`).
    fn alices_socket(conn_id: u64, session_id: Option<&str>, session_bound: bool) -> Register {
        let identity = Identity {
            user: UserId::new("alice"),
            token_id: None,
            expires_at: crate::time::now_unix_s() + 3600,
            method: if session_bound { AuthMethod::Session } else { AuthMethod::Header },
            session_id: session_id.map(SessionId::new),
            grants: Default::default(),
        };
        let outbox = SocketOutbox::new(Sink.start().recipient());
        Register { conn_id: ConnId(conn_id), outbox, ip: IpAddr::from([127, 0, 0, 1]), identity: Some(identity) }
    }

    async fn register(registry: &Addr<Registry>, conn_id: u64, session_id: &str, session_bound: bool) {
        registry.send(alices_socket(conn_id, Some(session_id), session_bound)).await.unwrap();
    }

    fn renew(conn_id: u64, session_id: &str) -> Renew {
        Renew {
            conn_id: ConnId(conn_id),
            token_id: Some("jti".into()),
            expires_at: crate::time::now_unix_s() + 7200,
            session_id: Some(SessionId::new(session_id)),
            grants: Default::default(),
        }
    }

    #[actix::test]
    async fn a_session_bound_connection_is_never_renewed_out_of_its_session() {
        let registry = registry();
        register(&registry, 1, "session-1", true).await;
        assert_eq!(registry.send(renew(1, "login-of-a-token")).await.unwrap(), Err(RenewRefusal::SessionBound));
        let rows = registry.send(ListConnections { user: None }).await.unwrap();
        assert_eq!((rows[0].token_id.as_deref(), rows[0].auth), (None, Some(AuthMethod::Session)), "unchanged");
        assert_eq!(registry.send(ListSessionIds).await.unwrap(), [SessionId::new("session-1")]);
        let close =
            |session_id: &str| CloseSession { session_id: SessionId::new(session_id), code: 4002, reason: "ended" };
        assert_eq!(registry.send(close("login-of-a-token")).await.unwrap(), 0);
        assert_eq!(registry.send(close("session-1")).await.unwrap(), 1, "its session still closes it");
    }

    #[actix::test]
    async fn a_token_connection_follows_the_login_of_its_new_token() {
        let registry = registry();
        register(&registry, 1, "login-1", false).await;
        assert_eq!(registry.send(renew(1, "login-2")).await.unwrap(), Ok(()));
        let close =
            |session_id: &str| CloseSession { session_id: SessionId::new(session_id), code: 4002, reason: "ended" };
        assert_eq!(registry.send(close("login-1")).await.unwrap(), 0);
        assert_eq!(registry.send(close("login-2")).await.unwrap(), 1);
    }

    // -----------------------------------------------------------------------------------------
    // Time-dependent behaviour, on tokio's paused clock: no real sleeps.
    // -----------------------------------------------------------------------------------------

    /// Stands in for a socket and remembers what it was sent, in order.
    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<Outbound> for Recorder {
        type Result = ();

        fn handle(&mut self, msg: Outbound, _: &mut Context<Self>) {
            self.0.push(match msg {
                Outbound::Frame(text) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    format!("{}:{}", v["type"].as_str().unwrap(), v["event"].as_str().unwrap_or(""))
                }
                Outbound::Close { code, .. } => format!("close:{code}"),
            });
        }
    }

    /// Everything recorded so far, emptied.
    #[derive(Message)]
    #[rtype(result = "Vec<String>")]
    struct Take;

    impl Handler<Take> for Recorder {
        type Result = MessageResult<Take>;

        fn handle(&mut self, _: Take, _: &mut Context<Self>) -> Self::Result {
            MessageResult(std::mem::take(&mut self.0))
        }
    }

    /// A registry on tokio's clock, and that clock.
    fn paused_registry() -> (Addr<Registry>, Arc<clock::TokioClock>) {
        tokio::time::pause();
        let clock = Arc::new(clock::TokioClock::new());
        let config = RegistryConfig {
            node: "test".into(),
            epoch: "e".into(),
            warn_before: Duration::from_secs(60),
            max_rooms_per_connection: 4,
            history_size: 4,
            rooms: RoomLimits { max_rooms: 4, max_created_per_user: 4, creations_per_minute: 4, idle_ttl_ms: 1000 },
            rules: Rules::default(),
        };
        (Registry::with_clock(config, Arc::new(Metrics::new()), clock.clone()).start(), clock)
    }

    /// Registers `user` on conn `id`, its token expiring `ttl` from the clock's now (rounded
    /// up to a whole second, as `exp` is); answers the socket's recorder.
    async fn connect(
        registry: &Addr<Registry>,
        clock: &clock::TokioClock,
        id: u64,
        user: &str,
        ttl: Duration,
    ) -> Addr<Recorder> {
        let recorder = Recorder::default().start();
        let identity = Identity {
            user: UserId::new(user),
            token_id: None,
            expires_at: (clock.now_ms() + ttl.as_millis() as u64).div_ceil(1000),
            method: AuthMethod::Header,
            session_id: None,
            grants: Default::default(),
        };
        let register = Register {
            conn_id: ConnId(id),
            outbox: SocketOutbox::new(recorder.clone().recipient()),
            ip: IpAddr::from([127, 0, 0, 1]),
            identity: Some(identity),
        };
        registry.send(register).await.unwrap();
        recorder
    }

    /// Lets the registry run what is due, then takes what `socket` received.
    async fn received(registry: &Addr<Registry>, socket: &Addr<Recorder>) -> Vec<String> {
        // tokio rounds timers up to the next millisecond, and paused time moves only when told:
        // one more millisecond lets a timer due "now" fire. A timer fires on the registry's
        // next turn, which may come after the first message it answers: two round trips.
        tokio::time::advance(Duration::from_millis(1)).await;
        for _ in 0..2 {
            registry.send(GetStats).await.unwrap();
        }
        socket.send(Take).await.unwrap()
    }

    #[actix::test]
    async fn a_token_is_warned_about_then_closed_with_4001_at_exp_and_not_before() {
        let (registry, clock) = paused_registry();
        let socket = connect(&registry, &clock, 1, "alice", Duration::from_secs(120)).await;
        tokio::time::advance(Duration::from_secs(58)).await;
        assert_eq!(received(&registry, &socket).await, Vec::<String>::new(), "too early to warn");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(received(&registry, &socket).await, ["expiring:"]);
        tokio::time::advance(Duration::from_secs(57)).await;
        assert_eq!(received(&registry, &socket).await, Vec::<String>::new(), "not closed before exp");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(received(&registry, &socket).await, ["close:4001"]);
        assert_eq!(registry.send(GetStats).await.unwrap().connections, 0);
    }

    #[actix::test]
    async fn a_renewal_moves_the_deadline_to_the_new_tokens_exp() {
        let (registry, clock) = paused_registry();
        let socket = connect(&registry, &clock, 1, "alice", Duration::from_secs(10)).await;
        assert_eq!(received(&registry, &socket).await, ["expiring:"], "less than warn_before left: warned at once");
        tokio::time::advance(Duration::from_secs(5)).await;
        let expires_at = (clock.now_ms() + 100_000).div_ceil(1000);
        let renew =
            Renew { conn_id: ConnId(1), token_id: None, expires_at, session_id: None, grants: Default::default() };
        registry.send(renew).await.unwrap().unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(received(&registry, &socket).await, Vec::<String>::new(), "the old exp passed unnoticed");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(received(&registry, &socket).await, ["expiring:"], "the new token is warned about");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(received(&registry, &socket).await, ["close:4001"]);
    }

    #[actix::test]
    async fn the_others_in_a_room_see_a_member_leave_when_its_socket_goes() {
        let (registry, clock) = paused_registry();
        let hour = Duration::from_secs(3600);
        let alice = connect(&registry, &clock, 1, "alice", hour).await;
        let bob = connect(&registry, &clock, 2, "bob", hour).await;
        let room = RoomId::parse("r").unwrap();
        for id in [1, 2] {
            registry.do_send(Join {
                conn_id: ConnId(id),
                room: room.clone(),
                since: None,
                epoch: None,
                echo: Echo::default(),
            });
        }
        received(&registry, &alice).await;
        assert_eq!(received(&registry, &bob).await, ["joined:"]);
        registry.send(Unregister { conn_id: ConnId(1) }).await.unwrap();
        assert_eq!(received(&registry, &bob).await, ["presence:leave"]);
        // and expiry takes a member out of its rooms the same way
        tokio::time::advance(Duration::from_secs(3601)).await;
        assert_eq!(received(&registry, &bob).await, ["expiring:", "close:4001"]);
    }

    #[actix::test]
    async fn members_whose_tokens_expire_together_are_not_told_of_each_others_departure() {
        let (registry, clock) = paused_registry();
        // Under warn_before: each is warned at once, so the expiry turn sends only closes.
        let soon = Duration::from_secs(30);
        let alice = connect(&registry, &clock, 1, "alice", soon).await;
        let bob = connect(&registry, &clock, 2, "bob", soon).await;
        let carol = connect(&registry, &clock, 3, "carol", Duration::from_secs(3600)).await;
        let room = RoomId::parse("r").unwrap();
        for id in [1, 2, 3] {
            let join =
                Join { conn_id: ConnId(id), room: room.clone(), since: None, epoch: None, echo: Echo::default() };
            registry.do_send(join);
        }
        for socket in [&alice, &bob, &carol] {
            received(&registry, socket).await;
        }
        // `exp` is a whole second, so up to a second past `soon`
        tokio::time::advance(soon + Duration::from_secs(1)).await;
        assert_eq!(received(&registry, &alice).await, ["close:4001"]);
        assert_eq!(received(&registry, &bob).await, ["close:4001"], "no word of alice, closed in the same turn");
        assert_eq!(received(&registry, &carol).await, ["presence:leave", "presence:leave"]);
    }
}

//! The Redis engine: several nodes as one chat (`store.backend = "redis"`).
//!
//! Redis is the only shared thing, and the only one that decides: message ids (an offset per
//! room, from a Lua script that also appends to the room's stream and PUBLISHes the message, so
//! channel order is id order), history (a stream capped at `chat.history_size`), presence (which
//! users are in a room on which node), the set of live nodes (heartbeats on Redis's clock) and
//! the control channel operators' requests travel on. No gossip, no consensus of our own.
//!
//! What stays on the node: its sockets, their token deadlines (enforced even while Redis is
//! down), and per room with local members a mirror of the room's history, kept whole by
//! the subscription and filled from the stream after any gap (see `registry::feeds`).
//!
//! The engine does not know the registry: it answers calls, and what arrives from Redis goes
//! out as [`EngineEvent`]s on a channel the registry reads.
//!
//! On a Redis Cluster (`redis.cluster_nodes`) nothing changes in kind: every key of a room
//! shares the tag `{r:<room>}`, so its scripts run on the room's shard, and the room's channel
//! is a sharded one (`SPUBLISH`/`SSUBSCRIBE`), so a message crosses only that shard and the
//! nodes that follow the room. The cluster's own keys share `{c}` and a node's `{n:<node>}`.
//!
//! - `scripts`: the Lua scripts.
//! - `subscriber`: the one subscription connection, its probe and its reconnection.
//! - [`control`]: operator requests across nodes.

mod access;
pub mod control;
mod scripts;
mod subscriber;
mod writer;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::ids::{RoomId, UserId};
use crate::metrics::Metrics;
use crate::protocol::{ChatMessage, PresenceEvent};
use crate::store::link::{Connection, Target};
use crate::time::now_unix_ms;
pub use access::{AccessRead, AccessWriteError};
pub use control::{ControlOp, ControlReply, ControlRequest, Gathered};

/// What arrives from Redis for the registry.
#[derive(Debug)]
pub enum EngineEvent {
    /// A message posted to a room this node follows, with the room's epoch.
    Message { epoch: String, message: Arc<ChatMessage> },
    /// A user arrived in a room (on their first node there) or left it (from their last).
    Presence { room: RoomId, user: UserId, event: PresenceEvent },
    /// Another node's operator request, to answer with [`Engine::reply`].
    Control(ControlRequest),
    /// The subscription was (re)established: whatever was published meanwhile was missed, so
    /// every followed room is refilled from its stream and local presence is asserted again.
    Resubscribed,
    /// A change to this node's presence could not be written, or Redis lost it: the registry
    /// hands its whole presence to [`Engine::sync_presence`].
    PresenceStale,
}

/// Why an engine call failed. The message never holds the Redis URL.
#[derive(Debug, thiserror::Error)]
#[error("Redis is unreachable: {0}")]
pub struct Unavailable(String);

fn unavailable(e: redis::RedisError) -> Unavailable {
    Unavailable(e.to_string())
}

fn malformed(e: redis::ParsingError) -> Unavailable {
    Unavailable(format!("an unexpected answer from Redis: {e}"))
}

/// A room as Redis holds it.
#[derive(Debug)]
pub struct RoomState {
    /// Changes when Redis lost the room (ids restarted); empty when the room has no messages.
    pub epoch: String,
    /// Its newest messages, oldest first.
    pub messages: Vec<Arc<ChatMessage>>,
    /// Users in it, on any node.
    pub users: Vec<UserId>,
    /// Its own list (private room, direct conversation, kicks), if it has one.
    pub access: Option<crate::chat::access::RoomAccess>,
}

/// Health of this node's link to the cluster, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// The subscription is down or its probes are not coming back.
    SubscriptionDown,
    /// The heartbeat could not be written for a while: other nodes will think this one dead.
    HeartbeatLate,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::SubscriptionDown => "subscription_down",
            Self::HeartbeatLate => "heartbeat_late",
        }
    }
}

/// A cheap handle on the engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    /// This node's number in the cluster (from a Redis counter): the high bits of its
    /// connection ids, so that they are unique across nodes.
    node_number: u64,
    /// The cluster's boot id: `welcome.boot`, the same on every node.
    boot: String,
    prefix: String,
    conn: Connection,
    target: Target,
    /// `PUBLISH`, or `SPUBLISH` on a cluster: how room and node channels are published to.
    publish_command: &'static str,
    /// Replicas that must hold a message before it is acknowledged (`redis.ack_replicas`).
    ack_replicas: u32,
    history_size: usize,
    room_ttl_ms: u64,
    heartbeat_interval: Duration,
    node_timeout: Duration,
    request_timeout: Duration,
    probe_interval: Duration,
    response_timeout: Duration,
    connect_timeout: Duration,
    publish: Script,
    room_state: Script,
    presence_join: Script,
    presence_leave: Script,
    heartbeat: Script,
    sync_presence: Script,
    /// Rooms this node follows: subscribed now, and again after any reconnection.
    rooms: Mutex<HashSet<RoomId>>,
    /// The subscription connection's command half, while it is up.
    sink: Mutex<Option<subscriber::Sink>>,
    subscribed: AtomicBool,
    /// The node is stopping: no more heartbeats.
    leaving: AtomicBool,
    /// Unix ms of the last probe that came back through the subscription.
    last_probe_ms: AtomicU64,
    /// Unix ms of the last heartbeat written.
    last_heartbeat_ms: AtomicU64,
    /// The other nodes alive at the last heartbeat.
    peers: Mutex<Vec<String>>,
    pending: control::Pending,
    /// The writer task's queue: subscriptions and presence, in order.
    writer: mpsc::UnboundedSender<writer::Op>,
    metrics: Arc<Metrics>,
}

/// Ids of connection ids: 40 bits of counter under the node number, which keeps 13 bits so
/// every id stays below 2^53 (exact in JavaScript).
pub const CONN_ID_BITS: u32 = 40;
const NODE_NUMBERS: u64 = (1 << 13) - 1;

impl Engine {
    /// Connects, takes a node number and the cluster's boot id, and starts the subscription
    /// and the heartbeat. Answers the engine and the events for the registry.
    pub async fn start(
        settings: &Settings,
        node: String,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, mpsc::Receiver<EngineEvent>), Unavailable> {
        let redis = &settings.redis;
        let (target, mut conn) = crate::store::link::connect(redis).await.map_err(Unavailable)?;
        let prefix = redis.key_prefix.clone();
        let seq: u64 =
            redis::cmd("INCR").arg(format!("{prefix}{{c}}:seq")).query_async(&mut conn).await.map_err(unavailable)?;
        let candidate = crate::ids::random_id(12);
        let boot_key = format!("{prefix}{{c}}:boot");
        let (): () = redis::cmd("SET")
            .arg(&boot_key)
            .arg(&candidate)
            .arg("NX")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let boot: String = redis::cmd("GET").arg(&boot_key).query_async(&mut conn).await.map_err(unavailable)?;
        let cluster = &settings.cluster;
        let (writes, write_queue) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            node,
            node_number: seq % NODE_NUMBERS + 1,
            boot,
            prefix,
            conn,
            publish_command: match target {
                Target::Single(_) => "PUBLISH",
                Target::Cluster(_) => "SPUBLISH",
            },
            target,
            ack_replicas: redis.ack_replicas,
            history_size: settings.chat.history_size,
            room_ttl_ms: settings.chat.idle_room_ttl.as_millis() as u64,
            heartbeat_interval: cluster.heartbeat_interval,
            node_timeout: cluster.node_timeout,
            request_timeout: cluster.request_timeout,
            probe_interval: cluster.probe_interval,
            response_timeout: redis.response_timeout,
            connect_timeout: redis.connect_timeout,
            publish: Script::new(scripts::PUBLISH),
            room_state: Script::new(scripts::ROOM_STATE),
            presence_join: Script::new(scripts::PRESENCE_JOIN),
            presence_leave: Script::new(scripts::PRESENCE_LEAVE),
            heartbeat: Script::new(scripts::HEARTBEAT),
            sync_presence: Script::new(scripts::SYNC_PRESENCE),
            rooms: Mutex::default(),
            sink: Mutex::default(),
            subscribed: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            last_probe_ms: AtomicU64::new(0),
            last_heartbeat_ms: AtomicU64::new(0),
            peers: Mutex::default(),
            pending: control::Pending::default(),
            writer: writes,
            metrics,
        });
        let engine = Self { inner };
        engine.claim_node_id().await?;
        engine.beat().await?;
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(subscriber::run(engine.clone(), tx.clone()));
        tokio::spawn(writer::run(engine.clone(), write_queue, tx.clone()));
        tokio::spawn(heartbeats(engine.clone(), tx));
        // Joins need the subscription; wait for it (briefly: /readyz tells if it is late).
        let deadline = tokio::time::Instant::now() + engine.inner.connect_timeout * 2;
        while !engine.inner.subscribed.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok((engine, rx))
    }

    /// Makes sure no other live process uses this node id: a recent heartbeat under it must
    /// stop moving (it was this node's previous run, whose presence is then cleared), or
    /// starting is refused.
    async fn claim_node_id(&self) -> Result<(), Unavailable> {
        let nodes = self.key("{c}:nodes");
        let score = |engine: &Self| {
            let (nodes, node) = (nodes.clone(), engine.inner.node.clone());
            let mut conn = engine.conn();
            async move { redis::cmd("ZSCORE").arg(nodes).arg(node).query_async::<Option<u64>>(&mut conn).await }
        };
        let Some(first) = score(self).await.map_err(unavailable)? else { return Ok(()) };
        tokio::time::sleep(self.inner.heartbeat_interval * 2 + Duration::from_millis(200)).await;
        match score(self).await.map_err(unavailable)? {
            Some(now) if now != first => Err(Unavailable(format!(
                "another live process uses server.node_id = {:?}: give each node its own (or leave it empty)",
                self.inner.node
            ))),
            _ => self.reap(&self.inner.node.clone()).await.map(drop),
        }
    }

    pub fn node_number(&self) -> u64 {
        self.inner.node_number
    }

    pub fn boot(&self) -> &str {
        &self.inner.boot
    }

    fn conn(&self) -> Connection {
        self.inner.conn.clone()
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.inner.prefix)
    }

    fn room_key(&self, room: &RoomId, kind: &str) -> String {
        format!("{}{{r:{room}}}:{kind}", self.inner.prefix)
    }

    fn room_channel(&self, room: &RoomId) -> String {
        self.room_key(room, "c")
    }

    fn control_channel(&self) -> String {
        self.key("{c}:ctl")
    }

    fn node_channel(&self, node: &str, kind: &str) -> String {
        format!("{}{{n:{node}}}:{kind}", self.inner.prefix)
    }

    /// Posts `text` to `room` as `from` and answers its id; a `client_ref` seen from the same
    /// sender within the ref window answers the id it got then, and delivers nothing.
    pub async fn publish(
        &self,
        room: &RoomId,
        from: &UserId,
        text: &str,
        client_ref: Option<&str>,
    ) -> Result<u64, Unavailable> {
        let meta = self.room_key(room, "m");
        let idem = match client_ref {
            Some(r) => {
                let digest = Sha256::digest(format!("{from}\n{r}").as_bytes());
                let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
                self.room_key(room, &format!("i:{hex}"))
            }
            None => meta.clone(),
        };
        let keys = [meta, self.room_key(room, "s"), idem];
        let (answer, replicas) = self
            .invoke_replicated(scripts::PUBLISH, self.inner.publish.get_hash(), &keys, |call| {
                call.arg(from.as_str())
                    .arg(text)
                    .arg(u8::from(client_ref.is_some()))
                    .arg(self.inner.history_size)
                    .arg(self.inner.room_ttl_ms)
                    .arg(crate::ids::random_id(8))
                    .arg(self.room_channel(room))
                    .arg(crate::chat::REF_WINDOW_MS)
                    .arg(self.inner.publish_command);
            })
            .await?;
        let (id, _duplicate, _epoch): (u64, u8, String) = redis::from_redis_value(answer).map_err(malformed)?;
        self.check_replicas(replicas, &format!("message {id}"))?;
        Ok(id)
    }

    /// Runs a script whose writes must reach `redis.ack_replicas` replicas before they count:
    /// `EVALSHA` (`EVAL` when that server has not seen the script: it restarted, or a replica
    /// took over), and with replicas asked for, `WAIT` in the same pipeline, which goes down the
    /// script's connection to the keys' shard and counts the replicas that hold its writes.
    /// Answers the script's answer and, when asked for, how many replicas confirmed.
    async fn invoke_replicated(
        &self,
        source: &str,
        hash: &str,
        keys: &[String],
        args: impl Fn(&mut redis::Cmd),
    ) -> Result<(redis::Value, Option<u32>), Unavailable> {
        let pipeline = |command: &str, script: &str| {
            let mut call = redis::cmd(command);
            call.arg(script).arg(keys.len()).arg(keys);
            args(&mut call);
            let mut pipe = redis::pipe();
            pipe.add_command(call);
            // Half the response timeout: WAIT answers (with fewer replicas) before the call
            // itself would time out.
            if self.inner.ack_replicas > 0 {
                let wait_ms = (self.inner.response_timeout.as_millis() as u64 / 2).max(1);
                pipe.cmd("WAIT").arg(self.inner.ack_replicas).arg(wait_ms);
            }
            pipe
        };
        let answers: Vec<redis::Value> = match pipeline("EVALSHA", hash).query_async(&mut self.conn()).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                pipeline("EVAL", source).query_async(&mut self.conn()).await
            }
            answer => answer,
        }
        .map_err(unavailable)?;
        let mut answers = answers.into_iter();
        let answer = answers.next().unwrap_or(redis::Value::Nil);
        let replicas = match answers.next() {
            Some(count) => Some(redis::from_redis_value(count).map_err(malformed)?),
            None => None,
        };
        Ok((answer, replicas))
    }

    /// `unavailable` (and counted) when fewer replicas than `redis.ack_replicas` confirmed `what`.
    fn check_replicas(&self, replicas: Option<u32>, what: &str) -> Result<(), Unavailable> {
        match replicas {
            Some(replicas) if replicas < self.inner.ack_replicas => {
                self.inner.metrics.cluster_unreplicated.inc();
                Err(Unavailable(format!(
                    "{what} reached {replicas} of redis.ack_replicas = {} replicas in time",
                    self.inner.ack_replicas
                )))
            }
            _ => Ok(()),
        }
    }

    /// Starts following `room`: subscribes (and waits for Redis to confirm) before anything
    /// is read, so nothing published from then on is missed.
    pub async fn follow(&self, room: &RoomId) -> Result<(), Unavailable> {
        self.inner.rooms.lock().expect("not poisoned").insert(room.clone());
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.write(writer::Op::Subscribe(room.clone(), reply));
        answer.await.unwrap_or_else(|_| Err(Unavailable("the engine stopped".into())))
    }

    /// Stops following `room` (no local member left): unsubscribes, and clears whatever
    /// presence of this node is left there.
    pub fn unfollow(&self, room: &RoomId) {
        self.inner.rooms.lock().expect("not poisoned").remove(room);
        self.write(writer::Op::Unfollow(room.clone()));
    }

    /// Announces `user` in `room` from this node, or their departure: in order with the
    /// node's other changes, written by the writer task.
    pub fn announce(&self, room: &RoomId, user: &UserId, event: PresenceEvent) {
        self.write(writer::Op::Presence(room.clone(), user.clone(), event, None));
    }

    /// [`Engine::announce`], resolving once the write was made (or failed: the node's whole
    /// presence is then written again later).
    pub fn announce_and_wait(
        &self,
        room: &RoomId,
        user: &UserId,
        event: PresenceEvent,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let (written, done) = tokio::sync::oneshot::channel();
        self.write(writer::Op::Presence(room.clone(), user.clone(), event, Some(written)));
        async move {
            let _ = done.await;
        }
    }

    /// Makes this node's presence in Redis exactly `present` (after a new subscription, after
    /// being taken for dead, or after a change could not be written).
    pub fn sync_presence(&self, present: Vec<(RoomId, Vec<UserId>)>) {
        self.write(writer::Op::Sync(present));
    }

    fn write(&self, op: writer::Op) {
        // The writer lives as long as the registry reads events; after that nothing matters.
        let _ = self.inner.writer.send(op);
    }

    async fn subscribe(&self, room: &RoomId) -> Result<(), Unavailable> {
        let sink = self.inner.sink.lock().expect("not poisoned").clone();
        let mut sink = sink.ok_or_else(|| Unavailable("the subscription is down".into()))?;
        tokio::time::timeout(self.inner.response_timeout, sink.subscribe_room(self.room_channel(room)))
            .await
            .map_err(|_| Unavailable("timed out subscribing".into()))?
            .map_err(unavailable)
    }

    async fn unsubscribe_and_clear(&self, room: &RoomId) -> Result<(), Unavailable> {
        let sink = self.inner.sink.lock().expect("not poisoned").clone();
        if let Some(mut sink) = sink {
            // A failure here is harmless: a dead connection subscribes only to followed rooms
            // when it is made again, and a stray message for an unfollowed room is ignored.
            let _ =
                tokio::time::timeout(self.inner.response_timeout, sink.unsubscribe_room(self.room_channel(room))).await;
        }
        self.reap_room(&self.inner.node, room).await?;
        let _: i64 = redis::cmd("SREM")
            .arg(self.node_channel(&self.inner.node, "rooms"))
            .arg(room.as_str())
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The room's epoch, last id, newest `chat.history_size` messages and users.
    pub async fn room_state(&self, room: &RoomId) -> Result<RoomState, Unavailable> {
        type Entry = (String, Vec<(String, String)>);
        let (epoch, _top, entries, users, access): (String, u64, Vec<Entry>, Vec<String>, Vec<String>) = self
            .inner
            .room_state
            .key(self.room_key(room, "m"))
            .key(self.room_key(room, "s"))
            .key(self.room_key(room, "pu"))
            .key(self.room_key(room, "a"))
            .arg(self.inner.history_size)
            .arg(crate::ids::random_id(8))
            .arg(self.inner.room_ttl_ms)
            .arg(self.inner.room_ttl_ms.saturating_mul(2))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut messages: Vec<Arc<ChatMessage>> =
            entries.into_iter().filter_map(|(id, fields)| stream_entry(room, &id, fields)).collect();
        messages.reverse();
        let users = users.into_iter().map(UserId::new).collect();
        Ok(RoomState { epoch, messages, users, access: access::parse_access(access) })
    }

    async fn write_presence(&self, room: &RoomId, user: &UserId, event: PresenceEvent) -> Result<(), Unavailable> {
        let script = match event {
            PresenceEvent::Join => {
                // The rooms where this node holds presence, for whoever reaps it if it dies.
                let _: i64 = redis::cmd("SADD")
                    .arg(self.node_channel(&self.inner.node, "rooms"))
                    .arg(room.as_str())
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                &self.inner.presence_join
            }
            PresenceEvent::Leave => &self.inner.presence_leave,
        };
        let _: i64 = script
            .key(self.room_key(room, "pn"))
            .key(self.room_key(room, "pu"))
            .arg(&self.inner.node)
            .arg(user.as_str())
            .arg(self.room_channel(room))
            .arg(self.inner.room_ttl_ms)
            .arg(self.inner.publish_command)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// This node's rooms and presence made what they are here again: Redis may have restarted
    /// without them, a reaper may have taken them, and departures may not have been written
    /// while it was unreachable. Rooms this node no longer follows lose its presence.
    async fn write_all_presence(&self, present: &[(RoomId, Vec<UserId>)]) -> Result<(), Unavailable> {
        let rooms_key = self.node_channel(&self.inner.node, "rooms");
        let listed: Vec<String> =
            redis::cmd("SMEMBERS").arg(&rooms_key).query_async(&mut self.conn()).await.map_err(unavailable)?;
        for room in listed.iter().filter_map(|r| RoomId::parse(r).ok()) {
            if !present.iter().any(|(r, _)| *r == room) {
                self.reap_room(&self.inner.node, &room).await?;
                let _: i64 = redis::cmd("SREM")
                    .arg(&rooms_key)
                    .arg(room.as_str())
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
            }
        }
        for (room, users) in present {
            let _: i64 = redis::cmd("SADD")
                .arg(&rooms_key)
                .arg(room.as_str())
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            self.set_presence(&self.inner.node, room, users).await?;
        }
        Ok(())
    }

    /// The cluster link's state for `/readyz`.
    pub fn health(&self) -> Health {
        let now = now_unix_ms();
        let probe_window = self.inner.probe_interval.as_millis() as u64 * 3 + 1000;
        if !self.inner.subscribed.load(Ordering::Relaxed)
            || now.saturating_sub(self.inner.last_probe_ms.load(Ordering::Relaxed)) > probe_window
        {
            return Health::SubscriptionDown;
        }
        let beat_window = (self.inner.node_timeout.as_millis() as u64 / 2).max(1000);
        if now.saturating_sub(self.inner.last_heartbeat_ms.load(Ordering::Relaxed)) > beat_window {
            return Health::HeartbeatLate;
        }
        Health::Ready
    }

    /// Writes this node's heartbeat, and takes the dead nodes' users out of presence.
    /// Answers whether this node had been missing from the live set (taken for dead).
    async fn beat(&self) -> Result<bool, Unavailable> {
        let (_now, dead, live, missing): (u64, Vec<String>, Vec<String>, u8) = self
            .inner
            .heartbeat
            .key(self.key("{c}:nodes"))
            .arg(&self.inner.node)
            .arg(self.inner.node_timeout.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.inner.last_heartbeat_ms.store(now_unix_ms(), Ordering::Relaxed);
        *self.inner.peers.lock().expect("not poisoned") = live.into_iter().filter(|n| *n != self.inner.node).collect();
        for node in dead.into_iter().filter(|n| *n != self.inner.node) {
            let rooms = self.reap(&node).await?;
            tracing::warn!(node, rooms, "a node stopped sending heartbeats; its users left presence");
            self.inner.metrics.cluster_nodes_reaped.inc();
        }
        Ok(missing == 1)
    }

    /// Removes a dead node's users from the presence of every room it was in (announcing
    /// those on no other node as gone), then the node itself, last, so that a reaper that
    /// dies halfway leaves the work for the next.
    async fn reap(&self, node: &str) -> Result<usize, Unavailable> {
        let rooms_key = self.node_channel(node, "rooms");
        let rooms: Vec<String> =
            redis::cmd("SMEMBERS").arg(&rooms_key).query_async(&mut self.conn()).await.map_err(unavailable)?;
        for room in rooms.iter().filter_map(|r| RoomId::parse(r).ok()) {
            self.reap_room(node, &room).await?;
        }
        let _: i64 = redis::cmd("DEL").arg(&rooms_key).query_async(&mut self.conn()).await.map_err(unavailable)?;
        let _: i64 = redis::cmd("ZREM")
            .arg(self.key("{c}:nodes"))
            .arg(node)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(rooms.len())
    }

    /// Takes `node`'s users out of one room's presence: its presence there made empty.
    async fn reap_room(&self, node: &str, room: &RoomId) -> Result<(), Unavailable> {
        self.set_presence(node, room, &[]).await
    }

    /// Makes `node`'s presence in `room` exactly `users` ([`scripts::SYNC_PRESENCE`]).
    async fn set_presence(&self, node: &str, room: &RoomId, users: &[UserId]) -> Result<(), Unavailable> {
        let mut call = self.inner.sync_presence.key(self.room_key(room, "pn"));
        call.key(self.room_key(room, "pu"))
            .arg(node)
            .arg(self.room_channel(room))
            .arg(self.inner.room_ttl_ms)
            .arg(self.inner.publish_command);
        for user in users {
            call.arg(user.as_str());
        }
        let _: i64 = call.invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        Ok(())
    }

    /// Leaves the cluster on a clean stop: no heartbeat any more, and presence is taken away
    /// at once rather than after `cluster.node_timeout`.
    pub async fn leave_cluster(&self) {
        self.inner.leaving.store(true, Ordering::Relaxed);
        if let Err(e) = self.reap(&self.inner.node.clone()).await {
            tracing::warn!(error = %e, "could not remove this node from the cluster on stop");
        }
    }
}

/// Heartbeats until the registry is gone.
async fn heartbeats(engine: Engine, events: mpsc::Sender<EngineEvent>) {
    let mut ticker = tokio::time::interval(engine.inner.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = events.closed() => return,
        }
        if engine.inner.leaving.load(Ordering::Relaxed) {
            return;
        }
        match engine.beat().await {
            // Taken for dead (a stall longer than cluster.node_timeout), or Redis lost the live
            // set: presence is written again, as after a new subscription.
            Ok(true) => {
                tracing::warn!("this node was missing from the live nodes; writing its presence again");
                if events.send(EngineEvent::Resubscribed).await.is_err() {
                    return;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cluster heartbeat failed"),
        }
    }
}

/// A stream entry `<offset>-0` with fields `f`, `t`, `ts`, as a message.
fn stream_entry(room: &RoomId, id: &str, fields: Vec<(String, String)>) -> Option<Arc<ChatMessage>> {
    let offset = id.split('-').next()?.parse().ok()?;
    let (mut from, mut text, mut ts) = (None, None, None);
    for (name, value) in fields {
        match name.as_str() {
            "f" => from = Some(value),
            "t" => text = Some(value),
            "ts" => ts = value.parse().ok(),
            _ => {}
        }
    }
    Some(Arc::new(ChatMessage { room: room.clone(), id: offset, from: UserId::new(from?), text: text?, ts: ts? }))
}

/// A room channel's payload: `m <epoch> <offset> <ts> <user length>\n<user><text>` (the
/// length in bytes, so no user name can pass its text off as someone else's), or
/// `p <join|leave> <user>`.
fn room_event(room: &RoomId, payload: &str) -> Option<EngineEvent> {
    if let Some(rest) = payload.strip_prefix("m ") {
        let (head, rest) = rest.split_once('\n')?;
        let mut head = head.split(' ');
        let (epoch, offset, ts) = (head.next()?, head.next()?.parse().ok()?, head.next()?.parse().ok()?);
        let user_len: usize = head.next()?.parse().ok()?;
        let (from, text) = (rest.get(..user_len)?, rest.get(user_len..)?);
        let message =
            ChatMessage { room: room.clone(), id: offset, from: UserId::new(from), text: text.to_owned(), ts };
        return Some(EngineEvent::Message { epoch: epoch.to_owned(), message: Arc::new(message) });
    }
    let rest = payload.strip_prefix("p ")?;
    let (event, user) = rest.split_once(' ')?;
    let event = match event {
        "join" => PresenceEvent::Join,
        "leave" => PresenceEvent::Leave,
        _ => return None,
    };
    Some(EngineEvent::Presence { room: room.clone(), user: UserId::new(user), event })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_payloads_parse_with_text_that_holds_newlines_and_spaces() {
        let room = RoomId::parse("lobby").unwrap();
        let Some(EngineEvent::Message { epoch, message }) =
            room_event(&room, "m ep1 42 1700000000123 5\nalicehi there\nsecond line")
        else {
            panic!("a message")
        };
        assert_eq!((epoch.as_str(), message.id, message.ts), ("ep1", 42, 1_700_000_000_123));
        assert_eq!((message.from.as_str(), message.text.as_str()), ("alice", "hi there\nsecond line"));
        let Some(EngineEvent::Presence { user, event, .. }) = room_event(&room, "p leave bob smith") else {
            panic!("a presence event")
        };
        assert_eq!((user.as_str(), event), ("bob smith", PresenceEvent::Leave));
        let Some(EngineEvent::Message { message, .. }) = room_event(&room, "m ep1 1 1 7\nal\nice\ntext") else {
            panic!("a message")
        };
        assert_eq!(
            (message.from.as_str(), message.text.as_str()),
            ("al\nice\n", "text"),
            "a name is its declared length"
        );
        assert!(room_event(&room, "m ep1 1 1 99\nalice").is_none());
        assert!(room_event(&room, "m broken").is_none());
        assert!(room_event(&room, "x what").is_none());
    }

    #[test]
    fn stream_entries_need_every_field() {
        let room = RoomId::parse("lobby").unwrap();
        let fields = |ts: &str| vec![("f".into(), "alice".into()), ("t".into(), "hi".into()), ("ts".into(), ts.into())];
        assert_eq!(stream_entry(&room, "7-0", fields("5")).unwrap().id, 7);
        assert!(stream_entry(&room, "7-0", fields("x")).is_none());
    }
}

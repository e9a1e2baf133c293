//! The subscription: one Redis connection in subscribe mode carrying the rooms this node
//! follows, the control channels and this node's probe channel.
//!
//! A broken connection ends the message stream and is noticed at once. One that still looks
//! open but delivers nothing (a half-dead network, a proxy that stopped forwarding) is found
//! by the probe: every `cluster.probe_interval` the node publishes to its own probe channel,
//! and when three intervals pass without one coming back, the connection is dropped. Either
//! way the node reconnects, subscribes everything again and tells the registry, which refills
//! each room from its stream, so nothing posted meanwhile is lost.
//!
//! On a Redis Cluster the subscription is a cluster connection speaking RESP3: room and node
//! channels are sharded (`SSUBSCRIBE`, each on the shard that owns the channel's slot), the
//! control channel is a plain one. The `redis` crate subscribes again by itself when a shard's
//! connection is remade or a slot moves (a failover); each such confirmation of a room already
//! confirmed means messages may have been missed there, so the registry is told (once per burst)
//! to refill, as after a reconnection. The probe goes through the shard of this node's channels.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind};
use tokio::sync::mpsc;

use super::{room_event, Engine, EngineEvent, Unavailable};
use crate::ids::RoomId;
use crate::store::link::Target;
use crate::time::now_unix_ms;

/// The command half of the subscription, for following and leaving rooms.
#[derive(Clone)]
pub(super) enum Sink {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

impl Sink {
    pub(super) async fn subscribe_room(&mut self, channel: String) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.subscribe(channel).await,
            Self::Cluster(conn) => conn.ssubscribe(channel).await,
        }
    }

    pub(super) async fn unsubscribe_room(&mut self, channel: String) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.unsubscribe(channel).await,
            Self::Cluster(conn) => conn.sunsubscribe(channel).await,
        }
    }
}

/// What the subscription delivers, whichever kind it is.
enum Incoming {
    Stream(redis::aio::PubSubStream),
    Pushes(mpsc::UnboundedReceiver<PushInfo>),
}

/// Runs until the registry (the events' reader) is gone.
pub(super) async fn run(engine: Engine, events: mpsc::Sender<EngineEvent>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect(&engine).await {
            Ok(stream) => {
                backoff = Duration::from_millis(100);
                engine.inner.metrics.cluster_resubscriptions.inc();
                if events.send(EngineEvent::Resubscribed).await.is_err() {
                    return;
                }
                let ended = listen(&engine, stream, &events).await;
                engine.inner.subscribed.store(false, Ordering::Relaxed);
                engine.inner.sink.lock().expect("not poisoned").take();
                match ended {
                    Ended::RegistryGone => return,
                    Ended::Closed => tracing::warn!("the Redis subscription closed; reconnecting"),
                    Ended::ProbeLost => {
                        tracing::warn!("the Redis subscription stopped delivering (probes lost); reconnecting")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot subscribe to Redis");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = events.closed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

enum Ended {
    RegistryGone,
    Closed,
    ProbeLost,
}

/// Opens the connection and subscribes the control channels and every followed room.
async fn connect(engine: &Engine) -> Result<Incoming, Unavailable> {
    let client = match &engine.inner.target {
        Target::Single(client) => client.clone(),
        Target::Cluster(seeds) => {
            let seeds = seeds.clone();
            return connect_cluster(engine, &seeds).await;
        }
    };
    let inner = &engine.inner;
    let pubsub = tokio::time::timeout(inner.connect_timeout * 2, client.get_async_pubsub())
        .await
        .map_err(|_| Unavailable("timed out connecting".into()))?
        .map_err(super::unavailable)?;
    let (mut sink, stream) = pubsub.split();
    let mut channels = vec![
        engine.control_channel(),
        engine.node_channel(&inner.node, "ctl"),
        engine.node_channel(&inner.node, "probe"),
    ];
    // Publish the sink before reading the room list: a room followed from now on is subscribed
    // through it, one followed before is in the list (both at worst: subscribing twice is harmless).
    *inner.sink.lock().expect("not poisoned") = Some(Sink::Single(sink.clone()));
    let rooms: Vec<RoomId> = inner.rooms.lock().expect("not poisoned").iter().cloned().collect();
    channels.extend(rooms.iter().map(|room| engine.room_channel(room)));
    for batch in channels.chunks(512) {
        tokio::time::timeout(inner.response_timeout * 4, sink.subscribe(batch))
            .await
            .map_err(|_| Unavailable("timed out subscribing".into()))?
            .map_err(super::unavailable)?;
    }
    inner.subscribed.store(true, Ordering::Relaxed);
    inner.last_probe_ms.store(now_unix_ms(), Ordering::Relaxed);
    Ok(Incoming::Stream(stream))
}

/// [`connect`] on a Redis Cluster: one RESP3 cluster connection whose pushes (messages and
/// subscription confirmations) arrive on a channel.
async fn connect_cluster(engine: &Engine, seeds: &crate::store::link::ClusterSeeds) -> Result<Incoming, Unavailable> {
    let inner = &engine.inner;
    let (pushes, incoming) = mpsc::unbounded_channel();
    let client = seeds.client(Some(pushes)).map_err(Unavailable)?;
    let mut conn = tokio::time::timeout(inner.connect_timeout * 2, client.get_async_connection())
        .await
        .map_err(|_| Unavailable("timed out connecting".into()))?
        .map_err(super::unavailable)?;
    let limit = inner.response_timeout * 4;
    within(limit, conn.subscribe(engine.control_channel())).await?;
    // Both of this node's channels carry its tag: one slot, one command.
    let own = [engine.node_channel(&inner.node, "ctl"), engine.node_channel(&inner.node, "probe")];
    within(limit, conn.ssubscribe(&own[..])).await?;
    *inner.sink.lock().expect("not poisoned") = Some(Sink::Cluster(conn.clone()));
    // Each room's channel lives on its own slot: one SSUBSCRIBE per room, all in flight at once.
    let rooms: Vec<RoomId> = inner.rooms.lock().expect("not poisoned").iter().cloned().collect();
    for batch in rooms.chunks(256) {
        let subscribed = futures_util::future::try_join_all(batch.iter().map(|room| {
            let (mut conn, channel) = (conn.clone(), engine.room_channel(room));
            async move { conn.ssubscribe(channel).await }
        }));
        within(limit, subscribed).await?;
    }
    inner.subscribed.store(true, Ordering::Relaxed);
    inner.last_probe_ms.store(now_unix_ms(), Ordering::Relaxed);
    Ok(Incoming::Pushes(incoming))
}

/// A subscribing call, bounded.
async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, Unavailable> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| Unavailable("timed out subscribing".into()))?
        .map_err(super::unavailable)
}

impl Incoming {
    /// The next message or sharded (un)subscription confirmation; `None` once the connection
    /// is gone.
    async fn next(&mut self) -> Option<Delivery> {
        match self {
            Self::Stream(stream) => {
                let msg = stream.next().await?;
                Some(Delivery::Message(msg.get_channel_name().to_owned(), msg.get_payload_bytes().to_vec()))
            }
            Self::Pushes(pushes) => loop {
                let PushInfo { kind, data } = pushes.recv().await?;
                let text = |i: usize| match data.get(i) {
                    Some(redis::Value::BulkString(bytes)) => Some(bytes.clone()),
                    Some(redis::Value::SimpleString(text)) => Some(text.clone().into_bytes()),
                    _ => None,
                };
                let channel = text(0).and_then(|c| String::from_utf8(c).ok());
                match (kind, channel) {
                    (PushKind::Message | PushKind::SMessage, Some(channel)) => {
                        return Some(Delivery::Message(channel, text(1).unwrap_or_default()))
                    }
                    (PushKind::SSubscribe, Some(channel)) => return Some(Delivery::Subscribed(channel)),
                    (PushKind::SUnsubscribe, Some(channel)) => return Some(Delivery::Unsubscribed(channel)),
                    (PushKind::Disconnection, _) => {
                        tracing::warn!("a Redis Cluster connection dropped; it is remade and subscribed again")
                    }
                    _ => {}
                }
            },
        }
    }
}

/// What the subscription delivered.
enum Delivery {
    /// (channel, payload).
    Message(String, Vec<u8>),
    /// A sharded channel's subscription was confirmed (first, or again after a failover).
    Subscribed(String),
    Unsubscribed(String),
}

/// How long confirmations of renewed subscriptions are gathered before one refill.
const RESUBSCRIBED_QUIET: Duration = Duration::from_millis(100);

async fn listen(engine: &Engine, mut incoming: Incoming, events: &mpsc::Sender<EngineEvent>) -> Ended {
    let inner = &engine.inner;
    let control = engine.control_channel();
    let replies = engine.node_channel(&inner.node, "ctl");
    let probe_channel = engine.node_channel(&inner.node, "probe");
    let room_prefix = format!("{}{{r:", inner.prefix);
    let mut probe = tokio::time::interval(inner.probe_interval);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let probe_window = inner.probe_interval.as_millis() as u64 * 3;
    // Sharded room channels confirmed on this connection: a second confirmation is a renewal.
    let mut confirmed: HashSet<String> = HashSet::new();
    let mut refill_at: Option<tokio::time::Instant> = None;
    loop {
        let refill = async {
            match refill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let (channel, payload) = tokio::select! {
            delivery = incoming.next() => match delivery {
                Some(Delivery::Message(channel, payload)) => (channel, payload),
                Some(Delivery::Subscribed(channel)) => {
                    if channel.starts_with(&room_prefix) && !confirmed.insert(channel) {
                        refill_at = Some(tokio::time::Instant::now() + RESUBSCRIBED_QUIET);
                    }
                    continue;
                }
                Some(Delivery::Unsubscribed(channel)) => {
                    confirmed.remove(&channel);
                    continue;
                }
                None => return Ended::Closed,
            },
            _ = refill => {
                refill_at = None;
                tracing::info!("Redis Cluster subscriptions were renewed; refilling the rooms");
                if events.send(EngineEvent::Resubscribed).await.is_err() {
                    return Ended::RegistryGone;
                }
                continue;
            }
            _ = probe.tick() => {
                if now_unix_ms().saturating_sub(inner.last_probe_ms.load(Ordering::Relaxed)) > probe_window {
                    return Ended::ProbeLost;
                }
                let (mut conn, channel) = (engine.conn(), probe_channel.clone());
                let publish = inner.publish_command;
                tokio::spawn(async move {
                    let _: Result<i64, _> = redis::cmd(publish).arg(channel).arg("probe").query_async(&mut conn).await;
                });
                continue;
            }
            _ = events.closed() => return Ended::RegistryGone,
        };
        let channel = channel.as_str();
        let Ok(payload) = std::str::from_utf8(&payload) else { continue };
        let event = if channel == probe_channel {
            inner.last_probe_ms.store(now_unix_ms(), Ordering::Relaxed);
            None
        } else if channel == replies {
            inner.pending.answer(payload);
            None
        } else if channel == control {
            match serde_json::from_str::<super::ControlRequest>(payload) {
                Ok(request) if request.from != inner.node => Some(EngineEvent::Control(request)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "ignored a malformed control request");
                    None
                }
            }
        } else {
            let room = channel.strip_prefix(&room_prefix).and_then(|r| r.strip_suffix("}:c"));
            room.and_then(|r| RoomId::parse(r).ok()).and_then(|room| room_event(&room, payload))
        };
        if let Some(event) = event {
            if events.send(event).await.is_err() {
                return Ended::RegistryGone;
            }
        }
    }
}

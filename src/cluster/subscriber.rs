//! The subscription: one Redis connection in subscribe mode carrying the rooms this node
//! follows, the control channels and this node's probe channel.
//!
//! A broken connection ends the message stream and is noticed at once. One that still looks
//! open but delivers nothing (a half-dead network, a proxy that stopped forwarding) is found
//! by the probe: every `cluster.probe_interval` the node publishes to its own probe channel,
//! and when three intervals pass without one coming back, the connection is dropped. Either
//! way the node reconnects, subscribes everything again and tells the registry, which refills
//! each room from its stream, so nothing posted meanwhile is lost.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{room_event, Engine, EngineEvent};
use crate::ids::RoomId;
use crate::time::now_unix_ms;

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
async fn connect(engine: &Engine) -> Result<redis::aio::PubSubStream, super::Unavailable> {
    let inner = &engine.inner;
    let pubsub = tokio::time::timeout(inner.connect_timeout * 2, inner.client.get_async_pubsub())
        .await
        .map_err(|_| super::Unavailable("timed out connecting".into()))?
        .map_err(super::unavailable)?;
    let (mut sink, stream) = pubsub.split();
    let mut channels = vec![
        engine.control_channel(),
        engine.node_channel(&inner.node, "ctl"),
        engine.node_channel(&inner.node, "probe"),
    ];
    // Publish the sink before reading the room list: a room followed from now on is subscribed
    // through it, one followed before is in the list (both at worst: subscribing twice is harmless).
    *inner.sink.lock().expect("not poisoned") = Some(sink.clone());
    let rooms: Vec<RoomId> = inner.rooms.lock().expect("not poisoned").iter().cloned().collect();
    channels.extend(rooms.iter().map(|room| engine.room_channel(room)));
    for batch in channels.chunks(512) {
        tokio::time::timeout(inner.response_timeout * 4, sink.subscribe(batch))
            .await
            .map_err(|_| super::Unavailable("timed out subscribing".into()))?
            .map_err(super::unavailable)?;
    }
    inner.subscribed.store(true, Ordering::Relaxed);
    inner.last_probe_ms.store(now_unix_ms(), Ordering::Relaxed);
    Ok(stream)
}

async fn listen(engine: &Engine, mut stream: redis::aio::PubSubStream, events: &mpsc::Sender<EngineEvent>) -> Ended {
    let inner = &engine.inner;
    let control = engine.control_channel();
    let replies = engine.node_channel(&inner.node, "ctl");
    let probe_channel = engine.node_channel(&inner.node, "probe");
    let room_prefix = format!("{}{{r:", inner.prefix);
    let mut probe = tokio::time::interval(inner.probe_interval);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let probe_window = inner.probe_interval.as_millis() as u64 * 3;
    loop {
        let msg = tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => msg,
                None => return Ended::Closed,
            },
            _ = probe.tick() => {
                if now_unix_ms().saturating_sub(inner.last_probe_ms.load(Ordering::Relaxed)) > probe_window {
                    return Ended::ProbeLost;
                }
                let (mut conn, channel) = (engine.conn(), probe_channel.clone());
                tokio::spawn(async move {
                    let _: Result<i64, _> = redis::cmd("PUBLISH").arg(channel).arg("probe").query_async(&mut conn).await;
                });
                continue;
            }
            _ = events.closed() => return Ended::RegistryGone,
        };
        let channel = msg.get_channel_name();
        let Ok(payload) = std::str::from_utf8(msg.get_payload_bytes()) else { continue };
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

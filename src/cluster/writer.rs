//! One task that makes this node's changes to its subscriptions and its presence, in the order
//! the registry asked for them. Done as separate tasks they could overtake each other: an
//! unsubscribe after the re-subscribe of a room joined again at once (the node would miss the
//! room's messages), or the clean-up of a room left after the arrival of its next member.
//!
//! A change that fails (Redis unreachable) is not retried alone: the writer asks the registry
//! for its whole presence, and writes that (`Sync`), which repairs whatever was missed.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Engine, EngineEvent, Unavailable};
use crate::ids::{RoomId, UserId};
use crate::protocol::PresenceEvent;

/// How long the writer waits after a failure before asking for the whole presence.
const RETRY: Duration = Duration::from_secs(1);

pub(super) enum Op {
    Subscribe(RoomId, oneshot::Sender<Result<(), Unavailable>>),
    /// Stop listening to a room and clear this node's presence there.
    Unfollow(RoomId),
    /// With a reply: told once the write is done (or failed).
    Presence(RoomId, UserId, PresenceEvent, Option<oneshot::Sender<()>>),
    /// This node's whole presence: rooms it follows and the users in each.
    Sync(Vec<(RoomId, Vec<UserId>)>),
}

pub(super) async fn run(engine: Engine, mut ops: mpsc::UnboundedReceiver<Op>, events: mpsc::Sender<EngineEvent>) {
    let mut dirty = false;
    loop {
        let op = if dirty {
            match tokio::time::timeout(RETRY, ops.recv()).await {
                Ok(op) => op,
                Err(_) => {
                    // Quiet for a while after a failure: ask for the whole presence.
                    if events.send(EngineEvent::PresenceStale).await.is_err() {
                        return;
                    }
                    dirty = false;
                    continue;
                }
            }
        } else {
            ops.recv().await
        };
        let Some(op) = op else { return };
        let done = match op {
            Op::Subscribe(room, reply) => {
                let _ = reply.send(engine.subscribe(&room).await);
                Ok(())
            }
            Op::Unfollow(room) => engine.unsubscribe_and_clear(&room).await,
            Op::Presence(room, user, event, written) => {
                let done = engine.write_presence(&room, &user, event).await;
                if let Some(written) = written {
                    let _ = written.send(());
                }
                done
            }
            Op::Sync(present) => engine.write_all_presence(&present).await,
        };
        if let Err(e) = done {
            if !dirty {
                tracing::warn!(error = %e, "could not write this node's presence; it is written whole once Redis answers");
            }
            dirty = true;
        }
    }
}

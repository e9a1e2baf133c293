//! Session mode: the sockets of a server-side session close the moment it ends, however it
//! ends (logout, an operator, idle or absolute expiry, its key vanishing from Redis). The
//! store's notifications drive it; after a possible gap in them, and every
//! `session.reconcile_interval`, the sessions with live sockets are re-checked.

use actix::Addr;

use super::{CloseSession, ListSessionIds, Registry};
use crate::protocol::close;
use crate::store::{SessionEvent, Stores};

/// Closes the sockets of every session that ends, however it ends, and re-checks the sessions
/// with live sockets after a possible gap in notifications and every `reconcile_every`.
pub async fn follow_sessions(stores: Stores, registry: Addr<Registry>, reconcile_every: std::time::Duration) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = stores.sessions.events();
    let mut ticker = tokio::time::interval(reconcile_every);
    loop {
        let resync = tokio::select! {
            event = events.recv() => match event {
                Ok(SessionEvent::Ended(session_id)) => {
                    registry.do_send(CloseSession { session_id, code: close::SESSION_ENDED, reason: "session ended" });
                    false
                }
                Ok(SessionEvent::Resync) | Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
            _ = ticker.tick() => true,
        };
        if resync {
            reconcile_sessions(&stores, &registry).await;
        }
    }
}

async fn reconcile_sessions(stores: &Stores, registry: &Addr<Registry>) {
    let Ok(ids) = registry.send(ListSessionIds).await else { return };
    if ids.is_empty() {
        return;
    }
    match stores.sessions.alive(&ids).await {
        Ok(alive) => {
            for (session_id, _) in ids.into_iter().zip(alive).filter(|(_, alive)| !alive) {
                tracing::info!("session gone from the store without a notification; closing its sockets");
                registry.do_send(CloseSession { session_id, code: close::SESSION_ENDED, reason: "session ended" });
            }
        }
        // Unknown is not ended: sockets stay while the store cannot be asked.
        Err(e) => tracing::debug!(error = %e, "session reconciliation skipped"),
    }
}

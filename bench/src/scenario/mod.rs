//! The scenarios. Each takes the server it measures, the secret its tokens are signed with and
//! its options, and returns a report that prints itself; `compare` reads the same reports.
//!
//! - [`connect`]: handshakes per second, per carrier of the credential.
//! - [`hold`]: server memory per idle authenticated socket, from /proc.
//! - [`fanout`]: one room's messages to every member, on one node or several sharing Redis.
//! - [`ops`]: operator closes through one node of sockets on others.
//! - [`expiry`]: sockets closed with 4001 at their token's `exp`, all in one second or spread.
//! - [`churn`]: connects and disconnects per second.
//! - [`slow`]: a fan-out while some members do not read.

pub mod churn;
pub mod connect;
pub mod expiry;
pub mod fanout;
pub mod hold;
pub mod ops;
pub mod slow;

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::client::ServerFrame;

/// `n` tasks spread over `threads` threads, each thread a single-threaded tokio runtime
/// running tasks `t, t + threads, …`; the results come back in task order.
pub struct Crowd<T> {
    threads: Vec<JoinHandle<Vec<(usize, T)>>>,
}

impl<T: Send + 'static> Crowd<T> {
    pub fn start<F, Fut>(n: usize, threads: usize, task: F) -> Self
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let task = Arc::new(task);
        let threads = (0..threads.max(1))
            .map(|t| {
                let task = task.clone();
                let count = threads.max(1);
                std::thread::Builder::new()
                    .name(format!("client-{t}"))
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a tokio runtime");
                        runtime.block_on(async move {
                            let handles: Vec<_> = (t..n).step_by(count).map(|i| (i, tokio::spawn(task(i)))).collect();
                            let mut results = Vec::with_capacity(handles.len());
                            for (i, handle) in handles {
                                // A task that panicked is a bug in the tool: say so loudly.
                                results.push((i, handle.await.expect("a client task panicked")));
                            }
                            results
                        })
                    })
                    .expect("a client thread")
            })
            .collect();
        Self { threads }
    }

    /// Whether every thread is done.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Waits for every task; results in task order.
    pub fn join(self) -> Vec<T> {
        let mut all: Vec<(usize, T)> =
            self.threads.into_iter().flat_map(|t| t.join().expect("a client thread panicked")).collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, r)| r).collect()
    }
}

/// Polls `done` every 10 ms until it holds or `limit` passes; whether it held.
pub fn wait_for(limit: std::time::Duration, done: impl Fn() -> bool) -> bool {
    let give_up = std::time::Instant::now() + limit;
    while !done() {
        if std::time::Instant::now() >= give_up {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// How a count of reasons prints: `3 × HTTP 429 …` lines.
pub fn reasons(counts: &std::collections::BTreeMap<String, usize>) -> String {
    counts.iter().map(|(why, n)| format!("\n    {n} × {why}")).collect()
}

/// Joins `room` on an open socket and waits for its `joined` (presence and other frames are
/// skipped).
pub async fn join(ws: &mut crate::client::Ws, room: &str) -> Result<(), String> {
    let frame = serde_json::json!({"type": "join", "room": room}).to_string();
    ws.send(Message::text(frame)).await.map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerFrame>(text.as_str()) {
                Ok(frame) if frame.kind == "joined" => return Ok(()),
                Ok(frame) if frame.kind == "error" => return Err(format!("join refused: {:?}", frame.code)),
                _ => {}
            },
            Some(Ok(_)) => {}
            _ => return Err("the connection ended before joined".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crowd_returns_every_result_in_task_order() {
        let crowd = Crowd::start(10, 3, |i| async move { i * 2 });
        assert_eq!(crowd.join(), (0..10).map(|i| i * 2).collect::<Vec<_>>());
    }
}

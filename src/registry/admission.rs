//! Registrations reach the registry in batches: the handshakes that finish together (in one
//! turn of their workers' event loops) go in one message, so the registry's thread wakes once
//! for all of them rather than once each. On a machine whose cores are busy, each wake-up is a
//! context switch for the registry and often one for the worker that waits for its answer.

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{Refusal, Register, Registry};

/// Admits connections through the registry, in batches.
pub struct Admissions {
    registry: Addr<Registry>,
    /// Registrations not sent yet, each with where its answer goes. The first one in also
    /// spawns the task that sends them all.
    queued: Mutex<Vec<(Register, Answer)>>,
}

/// Where one registration's verdict goes.
type Answer = oneshot::Sender<Result<(), Refusal>>;

impl Admissions {
    pub fn new(registry: Addr<Registry>) -> Arc<Self> {
        Arc::new(Self { registry, queued: Mutex::new(Vec::new()) })
    }

    /// The registry's answer to `register`; `Err` when the registry is gone (shutting down).
    pub async fn register(self: &Arc<Self>, register: Register) -> Result<Result<(), Refusal>, MailboxError> {
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut queued = self.queued.lock().expect("no panic while holding the queue");
            queued.push((register, answer));
            queued.len() == 1
        };
        if first {
            // Runs after the tasks already runnable on this worker, which may queue theirs.
            actix::spawn(self.clone().send_queued());
        }
        answered.await.map_err(|_| MailboxError::Closed)
    }

    async fn send_queued(self: Arc<Self>) {
        let batch = std::mem::take(&mut *self.queued.lock().expect("no panic while holding the queue"));
        let (registers, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        // Answers that go unsent (the registry is gone) drop, which their waiters see.
        if let Ok(verdicts) = self.registry.send(RegisterAll(registers)).await {
            for (answer, verdict) in answers.into_iter().zip(verdicts) {
                let _ = answer.send(verdict);
            }
        }
    }
}

/// Several [`Register`]s in one message; answered with each one's verdict, in order.
#[derive(Message)]
#[rtype(result = "Vec<Result<(), Refusal>>")]
pub struct RegisterAll(pub Vec<Register>);

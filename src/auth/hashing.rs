//! A cap on concurrent password hashing. Each Argon2 check holds ~19 MiB and a whole core for
//! tens of milliseconds, so a burst of logins must not start them all at once: at most
//! `concurrent` run (each on the blocking pool, only once it has a permit), at most `queue`
//! wait for a permit, and the rest are turned away at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// Why hashing did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("every hashing slot is taken and the queue is full")]
    Busy,
    #[error("the hashing task failed: {0}")]
    Failed(String),
}

/// At most `concurrent` jobs at once; at most `queue` waiting.
pub struct HashGate {
    permits: Arc<Semaphore>,
    /// Jobs waiting for a permit now.
    waiting: AtomicUsize,
    queue: usize,
}

/// A place in the queue, given back however the wait ends (a permit, or the request dropped).
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HashGate {
    /// `concurrent` = 0 means one per CPU core.
    pub fn new(concurrent: usize, queue: usize) -> Self {
        let concurrent = match concurrent {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Self { permits: Arc::new(Semaphore::new(concurrent)), waiting: AtomicUsize::new(0), queue }
    }

    /// Runs `job` on the blocking pool once a permit is free, or refuses at once when the queue
    /// is full. The permit goes with the job: if the caller gives up, the job still finishes
    /// (and holds its memory) before another may start.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, HashingError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(HashingError::Busy);
                }
                let _place = QueuePlace(&self.waiting);
                self.permits.clone().acquire_owned().await.expect("the semaphore is never closed")
            }
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| HashingError::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[actix_rt::test]
    async fn past_the_cap_jobs_wait_and_past_the_queue_they_are_refused() {
        let gate = Arc::new(HashGate::new(1, 1));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let running = {
            let gate = gate.clone();
            actix_rt::spawn(async move {
                gate.run(move || {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    "first"
                })
                .await
            })
        };
        started_rx.await.unwrap();
        let queued = {
            let gate = gate.clone();
            actix_rt::spawn(async move { gate.run(|| "second").await })
        };
        while gate.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(gate.run(|| "third").await, Err(HashingError::Busy)), "the queue holds one");
        release_tx.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap(), "first");
        assert_eq!(queued.await.unwrap().unwrap(), "second");
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
        assert_eq!(gate.run(|| "again").await.unwrap(), "again", "the gate works after the burst");
    }
}

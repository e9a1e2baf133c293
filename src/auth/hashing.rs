//! Password hashing at a bounded cost. Each Argon2 check needs ~19 MiB and a whole core for
//! tens of milliseconds, so a burst of logins must not start them all at once: at most
//! `concurrent` run (each on the blocking pool, only once it has a permit), at most `queue`
//! wait for a permit, and the rest are turned away at once.
//!
//! Each running check computes in a [`HashMemory`] taken from a pool of at most `concurrent`
//! buffers, reused from one check to the next. Allocating 19 MiB per check and freeing it
//! again made glibc raise its mmap threshold and carve later blocks out of its heaps, where
//! fragmentation kept them: 256 logins left the process at 1.1 to 1.4 GB even with 2 checks at
//! a time. With reused buffers it stays at `concurrent` × 19 MiB plus the rest of the server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

/// Scratch memory for one Argon2 computation, kept between computations.
#[derive(Default)]
pub struct HashMemory(Vec<Block>);

impl HashMemory {
    /// `count` blocks, growing the buffer when a hash needs more than any before it.
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0.resize(count, Block::default());
        }
        &mut self.0[..count]
    }
}

/// Whether `password` matches the Argon2 PHC string `phc` (its algorithm, version, parameters
/// and salt), computed in `memory`. What `argon2::PasswordVerifier` does, minus the allocation.
pub fn verify_phc(phc: &str, password: &[u8], memory: &mut HashMemory) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let Some(expected) = parsed.hash else { return false };
    let hasher = || -> Option<(Argon2<'static>, Params)> {
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = parsed.version.map(Version::try_from).transpose().ok()?.unwrap_or_default();
        let params = Params::try_from(&parsed).ok()?;
        Some((Argon2::new(algorithm, version, params.clone()), params))
    };
    let (Some((argon2, params)), Some(salt)) = (hasher(), parsed.salt) else { return false };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let blocks = memory.blocks(params.block_count());
    let computed = Output::init_with(expected.len(), |out| {
        argon2.hash_password_into_with_memory(password, salt, out, &mut *blocks).map_err(Into::into)
    });
    // Output's equality is constant-time.
    computed.is_ok_and(|computed| computed == expected)
}

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
    /// Idle scratch memory; never more buffers than permits, since each job holds one.
    memory: Arc<Mutex<Vec<HashMemory>>>,
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
        Self {
            permits: Arc::new(Semaphore::new(concurrent)),
            waiting: AtomicUsize::new(0),
            queue,
            memory: Arc::default(),
        }
    }

    /// Runs `job` on the blocking pool, with scratch memory, once a permit is free, or refuses
    /// at once when the queue is full. The permit goes with the job: if the caller gives up,
    /// the job still finishes (and holds its memory) before another may start.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut HashMemory) -> T + Send + 'static,
    ) -> Result<T, HashingError> {
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
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = pool.lock().expect("hash memory pool poisoned").pop().unwrap_or_default();
            let result = job(&mut memory);
            pool.lock().expect("hash memory pool poisoned").push(memory);
            result
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
                gate.run(move |_| {
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
            actix_rt::spawn(async move { gate.run(|_| "second").await })
        };
        while gate.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(gate.run(|_| "third").await, Err(HashingError::Busy)), "the queue holds one");
        release_tx.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap(), "first");
        assert_eq!(queued.await.unwrap().unwrap(), "second");
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
        assert_eq!(gate.run(|_| "again").await.unwrap(), "again", "the gate works after the burst");
    }

    #[test]
    fn verify_phc_agrees_with_the_argon2_crate_and_reuses_its_memory() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
        let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
        let hashers = [
            Argon2::default(),
            Argon2::new(Algorithm::Argon2i, Version::V0x10, Params::new(4096, 1, 2, Some(16)).unwrap()),
            Argon2::new(Algorithm::Argon2d, Version::V0x13, Params::new(8192, 3, 1, Some(48)).unwrap()),
        ];
        let mut memory = HashMemory::default();
        for hasher in &hashers {
            let phc = hasher.hash_password(b"right", &salt).unwrap().to_string();
            for (password, expected) in [(&b"right"[..], true), (b"wrong", false)] {
                let parsed = PasswordHash::new(&phc).unwrap();
                assert_eq!(Argon2::default().verify_password(password, &parsed).is_ok(), expected, "{phc}");
                assert_eq!(verify_phc(&phc, password, &mut memory), expected, "{phc}");
            }
        }
        assert_eq!(memory.0.len(), 19456, "the buffer grew to the largest hash and stayed");
        assert!(!verify_phc("not a phc string", b"right", &mut memory));
        assert!(!verify_phc("$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ", b"right", &mut memory), "no hash part");
    }
}

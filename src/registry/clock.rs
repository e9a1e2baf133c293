//! The time the registry reads. Token deadlines are wall-clock instants (`exp`), so production
//! reads the system clock; tests give the registry a clock that moves with tokio's time, so
//! expiry, warnings and caps are exercised with paused time instead of real sleeps.

/// Unix time in milliseconds, as the registry sees it.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::time::now_unix_ms()
    }
}

/// Starts at the real wall-clock time and then advances exactly as tokio's clock does: under
/// `tokio::time::pause()`, only when a test advances it.
pub struct TokioClock {
    start_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        Self { start_ms: crate::time::now_unix_ms(), start: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.start_ms + self.start.elapsed().as_millis() as u64
    }
}

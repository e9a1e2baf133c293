//! Rate limiting: per connection, a token bucket for messages and a count of refusals that
//! tells abuse (keeps hammering) from a burst (backs off); per user and per client address,
//! limits shared by every socket of this node ([`SharedLimits`], GCRA by `governor`); and
//! [`Gcra`] for counters kept in a store (failed logins), where a key's whole state is one
//! timestamp.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::WsSettings;
use crate::ids::UserId;

/// Limits keyed by user or address, shared by all sockets and handshakes of this node.
pub struct SharedLimits {
    /// Messages (every frame) of one user, across all of their sockets here.
    user_messages: DefaultKeyedRateLimiter<UserId>,
    /// WebSocket handshakes from one client address.
    handshakes: DefaultKeyedRateLimiter<IpAddr>,
}

impl SharedLimits {
    pub fn from_settings(ws: &WsSettings) -> Self {
        let rl = &ws.rate_limit;
        Self {
            user_messages: DefaultKeyedRateLimiter::keyed(quota(rl.user_per_second, rl.user_burst)),
            handshakes: DefaultKeyedRateLimiter::keyed(quota(ws.handshake_limit.per_second, ws.handshake_limit.burst)),
        }
    }

    /// Takes one message from the user's allowance; false when it is spent.
    pub fn user_message(&self, user: &UserId) -> bool {
        self.user_messages.check_key(user).is_ok()
    }

    /// Takes one handshake from the address's allowance; when it is spent, how long until the
    /// next one is allowed.
    pub fn handshake(&self, ip: IpAddr) -> Result<(), Duration> {
        self.handshakes.check_key(&ip).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets keys whose allowance is full again, so the maps do not grow without bound.
    pub fn forget_idle(&self) {
        self.user_messages.retain_recent();
        self.user_messages.shrink_to_fit();
        self.handshakes.retain_recent();
        self.handshakes.shrink_to_fit();
    }
}

/// `per_second` sustained (fractions allowed), `burst` at once. Config validation guarantees
/// `per_second > 0` and `burst >= 1`.
fn quota(per_second: f64, burst: f64) -> Quota {
    let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(burst as u32).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).expect("the period is above zero").allow_burst(burst)
}

/// Classic token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(per_second: f64, burst: f64, now: Instant) -> Self {
        Self { capacity: burst, per_second, tokens: burst, updated: now }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The verdict on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse this message, keep the connection.
    Refuse,
    /// Refusals keep coming: close the connection.
    Disconnect,
}

/// A bucket plus a window of refusals: `max_violations` refusals within `window` means abuse.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    bucket: TokenBucket,
    max_violations: u32,
    window: Duration,
    violations: u32,
    window_start: Instant,
}

impl RateLimiter {
    pub const WINDOW: Duration = Duration::from_secs(10);

    pub fn new(per_second: f64, burst: f64, max_violations: u32, now: Instant) -> Self {
        Self {
            bucket: TokenBucket::new(per_second, burst, now),
            max_violations: max_violations.max(1),
            window: Self::WINDOW,
            violations: 0,
            window_start: now,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.try_take(now) {
            return Verdict::Allow;
        }
        self.violation(now)
    }

    /// Counts a refusal decided elsewhere (a limit shared by several sockets).
    pub fn violation(&mut self, now: Instant) -> Verdict {
        if now.saturating_duration_since(self.window_start) > self.window {
            self.window_start = now;
            self.violations = 0;
        }
        self.violations += 1;
        if self.violations >= self.max_violations {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

/// The generic cell rate algorithm: `burst` events at once, then one more every
/// `window / burst`. A key's state is its theoretical arrival time (TAT, Unix ms); a key without
/// one, or whose TAT has passed, is fresh, so a store may forget it at its TAT.
/// `store::redis` runs the same arithmetic in Lua.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Milliseconds each event adds to the TAT.
    pub interval_ms: u64,
    /// How far ahead of now the TAT may be for one more event to be let in.
    pub tolerance_ms: u64,
}

impl Gcra {
    /// `burst` events within `window`; `burst` must be above 0.
    pub fn new(burst: u32, window: Duration) -> Self {
        let interval_ms = (window.as_millis() as u64 / u64::from(burst.max(1))).max(1);
        Self { interval_ms, tolerance_ms: interval_ms * u64::from(burst.max(1) - 1) }
    }

    /// Counts one event at `now_ms`: the new TAT, or how long until an event would be let in.
    pub fn admit(&self, tat_ms: Option<u64>, now_ms: u64) -> Result<u64, Duration> {
        let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
        let ahead = tat - now_ms;
        if ahead > self.tolerance_ms {
            return Err(Duration::from_millis(ahead - self.tolerance_ms));
        }
        Ok(tat + self.interval_ms)
    }

    /// Takes one counted event back: the new TAT, or `None` when the key is fresh again.
    pub fn refund(&self, tat_ms: u64, now_ms: u64) -> Option<u64> {
        let tat = tat_ms.saturating_sub(self.interval_ms);
        (tat > now_ms).then_some(tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0, t0);
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(500)));
        assert!(!b.try_take(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn persistent_abuse_disconnects_but_a_burst_does_not() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1.0, 1.0, 3, t0);
        assert_eq!(limiter.check(t0), Verdict::Allow);
        assert_eq!(limiter.check(t0), Verdict::Refuse);
        assert_eq!(limiter.check(t0), Verdict::Refuse);
        // backing off past the window forgives earlier refusals
        let later = t0 + RateLimiter::WINDOW + Duration::from_secs(1);
        assert_eq!(limiter.check(later), Verdict::Allow);
        assert_eq!(limiter.check(later), Verdict::Refuse);
        assert_eq!(limiter.check(later), Verdict::Refuse);
        assert_eq!(limiter.check(later), Verdict::Disconnect);
    }

    #[test]
    fn gcra_lets_a_burst_in_then_one_per_interval() {
        let gcra = Gcra::new(3, Duration::from_secs(60));
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra.admit(tat, 0).expect("within the burst"));
        }
        assert_eq!(gcra.admit(tat, 0), Err(Duration::from_secs(20)), "the fourth waits one interval");
        assert_eq!(gcra.admit(tat, 19_999), Err(Duration::from_millis(1)));
        let after = gcra.admit(tat, 20_000).expect("one more after an interval");
        assert!(gcra.admit(Some(after), 20_000).is_err());
        // a key idle for a whole window is fresh again
        assert_eq!(gcra.admit(Some(after), 80_000), Ok(100_000));
    }

    #[test]
    fn a_refund_gives_one_event_back() {
        let gcra = Gcra::new(2, Duration::from_secs(10));
        let tat = gcra.admit(None, 0).unwrap();
        let tat = gcra.admit(Some(tat), 0).unwrap();
        assert!(gcra.admit(Some(tat), 0).is_err());
        let refunded = gcra.refund(tat, 0);
        assert_eq!(refunded, Some(5_000));
        assert!(gcra.admit(refunded, 0).is_ok());
        assert_eq!(gcra.refund(5_000, 0), None, "refunding the last event leaves a fresh key");
    }
}

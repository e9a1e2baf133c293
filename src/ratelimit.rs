//! Rate limiting: per connection, a token bucket for messages and a count of refusals that
//! tells abuse (keeps hammering) from a burst (backs off); per user and per client address,
//! limits shared by every socket of this node ([`SharedLimits`], GCRA by `governor`).

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
}

//! When fetched keys are due for a refresh: the provider's `Cache-Control: max-age` (less the
//! `Age` a cache in between has added), held within `auth.jwks_min_refresh` and
//! `auth.jwks_max_refresh`, and never a fetch sooner than the minimum after the last one. Pure,
//! with `now` passed in, so it is tested without waiting.

use std::time::Duration;

use tokio::time::Instant;

/// How long the provider says an answer stays fresh: `max-age` minus `Age`. `None` when it
/// gives no usable lifetime: no `max-age`, `no-store` or `no-cache` (both mean "ask again
/// every time"), a malformed value, or two `max-age`s (RFC 9111 §4.2.1 lets a cache treat
/// such an answer as stale). `cache_control` holds every `Cache-Control` field line.
pub fn lifetime(cache_control: &[&str], age: Option<&str>) -> Option<Duration> {
    let mut max_age = None;
    let mut seen = 0;
    for directive in cache_control.iter().flat_map(|line| line.split(',')) {
        let (name, value) = match directive.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return None;
        }
        if name.eq_ignore_ascii_case("max-age") {
            seen += 1;
            max_age = value.and_then(delta_seconds);
        }
    }
    if seen != 1 {
        return None;
    }
    let age = age.and_then(|a| delta_seconds(a.trim())).unwrap_or(0);
    Some(Duration::from_secs(max_age?.saturating_sub(age)))
}

/// RFC 9111 §1.2.2 delta-seconds: digits only; too many of them is "very long", not an error.
fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// When the key set was last fetched and when it is due again.
#[derive(Debug, Clone)]
pub struct Schedule {
    min: Duration,
    max: Duration,
    /// When the last fetch began, whatever its outcome: the next may not begin before `min`
    /// after it, so made-up `kid`s cannot make this server hammer the provider.
    last_fetch: Option<Instant>,
    /// When the keys in use go stale and the background refresh fetches again.
    next_due: Instant,
}

impl Schedule {
    /// Nothing fetched yet: due at once.
    pub fn new(min: Duration, max: Duration, now: Instant) -> Self {
        Self { min, max, last_fetch: None, next_due: now }
    }

    /// Whether a fetch may begin now on a token's account (an unknown `kid`).
    pub fn may_fetch(&self, now: Instant) -> bool {
        self.last_fetch.is_none_or(|last| now >= last + self.min)
    }

    /// Whether the keys in use are stale.
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next_due
    }

    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    /// A fetch that began at `started` brought keys fresh for `lifetime` (the provider's
    /// word, or none): the next is due then, within the bounds.
    pub fn fetched(&mut self, started: Instant, lifetime: Option<Duration>) {
        self.last_fetch = Some(started);
        self.next_due = started + lifetime.unwrap_or(self.min).clamp(self.min, self.max);
    }

    /// A fetch that began at `started` failed: the keys in use stay, and the next try is `min`
    /// later.
    pub fn failed(&mut self, started: Instant) {
        self.last_fetch = Some(started);
        self.next_due = started + self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn max_age_less_age_is_the_lifetime() {
        assert_eq!(lifetime(&["max-age=300"], None), Some(S(300)));
        assert_eq!(lifetime(&["public, max-age=300, must-revalidate"], None), Some(S(300)));
        assert_eq!(lifetime(&["Public", "MAX-AGE = \"120\""], None), Some(S(120)), "names are case-insensitive");
        assert_eq!(lifetime(&["max-age=300"], Some("100")), Some(S(200)));
        assert_eq!(lifetime(&["max-age=300"], Some("900")), Some(S(0)), "older than its max-age: stale");
        assert_eq!(lifetime(&["max-age=300"], Some("soon")), Some(S(300)), "a malformed Age is ignored");
        assert_eq!(lifetime(&["max-age=99999999999999999999999"], None), Some(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn no_usable_lifetime_means_none() {
        for lines in [
            &[][..],
            &["public"],
            &["no-store"],
            &["no-cache, max-age=300"],
            &["max-age=300", "no-store"],
            &["max-age=-1"],
            &["max-age=1.5"],
            &["max-age="],
            &["max-age"],
            &["max-age=60, max-age=3600"],
        ] {
            assert_eq!(lifetime(lines, None), None, "{lines:?}");
        }
    }

    #[test]
    fn the_provider_sets_the_pace_within_the_bounds() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(S(60), S(3600), t0);
        assert!(schedule.is_due(t0) && schedule.may_fetch(t0), "nothing fetched yet");
        schedule.fetched(t0, Some(S(600)));
        assert_eq!(schedule.next_due(), t0 + S(600));
        schedule.fetched(t0, Some(S(5)));
        assert_eq!(schedule.next_due(), t0 + S(60), "no sooner than the minimum");
        schedule.fetched(t0, Some(S(86400)));
        assert_eq!(schedule.next_due(), t0 + S(3600), "no later than the maximum");
        schedule.fetched(t0, None);
        assert_eq!(schedule.next_due(), t0 + S(60), "no word from the provider: the minimum");
    }

    #[test]
    fn unknown_kids_fetch_at_most_once_per_minimum_whatever_the_outcome() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(S(60), S(3600), t0);
        schedule.fetched(t0, Some(S(3600)));
        assert!(!schedule.may_fetch(t0 + S(59)));
        assert!(schedule.may_fetch(t0 + S(60)));
        assert!(!schedule.is_due(t0 + S(60)), "fetching is allowed, not due");
        schedule.failed(t0 + S(60));
        assert!(!schedule.may_fetch(t0 + S(119)), "a failed fetch counts too");
        assert!(schedule.may_fetch(t0 + S(120)));
        assert_eq!(schedule.next_due(), t0 + S(120), "after a failure, tried again a minimum later");
    }
}

//! Token deadlines of every connection, ordered by time, so the registry arms one timer for
//! the earliest and never scans all connections.

use std::collections::BTreeSet;

use crate::ids::{ConnId, ConnMap};

/// What happens at a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Due {
    /// Send `expiring`.
    Warn,
    /// Close with 4001.
    Expire,
}

/// Deadlines in Unix milliseconds, at most one of each kind per connection.
#[derive(Debug, Default)]
pub struct Deadlines {
    queue: BTreeSet<(u64, ConnId, Due)>,
    by_conn: ConnMap<(Option<u64>, u64)>,
}

impl Deadlines {
    /// Sets (or replaces) the deadlines of `conn`: a warning at `warn_at` unless `None`, and
    /// expiry at `expire_at`.
    pub fn schedule(&mut self, conn: ConnId, warn_at: Option<u64>, expire_at: u64) {
        self.cancel(conn);
        if let Some(at) = warn_at {
            self.queue.insert((at, conn, Due::Warn));
        }
        self.queue.insert((expire_at, conn, Due::Expire));
        self.by_conn.insert(conn, (warn_at, expire_at));
    }

    pub fn cancel(&mut self, conn: ConnId) {
        if let Some((warn_at, expire_at)) = self.by_conn.remove(&conn) {
            if let Some(at) = warn_at {
                self.queue.remove(&(at, conn, Due::Warn));
            }
            self.queue.remove(&(expire_at, conn, Due::Expire));
        }
    }

    /// The earliest pending deadline.
    pub fn next_at(&self) -> Option<u64> {
        self.queue.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns up to `limit` deadlines due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: u64, limit: usize) -> Vec<(ConnId, Due)> {
        let mut due = Vec::new();
        while let Some(&(at, conn, kind)) = self.queue.first() {
            if at > now || due.len() == limit {
                break;
            }
            self.queue.pop_first();
            match kind {
                Due::Warn => {
                    if let Some(entry) = self.by_conn.get_mut(&conn) {
                        entry.0 = None;
                    }
                }
                Due::Expire => {
                    self.by_conn.remove(&conn);
                }
            }
            due.push((conn, kind));
        }
        due
    }

    /// Whether `conn`'s expiry is due by `at` (and not handled yet).
    pub fn expires_by(&self, conn: ConnId, at: u64) -> bool {
        self.by_conn.get(&conn).is_some_and(|(_, expire_at)| *expire_at <= at)
    }

    pub fn len(&self) -> usize {
        self.by_conn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_and_only_what_is_due() {
        let mut d = Deadlines::default();
        d.schedule(ConnId(1), Some(50), 100);
        d.schedule(ConnId(2), None, 80);
        assert_eq!(d.next_at(), Some(50));
        assert_eq!(d.pop_due(49, 10), vec![]);
        assert_eq!(d.pop_due(80, 10), vec![(ConnId(1), Due::Warn), (ConnId(2), Due::Expire)]);
        assert_eq!(d.next_at(), Some(100));
        assert_eq!(d.pop_due(1000, 10), vec![(ConnId(1), Due::Expire)]);
        assert!(d.is_empty());
        assert_eq!(d.next_at(), None);
    }

    #[test]
    fn a_limit_leaves_the_rest_due() {
        let mut d = Deadlines::default();
        (1..=5).for_each(|i| d.schedule(ConnId(i), None, 10));
        assert_eq!(d.pop_due(10, 2).len(), 2);
        assert_eq!(d.next_at(), Some(10), "the rest are still due");
        assert_eq!(d.pop_due(10, 10).len(), 3);
    }

    #[test]
    fn expires_by_answers_for_pending_expiries_only() {
        let mut d = Deadlines::default();
        d.schedule(ConnId(1), Some(5), 10);
        assert!(!d.expires_by(ConnId(1), 9));
        assert!(d.expires_by(ConnId(1), 10), "a warning still pending does not matter");
        assert!(!d.expires_by(ConnId(2), 10), "unknown");
        d.pop_due(10, 10);
        assert!(!d.expires_by(ConnId(1), 10), "handled already");
    }

    #[test]
    fn rescheduling_replaces_and_cancel_removes() {
        let mut d = Deadlines::default();
        d.schedule(ConnId(1), Some(10), 20);
        d.schedule(ConnId(1), Some(30), 40);
        assert_eq!(d.next_at(), Some(30));
        d.cancel(ConnId(1));
        assert_eq!(d.next_at(), None);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_renewal_after_the_warning_schedules_a_new_warning() {
        let mut d = Deadlines::default();
        d.schedule(ConnId(1), Some(10), 20);
        assert_eq!(d.pop_due(10, 10), vec![(ConnId(1), Due::Warn)]);
        d.schedule(ConnId(1), Some(50), 60);
        assert_eq!(d.pop_due(20, 10), vec![]);
        assert_eq!(d.pop_due(60, 10), vec![(ConnId(1), Due::Warn), (ConnId(1), Due::Expire)]);
    }
}

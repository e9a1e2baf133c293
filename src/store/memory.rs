//! The in-memory stores. Expired entries are purged from the front of a time-ordered index as
//! entries are written, so no request ever scans the whole store.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Marks, RefreshRecord, RefreshStore, RevocationStore, SecretHash, StoreError, Taken, TicketStore};
use crate::auth::Principal;
use crate::ids::UserId;
use crate::time::now_unix_s;

/// A map whose entries disappear at their expiry (Unix seconds).
#[derive(Debug)]
pub struct ExpiringMap<K, V> {
    entries: HashMap<K, (V, u64)>,
    by_expiry: BTreeSet<(u64, K)>,
}

impl<K, V> Default for ExpiringMap<K, V> {
    fn default() -> Self {
        Self { entries: HashMap::new(), by_expiry: BTreeSet::new() }
    }
}

impl<K: Clone + Eq + Hash + Ord, V> ExpiringMap<K, V> {
    /// Inserts (or replaces) `key`, then purges what has expired by `now`.
    pub fn insert(&mut self, key: K, value: V, expires_at: u64, now: u64) {
        if let Some((_, old)) = self.entries.insert(key.clone(), (value, expires_at)) {
            self.by_expiry.remove(&(old, key.clone()));
        }
        self.by_expiry.insert((expires_at, key));
        self.purge(now);
    }

    /// The live value of `key`.
    pub fn get_mut(&mut self, key: &K, now: u64) -> Option<&mut V> {
        match self.entries.get_mut(key) {
            Some((value, expires_at)) if *expires_at > now => Some(value),
            _ => None,
        }
    }

    /// Removes `key`, returning its value if it had not expired.
    pub fn remove(&mut self, key: &K, now: u64) -> Option<V> {
        let (value, expires_at) = self.entries.remove(key)?;
        self.by_expiry.remove(&(expires_at, key.clone()));
        (expires_at > now).then_some(value)
    }

    /// Drops every entry expired by `now`, oldest first; stops at the first live one.
    pub fn purge(&mut self, now: u64) {
        while let Some((expires_at, _)) = self.by_expiry.first() {
            if *expires_at > now {
                break;
            }
            let (_, key) = self.by_expiry.pop_first().expect("checked non-empty");
            self.entries.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A refresh token and whether it has been rotated already.
#[derive(Debug)]
struct RefreshEntry {
    record: RefreshRecord,
    used: bool,
}

#[derive(Default)]
struct State {
    refresh: ExpiringMap<SecretHash, RefreshEntry>,
    tickets: ExpiringMap<SecretHash, Principal>,
    revoked_sessions: ExpiringMap<String, ()>,
    /// One mark per revoked user; kept for the life of the process.
    revoked_users: HashMap<UserId, u64>,
}

/// All three stores in one lock: the operations are tiny and never await while holding it.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> T) -> T {
        let mut state = self.state.lock().expect("memory store lock poisoned");
        f(&mut state, now_unix_s())
    }
}

#[async_trait]
impl RefreshStore for MemoryStore {
    async fn put(&self, token: &SecretHash, record: RefreshRecord) -> Result<(), StoreError> {
        self.with(|s, now| {
            let expires_at = record.expires_at;
            s.refresh.insert(token.clone(), RefreshEntry { record, used: false }, expires_at, now);
        });
        Ok(())
    }

    async fn take(&self, token: &SecretHash) -> Result<Option<Taken>, StoreError> {
        Ok(self.with(|s, now| {
            let entry = s.refresh.get_mut(token, now)?;
            let record = entry.record.clone();
            Some(if std::mem::replace(&mut entry.used, true) { Taken::Reused(record) } else { Taken::Fresh(record) })
        }))
    }
}

#[async_trait]
impl TicketStore for MemoryStore {
    async fn put(&self, ticket: &SecretHash, principal: Principal, expires_at: u64) -> Result<(), StoreError> {
        self.with(|s, now| s.tickets.insert(ticket.clone(), principal, expires_at, now));
        Ok(())
    }

    async fn take(&self, ticket: &SecretHash) -> Result<Option<Principal>, StoreError> {
        Ok(self.with(|s, now| s.tickets.remove(ticket, now)))
    }
}

#[async_trait]
impl RevocationStore for MemoryStore {
    async fn revoke_user(&self, user: &UserId, at: u64) -> Result<(), StoreError> {
        self.with(|s, _| {
            let mark = s.revoked_users.entry(user.clone()).or_insert(at);
            *mark = (*mark).max(at);
        });
        Ok(())
    }

    async fn revoke_session(&self, sid: &str, until: u64) -> Result<(), StoreError> {
        self.with(|s, now| s.revoked_sessions.insert(sid.to_owned(), (), until, now));
        Ok(())
    }

    async fn marks(&self, user: &UserId, sid: Option<&str>) -> Result<Marks, StoreError> {
        Ok(self.with(|s, now| Marks {
            user_revoked_at: s.revoked_users.get(user).copied(),
            session_revoked: sid.is_some_and(|sid| s.revoked_sessions.get_mut(&sid.to_owned(), now).is_some()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiring_map_hides_and_purges_expired_entries() {
        let mut map = ExpiringMap::default();
        map.insert("a", 1, 10, 0);
        map.insert("b", 2, 20, 0);
        assert_eq!(map.get_mut(&"a", 9).copied(), Some(1));
        assert_eq!(map.get_mut(&"a", 10), None, "expired at its expiry");
        map.insert("c", 3, 30, 15);
        assert_eq!(map.len(), 2, "the write purged a");
        assert_eq!(map.remove(&"b", 25), None, "removing an expired entry yields nothing");
        map.insert("c", 4, 40, 0);
        map.purge(35);
        assert_eq!(map.get_mut(&"c", 35).copied(), Some(4), "replacing moved the expiry");
    }

    #[actix_rt::test]
    async fn a_refresh_token_is_fresh_once_then_reused() {
        let store = MemoryStore::default();
        let hash = SecretHash::of("token");
        let record = RefreshRecord {
            user: UserId::new("u"),
            roles: vec![],
            family: "f".into(),
            issued_at: now_unix_s(),
            expires_at: now_unix_s() + 60,
        };
        RefreshStore::put(&store, &hash, record.clone()).await.unwrap();
        assert_eq!(RefreshStore::take(&store, &hash).await.unwrap(), Some(Taken::Fresh(record.clone())));
        assert_eq!(RefreshStore::take(&store, &hash).await.unwrap(), Some(Taken::Reused(record)));
        assert_eq!(RefreshStore::take(&store, &SecretHash::of("other")).await.unwrap(), None);
    }

    #[test]
    fn hashes_do_not_contain_the_secret() {
        let hash = SecretHash::of("my-secret-value");
        assert_eq!(hash.as_str().len(), 64);
        assert!(!hash.as_str().contains("secret"));
    }
}

//! The in-memory stores. Expired entries are purged from the front of a time-ordered index as
//! entries are written, so no request ever scans the whole store.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, Notify};

use super::{
    AttemptStore, Counter, Marks, RefreshRecord, RefreshStore, RevocationStore, SecretHash, SessionEvent,
    SessionRecord, SessionStore, StoreError, StoreHealth, Taken, TicketStore,
};
use crate::ids::{SessionId, UserId};
use crate::principal::Principal;
use crate::time::{now_unix_ms, now_unix_s};

/// A map whose entries disappear at their expiry (a timestamp, in whatever unit the caller
/// uses for `now` too: Unix seconds for tokens, milliseconds for counters).
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
    revoked_sessions: ExpiringMap<SessionId, ()>,
    /// One mark per revoked user; kept for the life of the process.
    revoked_users: HashMap<UserId, u64>,
    withdrawn_roles: HashMap<UserId, std::collections::BTreeSet<String>>,
    /// Rate-limited counters: each key's TAT (Unix ms), forgotten at that instant, when the key
    /// is fresh again.
    attempts: ExpiringMap<String, u64>,
}

/// All the stores but sessions in one lock: the operations are tiny and never await while holding it.
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

    async fn revoke_session(&self, sid: &SessionId, until: u64) -> Result<(), StoreError> {
        self.with(|s, now| s.revoked_sessions.insert(sid.clone(), (), until, now));
        Ok(())
    }

    async fn withdraw_role(&self, user: &UserId, role: &str) -> Result<(), StoreError> {
        self.with(|s, _| s.withdrawn_roles.entry(user.clone()).or_default().insert(role.to_owned()));
        Ok(())
    }

    async fn restore_role(&self, user: &UserId, role: &str) -> Result<bool, StoreError> {
        Ok(self.with(|s, _| {
            let Some(roles) = s.withdrawn_roles.get_mut(user) else { return false };
            let restored = roles.remove(role);
            if roles.is_empty() {
                s.withdrawn_roles.remove(user);
            }
            restored
        }))
    }

    async fn marks(&self, user: &UserId, sid: Option<&SessionId>) -> Result<Marks, StoreError> {
        Ok(self.with(|s, now| Marks {
            withdrawn_roles: s.withdrawn_roles.get(user).into_iter().flatten().cloned().collect(),
            user_revoked_at_ms: s.revoked_users.get(user).copied(),
            session_revoked: sid.is_some_and(|sid| s.revoked_sessions.get_mut(sid, now).is_some()),
        }))
    }
}

#[async_trait]
impl AttemptStore for MemoryStore {
    async fn acquire(&self, counters: &[Counter]) -> Result<Option<Duration>, StoreError> {
        let now = now_unix_ms();
        Ok(self.with(|s, _| {
            let admitted: Result<Vec<u64>, Duration> =
                counters.iter().map(|c| c.limit.admit(s.attempts.get_mut(&c.key, now).copied(), now)).collect();
            match admitted {
                Ok(tats) => {
                    for (counter, tat) in counters.iter().zip(tats) {
                        s.attempts.insert(counter.key.clone(), tat, tat, now);
                    }
                    None
                }
                // The longest wait: all of them must have room.
                Err(_) => counters
                    .iter()
                    .filter_map(|c| c.limit.admit(s.attempts.get_mut(&c.key, now).copied(), now).err())
                    .max(),
            }
        }))
    }

    async fn release(&self, counters: &[Counter]) -> Result<(), StoreError> {
        let now = now_unix_ms();
        self.with(|s, _| {
            for counter in counters {
                let Some(tat) = s.attempts.remove(&counter.key, now) else { continue };
                if let Some(tat) = counter.limit.refund(tat, now) {
                    s.attempts.insert(counter.key.clone(), tat, tat, now);
                }
            }
        });
        Ok(())
    }
}

#[async_trait]
impl StoreHealth for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Sessions in memory. A sweeper task sleeps until the earliest deadline (or a change), ends
/// what is due, and announces it; nothing scans all sessions.
pub struct MemorySessions {
    state: Arc<Mutex<SessionState>>,
    events: broadcast::Sender<SessionEvent>,
    /// Wakes the sweeper when the earliest deadline may have moved.
    changed: Arc<Notify>,
}

#[derive(Default)]
struct SessionState {
    sessions: HashMap<SessionId, SessionRecord>,
    by_deadline: BTreeSet<(u64, SessionId)>,
    by_user: HashMap<UserId, HashSet<SessionId>>,
}

impl SessionState {
    fn insert(&mut self, record: SessionRecord) {
        self.remove(&record.id);
        self.by_deadline.insert((record.deadline_ms(), record.id.clone()));
        self.by_user.entry(record.user.clone()).or_default().insert(record.id.clone());
        self.sessions.insert(record.id.clone(), record);
    }

    fn remove(&mut self, id: &SessionId) -> Option<SessionRecord> {
        let record = self.sessions.remove(id)?;
        self.by_deadline.remove(&(record.deadline_ms(), record.id.clone()));
        if let Some(ids) = self.by_user.get_mut(&record.user) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_user.remove(&record.user);
            }
        }
        Some(record)
    }

    /// Removes every session due by `now_ms`; answers their ids and the next deadline.
    fn sweep(&mut self, now_ms: u64) -> (Vec<SessionId>, Option<u64>) {
        let mut ended = Vec::new();
        while let Some((deadline, id)) = self.by_deadline.first().cloned() {
            if deadline > now_ms {
                return (ended, Some(deadline));
            }
            self.remove(&id);
            ended.push(id);
        }
        (ended, None)
    }

    fn live(&self, id: &SessionId, now_ms: u64) -> Option<&SessionRecord> {
        self.sessions.get(id).filter(|r| r.deadline_ms() > now_ms)
    }
}

impl MemorySessions {
    /// Creates the store and spawns its sweeper on the current Tokio runtime.
    pub fn start() -> Self {
        let (events, _) = broadcast::channel(1024);
        let store = Self { state: Arc::default(), events, changed: Arc::new(Notify::new()) };
        tokio::spawn(sweep(Arc::downgrade(&store.state), store.events.clone(), store.changed.clone()));
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().expect("session store lock poisoned")
    }

    fn ended(&self, id: SessionId) {
        let _ = self.events.send(SessionEvent::Ended(id));
    }
}

/// Ends sessions at their deadlines until the store is dropped.
async fn sweep(state: Weak<Mutex<SessionState>>, events: broadcast::Sender<SessionEvent>, changed: Arc<Notify>) {
    loop {
        let next = {
            let Some(state) = state.upgrade() else { return };
            let (ended, next) = state.lock().expect("session store lock poisoned").sweep(now_unix_ms());
            for id in ended {
                let _ = events.send(SessionEvent::Ended(id));
            }
            next
        };
        let wait = next.map_or(Duration::from_secs(60), |at| Duration::from_millis(at.saturating_sub(now_unix_ms())));
        let _ = tokio::time::timeout(wait, changed.notified()).await;
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn create(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.lock().insert(session.clone());
        self.changed.notify_one();
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().live(id, now_unix_ms()).cloned())
    }

    async fn touch(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let Some(mut record) = state.live(id, now_ms).cloned() else { return Ok(false) };
        record.last_seen_ms = record.last_seen_ms.max(now_ms);
        state.insert(record);
        Ok(true)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let existed = self.lock().remove(id).is_some();
        if existed {
            self.ended(id.to_owned());
        }
        Ok(existed)
    }

    async fn delete_user(&self, user: &UserId) -> Result<Vec<SessionId>, StoreError> {
        let ids: Vec<SessionId> = {
            let mut state = self.lock();
            let ids: Vec<SessionId> = state.by_user.get(user).into_iter().flatten().cloned().collect();
            ids.iter().for_each(|id| drop(state.remove(id)));
            ids
        };
        ids.iter().for_each(|id| self.ended(id.clone()));
        Ok(ids)
    }

    async fn list(&self, user: Option<&UserId>) -> Result<Vec<SessionRecord>, StoreError> {
        let state = self.lock();
        let now = now_unix_ms();
        let mut rows: Vec<SessionRecord> = match user {
            Some(user) => {
                state.by_user.get(user).into_iter().flatten().filter_map(|id| state.live(id, now)).cloned().collect()
            }
            None => state.sessions.values().filter(|r| r.deadline_ms() > now).cloned().collect(),
        };
        rows.sort_by_key(|r| r.created_ms);
        Ok(rows)
    }

    async fn alive(&self, ids: &[SessionId]) -> Result<Vec<bool>, StoreError> {
        let state = self.lock();
        let now = now_unix_ms();
        Ok(ids.iter().map(|id| state.live(id, now).is_some()).collect())
    }

    fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
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
            family: SessionId::new("f"),
            issued_at_ms: crate::time::now_unix_ms(),
            expires_at: now_unix_s() + 60,
        };
        RefreshStore::put(&store, &hash, record.clone()).await.unwrap();
        assert_eq!(RefreshStore::take(&store, &hash).await.unwrap(), Some(Taken::Fresh(record.clone())));
        assert_eq!(RefreshStore::take(&store, &hash).await.unwrap(), Some(Taken::Reused(record)));
        assert_eq!(RefreshStore::take(&store, &SecretHash::of("other")).await.unwrap(), None);
    }

    #[actix_rt::test]
    async fn counters_are_taken_all_or_none_and_given_back() {
        use crate::ratelimit::Gcra;
        let store = MemoryStore::default();
        let minute = Duration::from_secs(60);
        let tight = Counter { key: "ip:a".into(), limit: Gcra::new(1, minute) };
        let loose = Counter { key: "user:u".into(), limit: Gcra::new(3, minute) };
        let both = [tight, loose.clone()];
        assert_eq!(store.acquire(&both).await.unwrap(), None);
        let wait = store.acquire(&both).await.unwrap().expect("the tight counter is full");
        assert!(wait > Duration::from_secs(58) && wait <= minute, "{wait:?}");
        // the refused attempt took nothing from the loose counter: two more fit there
        let other = Counter { key: "ip:b".into(), limit: Gcra::new(1, minute) };
        assert_eq!(store.acquire(&[other, loose.clone()]).await.unwrap(), None);
        assert_eq!(store.acquire(std::slice::from_ref(&loose)).await.unwrap(), None);
        assert!(store.acquire(std::slice::from_ref(&loose)).await.unwrap().is_some());
        store.release(std::slice::from_ref(&loose)).await.unwrap();
        assert_eq!(store.acquire(&[loose]).await.unwrap(), None, "a release gives one back");
    }

    #[test]
    fn hashes_do_not_contain_the_secret() {
        let hash = SecretHash::of("my-secret-value");
        assert_eq!(hash.as_str().len(), 64);
        assert!(!hash.as_str().contains("secret"));
    }
}

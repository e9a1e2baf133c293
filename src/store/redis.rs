//! Every store in Redis, so sessions, refresh tokens, tickets and revocation marks survive a
//! restart and are shared by every node pointing at the same Redis.
//!
//! Keys (all under `redis.key_prefix`, each with a TTL so Redis expires them itself):
//! `session:{id}` hash (record, last, idle, abs), `user-sessions:{user}` set of ids,
//! `refresh:{sha256}` hash (record, used), `ticket:{sha256}` string, `revoked-user:{user}`,
//! `revoked-session:{sid}`, and rate-limited counters under the keys their owner names
//! (`{login-failures}:ip:<address>`, `{login-failures}:user:<sha256>`, one hash tag so that
//! both are counted in one script on a cluster): a TAT in Unix ms, expiring at that instant.
//! `revoked-roles:{user}`, the roles withdrawn from a user, has no TTL: a withdrawal stands
//! until an operator restores the role.
//!
//! Session endings reach every node two ways: the `session-ended` pub/sub channel (published on
//! logout, admin deletion and revoke), and Redis keyspace notifications for expired and deleted
//! `session:` keys (idle or absolute expiry, or a `DEL` by another process). Pub/sub is
//! fire-and-forget, so after every (re)subscription the store emits [`SessionEvent::Resync`]
//! and the server re-checks the sessions it holds sockets for; it also does so every
//! `session.reconcile_interval`.
//!
//! Under Redis Cluster ([`super::link`]) every command here touches one key (or keys of one
//! hash tag: the login counters share `{login-failures}`), work over several keys is sent as
//! separate commands, and the notification listener subscribes on every primary, again after
//! any change of primaries (a failover).

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use futures_util::{stream, StreamExt};
use redis::{AsyncCommands, Script};
use tokio::sync::broadcast;

use super::link::{Connection, Target};

use super::{
    AttemptStore, Counter, Marks, RefreshRecord, RefreshStore, RevocationStore, SecretHash, SessionEvent,
    SessionRecord, SessionStore, StoreError, StoreHealth, Taken, TicketStore,
};
use crate::config::RedisSettings;
use crate::ids::{SessionId, UserId};
use crate::principal::Principal;
use crate::time::now_unix_ms;

/// Marks a refresh token used and returns (uses so far, record); nil when unknown.
const TAKE_REFRESH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local uses = redis.call('HINCRBY', KEYS[1], 'used', 1)
return {uses, redis.call('HGET', KEYS[1], 'record')}
";

/// Slides a session's idle deadline: ARGV[1] = now (ms). Returns 1 if it is alive.
const TOUCH_SESSION: &str = r"
local f = redis.call('HMGET', KEYS[1], 'last', 'idle', 'abs')
if not f[1] then return 0 end
local now = tonumber(ARGV[1])
local last = math.max(tonumber(f[1]), now)
local deadline = math.min(last + tonumber(f[2]), tonumber(f[3]))
if deadline <= now then redis.call('DEL', KEYS[1]) return 0 end
redis.call('HSET', KEYS[1], 'last', last)
redis.call('PEXPIRE', KEYS[1], deadline - now)
return 1
";

/// [`crate::ratelimit::Gcra::admit`] on every key at once, all or none. ARGV holds each key's
/// interval and tolerance (ms), in key order. Redis's own clock, so that every node counts
/// alike. Returns 0 when counted, else the wait in ms.
const ACQUIRE_COUNTERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tats, wait = {}, 0
for i, key in ipairs(KEYS) do
  local stored = redis.call('GET', key)
  local tat = now
  if stored then tat = math.max(tonumber(stored), now) end
  local over = tat - now - tonumber(ARGV[2 * i])
  if over > 0 then wait = math.max(wait, over) end
  tats[i] = tat + tonumber(ARGV[2 * i - 1])
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', string.format('%.0f', tats[i] - now))
end
return 0
";

/// [`crate::ratelimit::Gcra::refund`] on every key: ARGV holds each key's interval (ms).
const RELEASE_COUNTERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  local stored = redis.call('GET', key)
  if stored then
    local tat = tonumber(stored) - tonumber(ARGV[i])
    if tat > now then
      redis.call('SET', key, string.format('%.0f', tat), 'PX', string.format('%.0f', tat - now))
    else
      redis.call('DEL', key)
    end
  end
end
return 0
";

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError(format!("redis holds a malformed {what}: {e}"))
}

/// The Redis-backed store.
pub struct RedisStore {
    conn: Connection,
    target: Target,
    prefix: String,
    events: broadcast::Sender<SessionEvent>,
    take_refresh: Script,
    touch_session: Script,
    acquire_counters: Script,
    release_counters: Script,
    /// The notification listener stops once this is dropped.
    _alive: Arc<()>,
}

impl RedisStore {
    /// Connects (failing with an error that names `redis.url` or `redis.cluster_nodes`, never
    /// printing them) and starts the notification listener, which turns on keyspace
    /// notifications where allowed.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        let (target, conn) = super::link::connect(settings).await.map_err(StoreError)?;
        let (events, _) = broadcast::channel(4096);
        let alive = Arc::new(());
        let listener_target = target.clone();
        let listener = Listener {
            target,
            conn: conn.clone(),
            prefix: settings.key_prefix.clone(),
            events: events.clone(),
            alive: Arc::downgrade(&alive),
        };
        tokio::spawn(listener.run());
        Ok(Self {
            _alive: alive,
            target: listener_target,
            conn,
            prefix: settings.key_prefix.clone(),
            events,
            take_refresh: Script::new(TAKE_REFRESH),
            touch_session: Script::new(TOUCH_SESSION),
            acquire_counters: Script::new(ACQUIRE_COUNTERS),
            release_counters: Script::new(RELEASE_COUNTERS),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    fn conn(&self) -> Connection {
        self.conn.clone()
    }

    async fn announce_ended(&self, id: &str) -> Result<(), StoreError> {
        let channel = format!("{}session-ended", self.prefix);
        let _: i64 = self.conn().publish(channel, id).await.map_err(unavailable)?;
        Ok(())
    }

    async fn read_sessions(&self, ids: &[String]) -> Result<Vec<SessionRecord>, StoreError> {
        // One command per session (they may sit on different cluster shards), all in flight at once.
        let rows: Vec<(Option<String>, Option<u64>)> = try_join_all(ids.iter().map(|id| {
            let mut conn = self.conn();
            let key = self.key("session", id);
            async move { redis::cmd("HMGET").arg(key).arg("record").arg("last").query_async(&mut conn).await }
        }))
        .await
        .map_err(unavailable)?;
        let now = now_unix_ms();
        let mut sessions = Vec::new();
        for (record, last) in rows {
            if let (Some(record), Some(last)) = (record, last) {
                let mut session: SessionRecord = serde_json::from_str(&record).map_err(|e| corrupt("session", e))?;
                session.last_seen_ms = last;
                if session.deadline_ms() > now {
                    sessions.push(session);
                }
            }
        }
        sessions.sort_by_key(|s| s.created_ms);
        Ok(sessions)
    }
}

async fn enable_keyspace_events(conn: &mut redis::aio::MultiplexedConnection) -> Result<(), redis::RedisError> {
    let current: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("notify-keyspace-events").query_async(conn).await?;
    let mut flags = current.get(1).cloned().unwrap_or_default();
    // E: keyevent channels; g: DEL; x: expired. 'A' already stands for g and x.
    for flag in ['E', 'g', 'x'] {
        let covered = flags.contains(flag) || (flag != 'E' && flags.contains('A'));
        if !covered {
            flags.push(flag);
        }
    }
    redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg(flags).query_async::<()>(conn).await
}

/// Listens for session endings and keyspace events, reconnecting forever with backoff.
struct Listener {
    target: Target,
    conn: Connection,
    prefix: String,
    events: broadcast::Sender<SessionEvent>,
    /// The listener ends when the store is dropped (this can no longer be upgraded).
    alive: Weak<()>,
}

/// How often a cluster's primaries are read again, to follow a failover.
const PRIMARIES_CHECK: Duration = Duration::from_secs(2);

impl Listener {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        while self.alive.upgrade().is_some() {
            if self.listen_once().await {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Subscribes on every server and relays what arrives until one subscription ends or the
    /// servers change. Answers whether it got as far as subscribing.
    async fn listen_once(&mut self) -> bool {
        let ended_channel = format!("{}session-ended", self.prefix);
        let session_prefix = format!("{}session:", self.prefix);
        let Ok(Ok(servers)) = tokio::time::timeout(Duration::from_secs(2), self.target.servers(&mut self.conn)).await
        else {
            return false;
        };
        let mut streams = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            match tokio::time::timeout(Duration::from_secs(2), server.get_multiplexed_async_connection()).await {
                Ok(Ok(mut conn)) => {
                    if let Err(e) = enable_keyspace_events(&mut conn).await {
                        tracing::warn!(
                            error = %e,
                            "could not enable Redis keyspace notifications (CONFIG SET notify-keyspace-events); \
                             expired sessions are then found by reconciliation every session.reconcile_interval"
                        );
                    }
                }
                _ => return false,
            }
            let Ok(Ok(mut pubsub)) = tokio::time::timeout(Duration::from_secs(2), server.get_async_pubsub()).await
            else {
                return false;
            };
            // A plain PUBLISH reaches every node of a cluster: one subscriber to it is enough.
            let subscribed = (i > 0 || pubsub.subscribe(&ended_channel).await.is_ok())
                && pubsub.psubscribe("__keyevent@*__:expired").await.is_ok()
                && pubsub.psubscribe("__keyevent@*__:del").await.is_ok();
            if !subscribed {
                return false;
            }
            // A stream that ends yields one `None`: that server's subscription is gone.
            streams.push(pubsub.into_on_message().map(Some).chain(stream::once(async { None })).boxed());
        }
        tracing::info!(servers = servers.len(), "subscribed to Redis session notifications");
        let _ = self.events.send(SessionEvent::Resync);
        let mut messages = stream::select_all(streams);
        let mut check = tokio::time::interval(PRIMARIES_CHECK);
        check.tick().await;
        loop {
            let message = tokio::select! {
                message = messages.next() => message.flatten(),
                _ = check.tick() => {
                    if self.alive.upgrade().is_none() {
                        return true;
                    }
                    match self.target.servers(&mut self.conn).await {
                        Ok(now) if same_servers(&now, &servers) => continue,
                        Ok(_) => {
                            tracing::info!("the Redis primaries changed; subscribing to session notifications again");
                            return true;
                        }
                        Err(_) => continue,
                    }
                }
            };
            let Some(message) = message else {
                tracing::warn!("lost a Redis notification connection; reconnecting");
                return true;
            };
            let Ok(payload) = message.get_payload::<String>() else { continue };
            let id = if message.get_channel_name() == ended_channel {
                Some(payload)
            } else {
                payload.strip_prefix(&session_prefix).map(str::to_owned)
            };
            if let Some(id) = id {
                let _ = self.events.send(SessionEvent::Ended(SessionId::new(id)));
            }
        }
    }
}

fn same_servers(a: &[redis::Client], b: &[redis::Client]) -> bool {
    let addresses = |list: &[redis::Client]| {
        let mut list: Vec<String> = list.iter().map(|c| c.get_connection_info().addr().to_string()).collect();
        list.sort();
        list
    };
    addresses(a) == addresses(b)
}

#[async_trait]
impl RefreshStore for RedisStore {
    async fn put(&self, token: &SecretHash, record: RefreshRecord) -> Result<(), StoreError> {
        let key = self.key("refresh", token.as_str());
        let json = serde_json::to_string(&record).expect("records serialise");
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &[("record", json.as_str()), ("used", "0")])
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(record.expires_at * 1000)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn take(&self, token: &SecretHash) -> Result<Option<Taken>, StoreError> {
        let found: Option<(i64, String)> = self
            .take_refresh
            .key(self.key("refresh", token.as_str()))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some((uses, json)) = found else { return Ok(None) };
        let record: RefreshRecord = serde_json::from_str(&json).map_err(|e| corrupt("refresh token", e))?;
        Ok(Some(if uses == 1 { Taken::Fresh(record) } else { Taken::Reused(record) }))
    }
}

#[async_trait]
impl TicketStore for RedisStore {
    async fn put(&self, ticket: &SecretHash, principal: Principal, expires_at: u64) -> Result<(), StoreError> {
        let json = serde_json::to_string(&principal).expect("principals serialise");
        redis::cmd("SET")
            .arg(self.key("ticket", ticket.as_str()))
            .arg(json)
            .arg("PXAT")
            .arg(expires_at * 1000)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn take(&self, ticket: &SecretHash) -> Result<Option<Principal>, StoreError> {
        let json: Option<String> = redis::cmd("GETDEL")
            .arg(self.key("ticket", ticket.as_str()))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| corrupt("ticket", e))).transpose()
    }
}

#[async_trait]
impl RevocationStore for RedisStore {
    async fn revoke_user(&self, user: &UserId, at: u64) -> Result<(), StoreError> {
        let _: () = self.conn().set(self.key("revoked-user", user.as_str()), at).await.map_err(unavailable)?;
        Ok(())
    }

    async fn revoke_session(&self, sid: &SessionId, until: u64) -> Result<(), StoreError> {
        redis::cmd("SET")
            .arg(self.key("revoked-session", sid.as_str()))
            .arg(1)
            .arg("PXAT")
            .arg(until * 1000)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn marks(&self, user: &UserId, sid: Option<&SessionId>) -> Result<Marks, StoreError> {
        // Separate GETs, not MGET: the two keys may sit on different cluster shards.
        let mut keys = vec![self.key("revoked-user", user.as_str())];
        keys.extend(sid.map(|sid| self.key("revoked-session", sid.as_str())));
        let values: Vec<Option<String>> = try_join_all(keys.into_iter().map(|key| {
            let mut conn = self.conn();
            async move { redis::cmd("GET").arg(key).query_async(&mut conn).await }
        }))
        .await
        .map_err(unavailable)?;
        let withdrawn_roles: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key("revoked-roles", user.as_str()))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(Marks {
            user_revoked_at_ms: values.first().cloned().flatten().and_then(|v| v.parse().ok()).map(mark_ms),
            session_revoked: values.get(1).is_some_and(Option::is_some),
            withdrawn_roles,
        })
    }

    async fn withdraw_role(&self, user: &UserId, role: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("SADD")
            .arg(self.key("revoked-roles", user.as_str()))
            .arg(role)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn restore_role(&self, user: &UserId, role: &str) -> Result<bool, StoreError> {
        let removed: i64 = redis::cmd("SREM")
            .arg(self.key("revoked-roles", user.as_str()))
            .arg(role)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let key = self.key("session", session.id.as_str());
        let user_key = self.key("user-sessions", session.user.as_str());
        let ttl = session.deadline_ms().saturating_sub(now_unix_ms()).max(1);
        let json = serde_json::to_string(session).expect("sessions serialise");
        // The user's index first, then the session: two steps, since the keys may sit on
        // different cluster shards. An index entry without its session is skipped on read.
        redis::pipe()
            .atomic()
            .cmd("SADD")
            .arg(&user_key)
            .arg(session.id.as_str())
            .cmd("PEXPIREAT")
            .arg(&user_key)
            .arg(session.absolute_expiry_ms)
            .arg("GT")
            .cmd("PEXPIREAT")
            .arg(&user_key)
            .arg(session.absolute_expiry_ms)
            .arg("NX")
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("record")
            .arg(json)
            .arg("last")
            .arg(session.last_seen_ms)
            .arg("idle")
            .arg(session.idle_timeout_ms)
            .arg("abs")
            .arg(session.absolute_expiry_ms)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn get(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.read_sessions(&[id.as_str().to_owned()]).await?.pop())
    }

    async fn touch(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError> {
        let alive: i64 = self
            .touch_session
            .key(self.key("session", id.as_str()))
            .arg(now_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(alive == 1)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let existed: i64 = self.conn().del(self.key("session", id.as_str())).await.map_err(unavailable)?;
        if existed == 1 {
            self.announce_ended(id.as_str()).await?;
        }
        Ok(existed == 1)
    }

    async fn delete_user(&self, user: &UserId) -> Result<Vec<SessionId>, StoreError> {
        let user_key = self.key("user-sessions", user.as_str());
        let ids: Vec<String> = self.conn().smembers(&user_key).await.map_err(unavailable)?;
        let mut ended = Vec::new();
        for id in ids.into_iter().map(SessionId::new) {
            if self.delete(&id).await? {
                ended.push(id);
            }
        }
        let _: i64 = self.conn().del(&user_key).await.map_err(unavailable)?;
        Ok(ended)
    }

    async fn list(&self, user: Option<&UserId>) -> Result<Vec<SessionRecord>, StoreError> {
        let ids: Vec<String> = match user {
            Some(user) => self.conn().smembers(self.key("user-sessions", user.as_str())).await.map_err(unavailable)?,
            None => {
                // Admin only: SCAN walks the keyspace in steps without blocking Redis, on each
                // server (a cluster's keys are spread over its primaries).
                let pattern = format!("{}session:*", self.prefix);
                let prefix_len = self.key("session", "").len();
                let mut keys: Vec<String> = Vec::new();
                for server in self.target.servers(&mut self.conn()).await.map_err(unavailable)? {
                    let mut conn = server.get_multiplexed_async_connection().await.map_err(unavailable)?;
                    let mut iter = conn.scan_match::<_, String>(&pattern).await.map_err(unavailable)?;
                    while let Some(key) = iter.next_item().await {
                        keys.push(key.map_err(unavailable)?[prefix_len..].to_owned());
                    }
                }
                keys
            }
        };
        self.read_sessions(&ids).await
    }

    async fn alive(&self, ids: &[SessionId]) -> Result<Vec<bool>, StoreError> {
        try_join_all(ids.iter().map(|id| {
            let mut conn = self.conn();
            let key = self.key("session", id.as_str());
            async move { conn.exists(key).await }
        }))
        .await
        .map_err(unavailable)
    }

    fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }
}

#[async_trait]
impl AttemptStore for RedisStore {
    async fn acquire(&self, counters: &[Counter]) -> Result<Option<Duration>, StoreError> {
        let mut invocation = self.acquire_counters.prepare_invoke();
        for counter in counters {
            invocation.key(format!("{}{}", self.prefix, counter.key));
            invocation.arg(counter.limit.interval_ms).arg(counter.limit.tolerance_ms);
        }
        let wait_ms: u64 = invocation.invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }

    async fn release(&self, counters: &[Counter]) -> Result<(), StoreError> {
        let mut invocation = self.release_counters.prepare_invoke();
        for counter in counters {
            invocation.key(format!("{}{}", self.prefix, counter.key)).arg(counter.limit.interval_ms);
        }
        invocation.invoke_async::<()>(&mut self.conn()).await.map_err(unavailable)
    }
}

#[async_trait]
impl StoreHealth for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING").query_async::<String>(&mut self.conn()).await.map(drop).map_err(unavailable)
    }
}

/// A revocation mark in milliseconds. Marks written in seconds by older versions are read as
/// the end of their second, so nothing issued in it slips through.
fn mark_ms(value: u64) -> u64 {
    const MS_SINCE_1973: u64 = 100_000_000_000;
    if value < MS_SINCE_1973 {
        value * 1000 + 999
    } else {
        value
    }
}

//! The Lua scripts of the Redis engine. Each runs atomically, so what it reads and writes
//! (an offset, a stream entry, the PUBLISH of the same message) is one step that every node
//! sees in the same order. Every key a script touches is passed in `KEYS` and shares the
//! room's hash tag, so a room's scripts run on one shard under Redis Cluster. A script
//! announces on the room's channel with the command it is given: `PUBLISH` on one Redis,
//! `SPUBLISH` on a cluster (sharded pub/sub: only the room's shard carries it, and the
//! channel shares the room's tag).

/// Posts one message. `KEYS`: meta hash, stream, idempotency key (or the meta hash again when
/// the message has no `ref`). `ARGV`: user, text, has ref (1/0), history size, room TTL ms,
/// a fresh epoch (used only if the room has none), the room channel, ref window ms, the
/// publish command.
/// Answers `{offset, duplicate (1/0), epoch}`.
///
/// Channel order is offset order because the PUBLISH happens inside the script. If the meta
/// hash is gone (expired, evicted) while the stream is not, offsets would restart under
/// existing entries: the stale stream is dropped and the room gets a new epoch.
pub const PUBLISH: &str = r#"
local meta, stream, idem = KEYS[1], KEYS[2], KEYS[3]
local user, text, has_ref = ARGV[1], ARGV[2], ARGV[3] == '1'
if has_ref then
  local seen = redis.call('GET', idem)
  if seen then
    return {tonumber(seen), 1, redis.call('HGET', meta, 'e') or ''}
  end
end
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch)
end
local offset = redis.call('HINCRBY', meta, 's', 1)
local t = redis.call('TIME')
local ts = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
redis.call('XADD', stream, 'MAXLEN', ARGV[4], offset .. '-0', 'f', user, 't', text, 'ts', ts)
redis.call('PEXPIRE', meta, ARGV[5])
redis.call('PEXPIRE', stream, ARGV[5])
redis.call(ARGV[9], ARGV[7], 'm ' .. epoch .. ' ' .. offset .. ' ' .. ts .. ' ' .. #user .. '\n' .. user .. text)
if has_ref then
  redis.call('SET', idem, offset, 'PX', ARGV[8])
end
return {offset, 0, epoch}
"#;

/// A room's state, for a node that starts (or resumes) following it. `KEYS`: meta hash,
/// stream, users hash, access hash. `ARGV`: how many entries, a fresh epoch, room TTL ms,
/// access TTL ms. Answers `{epoch, top offset, entries (newest first, each {id, fields}), users,
/// access fields}`. A room without an epoch gets one here (dropping a stale stream, as in
/// [`PUBLISH`]), so the epoch a client is told at its first join is the one the room's messages
/// will carry.
///
/// A room that starts over with nobody in it also drops the list left from an earlier room of
/// its name (a private room idle past its TTL is gone, as on one node); with somebody in it the
/// room was quiet, not gone, and its list stays.
pub const ROOM_STATE: &str = r#"
if redis.call('HSETNX', KEYS[1], 'e', ARGV[2]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if redis.call('HLEN', KEYS[3]) == 0 then
    redis.call('DEL', KEYS[4])
  end
end
redis.call('PEXPIRE', KEYS[4], ARGV[4])
local meta = redis.call('HMGET', KEYS[1], 'e', 's')
local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[1])
return {meta[1] or '', tonumber(meta[2] or '0'), entries, redis.call('HKEYS', KEYS[3]), redis.call('HGETALL', KEYS[4])}
"#;

/// A room's own list, and whether the room exists (it has an epoch, or somebody in it).
/// `KEYS`: access hash, meta hash, users hash. Answers `{access fields, exists (1/0)}`.
pub const ACCESS_READ: &str = r#"
local exists = redis.call('EXISTS', KEYS[2]) == 1 or redis.call('HLEN', KEYS[3]) > 0
return {redis.call('HGETALL', KEYS[1]), exists and 1 or 0}
"#;

/// Replaces a room's list, if it is still the version the caller read (compare and set: the
/// caller decides in Rust and retries on a conflict). `KEYS`: access hash, meta hash, stream,
/// users hash. `ARGV`: the version read (0: none), must the room be new (1/0), a fresh epoch,
/// room TTL ms, access TTL ms, then field, value, field, value… Answers `{1, new version}`,
/// `{0, version now}` (changed meanwhile) or `{-1, version}` (the room exists, and must not).
///
/// The version is Redis's clock in microseconds (or one more than the last), so it grows
/// across a list dropped and made again, and every node keeps the newest it heard of. The room
/// gets an epoch if it has none, so that the first join does not take it for a room starting
/// over and drop the list ([`ROOM_STATE`]).
pub const ACCESS_WRITE: &str = r#"
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, string.format('%.0f', current)}
end
if ARGV[2] == '1' and (redis.call('EXISTS', KEYS[2]) == 1 or redis.call('HLEN', KEYS[4]) > 0) then
  return {-1, string.format('%.0f', current)}
end
local t = redis.call('TIME')
local version = math.max(current + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', string.format('%.0f', version))
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if redis.call('HSETNX', KEYS[2], 'e', ARGV[3]) == 1 then
  redis.call('DEL', KEYS[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return {1, string.format('%.0f', version)}
"#;

/// A user's first socket on this node entered the room. `KEYS`: per-node hash, users hash.
/// `ARGV`: node, user, room channel, room TTL ms, publish command. The users hash counts the nodes a user is on
/// there; going from 0 to 1 announces them to every node.
pub const PRESENCE_JOIN: &str = r#"
if redis.call('HSETNX', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 1) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
    redis.call(ARGV[5], ARGV[3], 'p join ' .. ARGV[2])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"#;

/// A user's last socket on this node left the room. Same keys and arguments as
/// [`PRESENCE_JOIN`]; a user on no node any more is announced gone.
pub const PRESENCE_LEAVE: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1] .. '|' .. ARGV[2]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call(ARGV[5], ARGV[3], 'p leave ' .. ARGV[2])
  end
end
return 1
"#;

/// The heartbeat: stamps this node with Redis's clock (one clock for every node) and answers
/// it in ms, the nodes whose last heartbeat is older than the timeout, the live ones, and
/// whether this node was missing (reaped as dead, or Redis lost it: its presence must be
/// written again). `KEYS`: nodes sorted set. `ARGV`: node, timeout ms.
///
/// A node that was itself silent past the timeout names nobody dead: the others' silence is
/// most likely the same outage (Redis down for everyone), and they get one timeout to beat
/// again before anyone takes their users out of presence.
pub const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local timeout = tonumber(ARGV[2])
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
local missing = previous == false
local was_live = previous and now - tonumber(previous) < timeout
redis.call('ZADD', KEYS[1], now, ARGV[1])
local dead = {}
if was_live then
  dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - timeout)
end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - timeout, '+inf')
return {now, dead, live, missing and 1 or 0}
"#;

/// Makes this node's presence in one room exactly its local users: adds those missing
/// (announcing users new to the room) and removes the others (announcing users now on no node),
/// e.g. departures that could not be written while Redis was down. With no users, it takes a
/// node (a dead one, or this one leaving a room) out of the room; safe to run twice (two
/// reapers): a field is removed once. `KEYS`: per-node hash, users hash. `ARGV`: node, room
/// channel, room TTL ms, publish command, then the local users.
pub const SYNC_PRESENCE: &str = r#"
local prefix = ARGV[1] .. '|'
local here = {}
for i = 5, #ARGV do here[ARGV[i]] = true end
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, #prefix) == prefix then
    local user = string.sub(field, #prefix + 1)
    if here[user] then
      here[user] = nil
    else
      redis.call('HDEL', KEYS[1], field)
      if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
        redis.call('HDEL', KEYS[2], user)
        redis.call(ARGV[4], ARGV[2], 'p leave ' .. user)
      end
    end
  end
end
for user in pairs(here) do
  redis.call('HSET', KEYS[1], prefix .. user, 1)
  if redis.call('HINCRBY', KEYS[2], user, 1) == 1 then
    redis.call(ARGV[4], ARGV[2], 'p join ' .. user)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"#;

"""Lua run inside Redis by the Redis engine: each script is one atomic step.

Every script touches the keys of one hub channel only, all hash-tagged alike
(``<prefix>:{<channel>}:...``, see :func:`realtime.engines.redis.channel_base`),
so each runs on one Redis Cluster shard. docs/redis.md describes the keys.

The publish logic is written once (:data:`PUBLISH_CORE`) and used twice: by
:data:`PUBLISH` (EVALSHA, what the hub runs) and by the function library
:func:`function_library` (``FCALL realtime_publish`` / ``realtime_publish_json``,
what backends with only a Redis client run). Both take the same path, so
offsets stay right whoever publishes.

Time inside presence scripts is Redis's own (``TIME``), not the nodes' clocks.
"""

from __future__ import annotations

#: Name of the Redis Function library (``FUNCTION LOAD REPLACE`` at engine start).
LIBRARY = "realtime"

# A channel's position: meta hash fields e (epoch) and o (last offset).
_EPOCH_CORE = """
-- The channel's epoch, made (with offset 0) when the meta hash is missing: a
-- new epoch means continuity broke, so what the old one kept goes.
local function rt_epoch(meta, stream, receipts, candidate, meta_ms)
  local epoch = redis.call('HGET', meta, 'e')
  if epoch then
    return epoch, false
  end
  if candidate == '' then
    local t = redis.call('TIME')
    candidate = string.sub(redis.sha1hex(t[1] .. ':' .. t[2] .. ':' .. meta), 1, 8)
  end
  redis.call('HSET', meta, 'e', candidate, 'o', 0)
  if meta_ms > 0 then
    redis.call('PEXPIRE', meta, meta_ms)
  end
  redis.call('DEL', stream, receipts)
  return candidate, true
end
"""

#: The publish step. The message it stores and sends is a msgpack array
#: [0, offset, epoch, data, info, mid, time], info being false or
#: [user, client, info-bytes or false] (docs/redis.md, "Pub/sub messages").
#: With an idempotency key (``idem``, a key of the channel's slot): when it holds a
#: result, nothing is published and that result comes back as
#: {offset, epoch, mid, time, 1}; otherwise msgpack [offset, epoch, mid, time] is
#: stored in it for ``idem_ms``.
PUBLISH_CORE = (
    _EPOCH_CORE
    + """
local function rt_publish(stream, meta, receipts, pubsub, publish_cmd, data, size, history_ms, meta_ms,
                          user, client, info, mid, time, candidate, idem, idem_ms)
  if idem then
    local done = redis.call('GET', idem)
    if done then
      local r = cmsgpack.unpack(done)
      return {r[1], r[2], r[3], r[4], 1}
    end
  end
  local epoch = rt_epoch(meta, stream, receipts, candidate, meta_ms)
  local offset = redis.call('HINCRBY', meta, 'o', 1)
  if meta_ms > 0 then
    redis.call('PEXPIRE', meta, meta_ms)
    redis.call('PEXPIRE', receipts, meta_ms)
  end
  local who = false
  if user ~= '' or client ~= '' then
    local bytes = false
    if info ~= '' then bytes = info end
    who = {user, client, bytes}
  end
  local message = cmsgpack.pack({0, offset, epoch, data, who, mid, time})
  if size > 0 then
    redis.call('XADD', stream, 'MAXLEN', size, offset, 'd', message)
    local keep = history_ms
    if keep <= 0 then keep = meta_ms end
    if keep > 0 then
      redis.call('PEXPIRE', stream, keep)
    end
  end
  redis.call(publish_cmd, pubsub, message)
  if idem then
    redis.call('SET', idem, cmsgpack.pack({offset, epoch, mid, time}), 'PX', idem_ms)
  end
  return {offset, epoch}
end
"""
)

#: KEYS stream, meta, receipts, pub/sub channel[, idempotency key].
#: ARGV publish command, data, history size, history ms, meta ms, user, client, info, mid, time, epoch if new,
#: idempotency ms (with the idempotency key).
PUBLISH = (
    PUBLISH_CORE
    + """
return rt_publish(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
                  tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11],
                  KEYS[5] or false, tonumber(ARGV[12] or '0'))
"""
)

#: KEYS stream, meta, receipts. ARGV epoch if new, meta ms, since epoch ('' = any), start id, end id,
#: reverse ('1'/'0'), count ('' = all, '0' = position only).
#: Returns {offset, epoch, entries or nothing}.
HISTORY = (
    _EPOCH_CORE
    + """
local epoch, fresh = rt_epoch(KEYS[2], KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[2]))
local offset = tonumber(redis.call('HGET', KEYS[2], 'o'))
if fresh or ARGV[7] == '0' or (ARGV[3] ~= '' and ARGV[3] ~= epoch) then
  return {offset, epoch}
end
local entries
if ARGV[6] == '1' then
  if ARGV[7] == '' then
    entries = redis.call('XREVRANGE', KEYS[1], ARGV[5], ARGV[4])
  else
    entries = redis.call('XREVRANGE', KEYS[1], ARGV[5], ARGV[4], 'COUNT', ARGV[7])
  end
elseif ARGV[7] == '' then
  entries = redis.call('XRANGE', KEYS[1], ARGV[4], ARGV[5])
else
  entries = redis.call('XRANGE', KEYS[1], ARGV[4], ARGV[5], 'COUNT', ARGV[7])
end
return {offset, epoch, entries}
"""
)

#: KEYS receipts, meta. ARGV user, offset, meta ms. Receipts live as long as the channel's position.
#: Returns {stored offset, 1 if this call moved it else 0}.
RECEIPT_SET = """
local stored = redis.call('HGET', KEYS[1], ARGV[1])
local offset = tonumber(ARGV[2])
local moved = 0
if stored then
  stored = tonumber(stored)
end
if not stored or offset > stored then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  stored = offset
  moved = 1
end
local ttl = redis.call('PTTL', KEYS[2])
if ttl <= 0 then
  ttl = tonumber(ARGV[3])
end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {stored, moved}
"""

# --- presence -----------------------------------------------------------------
# Keys: pc hash client -> entry ("<user byte length>:<user><info>"), pe zset client ->
# expires-at ms, pu hash user -> live connection count, pl zset user -> pending leave
# deadline µs (each its own: the token that settles it), pg set of users whose entries expired,
# not yet handed to presence_expire.

_PRESENCE_CORE = """
-- Make key live at least until at (ms), never shortening what it has.
local function rt_extend(key, at)
  local ttl = redis.call('PTTL', key)
  if ttl == -1 then
    redis.call('PEXPIREAT', key, at)
  elseif ttl >= 0 then
    redis.call('PEXPIREAT', key, at, 'GT')
  end
end

local function rt_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Microseconds: pending leaves are scored with it so that each has its own deadline, the
-- token that settles it (a script takes longer than a microsecond; doubles hold it exactly).
local function rt_now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function rt_user(entry)
  local colon = string.find(entry, ':', 1, true)
  local n = tonumber(string.sub(entry, 1, colon - 1))
  return string.sub(entry, colon + 1, colon + n)
end

-- Drop entries whose time ran out; users left with no connection go to pg.
local function rt_purge(pc, pe, pu, pg, now)
  local expired = redis.call('ZRANGEBYSCORE', pe, '-inf', now)
  if #expired == 0 then
    return
  end
  for _, client in ipairs(expired) do
    local entry = redis.call('HGET', pc, client)
    if entry then
      redis.call('HDEL', pc, client)
      local user = rt_user(entry)
      if redis.call('HINCRBY', pu, user, -1) <= 0 then
        redis.call('HDEL', pu, user)
        redis.call('SADD', pg, user)
      end
    end
  end
  redis.call('ZREMRANGEBYSCORE', pe, '-inf', now)
  -- Unannounced leaves wait for a sweep (presence_expire) this long at least.
  rt_extend(pg, now + 600000)
end
"""

#: KEYS pc pe pu pl pg. ARGV client, user, entry, ttl ms. Returns 1 when the user joined.
PRESENCE_ADD = (
    _PRESENCE_CORE
    + """
local pc, pe, pu, pl, pg = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local client, user, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4])
local now = rt_now()
rt_purge(pc, pe, pu, pg, now)
redis.call('ZREMRANGEBYSCORE', pl, '-inf', rt_now_us())
local old = redis.call('HGET', pc, client)
redis.call('HSET', pc, client, ARGV[3])
redis.call('ZADD', pe, now + ttl, client)
local joined = 0
local counted = false
if old then
  local was = rt_user(old)
  if was == user then
    counted = true
  elseif redis.call('HINCRBY', pu, was, -1) <= 0 then
    redis.call('HDEL', pu, was)
    redis.call('SADD', pg, was)
  end
end
if not counted and redis.call('HINCRBY', pu, user, 1) == 1 then
  -- The user's first connection: a join, unless their leave is pending or unannounced.
  local pending = redis.call('ZREM', pl, user)
  local unannounced = redis.call('SREM', pg, user)
  if pending == 0 and unannounced == 0 then
    joined = 1
  end
end
-- Keys outlive the entries' deadline by one ttl (a minute at least), so that a sweep
-- (every third of the ttl, on nodes with subscribers) can still announce the leaves.
local keep = now + ttl + math.max(ttl, 60000)
for _, key in ipairs(KEYS) do
  rt_extend(key, keep)
end
return joined
"""
)

#: KEYS pc pe pu pl pg. ARGV client, pending leave ms. Returns 0, or when it was the user's last
#: connection the pending leave's deadline (µs): the token that settles this leave and no later one.
PRESENCE_REMOVE = (
    _PRESENCE_CORE
    + """
local pc, pe, pu, pl, pg = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = rt_now()
rt_purge(pc, pe, pu, pg, now)
local now_us = rt_now_us()
redis.call('ZREMRANGEBYSCORE', pl, '-inf', now_us)
local entry = redis.call('HGET', pc, ARGV[1])
if not entry then
  return 0
end
redis.call('HDEL', pc, ARGV[1])
redis.call('ZREM', pe, ARGV[1])
local user = rt_user(entry)
if redis.call('HINCRBY', pu, user, -1) > 0 then
  return 0
end
redis.call('HDEL', pu, user)
local deadline = now_us + tonumber(ARGV[2]) * 1000
redis.call('ZADD', pl, deadline, user)
rt_extend(pl, math.ceil(deadline / 1000))
return deadline
"""
)

#: KEYS pu pl. ARGV user, leave token. Returns 1 (once) when that pending leave stands:
#: not one the user came back from and then left again (on any node).
PRESENCE_SETTLE = (
    _PRESENCE_CORE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', rt_now_us())
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
local pending = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not pending or tonumber(pending) ~= tonumber(ARGV[2]) then
  return 0
end
return redis.call('ZREM', KEYS[2], ARGV[1])
"""
)

#: KEYS pc pe pu pg. Returns the users no longer present, each handed out once.
PRESENCE_EXPIRE = (
    _PRESENCE_CORE
    + """
rt_purge(KEYS[1], KEYS[2], KEYS[3], KEYS[4], rt_now())
local gone = redis.call('SMEMBERS', KEYS[4])
redis.call('DEL', KEYS[4])
return gone
"""
)

#: KEYS pc pe pu pg. Returns the flat client, entry list of live entries.
PRESENCE_GET = (
    _PRESENCE_CORE
    + """
rt_purge(KEYS[1], KEYS[2], KEYS[3], KEYS[4], rt_now())
return redis.call('HGETALL', KEYS[1])
"""
)

#: KEYS pc pe pu pg. Returns {clients, users}: two HLENs after the purge of expired entries.
PRESENCE_STATS = (
    _PRESENCE_CORE
    + """
rt_purge(KEYS[1], KEYS[2], KEYS[3], KEYS[4], rt_now())
return {redis.call('HLEN', KEYS[1]), redis.call('HLEN', KEYS[3])}
"""
)

# --- keyed live state -----------------------------------------------------------
# Keys: sv hash key -> value (live keys), sz zset key -> version (live and deleted:
# tombstones), sn string: the channel's version.

#: KEYS sv sz sn. ARGV key, has value ('1'/'0'), value, expected version ('' = any).
#: Returns {1, false, version} or, on a conflict, {0, current value or false, current version}.
STATE_SET = """
local key = ARGV[1]
if ARGV[4] ~= '' then
  local value = redis.call('HGET', KEYS[1], key)
  local version = tonumber(redis.call('ZSCORE', KEYS[2], key) or '0')
  local have = 0
  if value then
    have = version
  end
  if have ~= tonumber(ARGV[4]) then
    return {0, value, version}
  end
end
local version = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[2], version, key)
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], key, ARGV[3])
else
  redis.call('HDEL', KEYS[1], key)
end
return {1, false, version}
"""

#: KEYS sv sz. ARGV key. Returns {value or false, version (0 = never set)}.
STATE_GET = """
return {redis.call('HGET', KEYS[1], ARGV[1]), tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0')}
"""

#: KEYS sv sz sn. ARGV version. Returns {channel version, key, value or false, version, ...}:
#: with version 0 every live key, else every key changed after it (deleted ones with false).
STATE_SINCE = """
local out = {tonumber(redis.call('GET', KEYS[3]) or '0')}
if tonumber(ARGV[1]) <= 0 then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
    out[#out + 1] = tonumber(redis.call('ZSCORE', KEYS[2], all[i]))
  end
else
  local changed = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES')
  for i = 1, #changed, 2 do
    out[#out + 1] = changed[i]
    out[#out + 1] = redis.call('HGET', KEYS[1], changed[i])
    out[#out + 1] = tonumber(changed[i + 1])
  end
end
return out
"""

# --- direct publishing ---------------------------------------------------------

_LIBRARY_BODY = """
local function rt_fcall_publish(keys, args, json)
  local base = keys[1]
  if base == nil or args[1] == nil then
    return redis.error_reply('ERR usage: FCALL <function> 1 <channel key> <data> [history size] '
      .. '[history ttl seconds] [user] [client] [info] [mid] [time ms] [publish id] [id window seconds]')
  end
  local data = args[1]
  local info = args[6] or ''
  if json then
    data = cmsgpack.pack(cjson.decode(data))
    if info ~= '' then
      info = cmsgpack.pack(cjson.decode(info))
    end
  end
  local size = tonumber(args[2] or '0')
  local ttl = tonumber(args[3] or '0')
  local time = tonumber(args[8] or '0')
  if size == nil or size < 0 or size ~= math.floor(size) or ttl == nil or ttl < 0 or time == nil then
    return redis.error_reply('ERR history size, history ttl and time must be non-negative numbers')
  end
  local idem = false
  local idem_ms = 0
  local id = args[9] or ''
  if id ~= '' then
    if #id > 64 then
      return redis.error_reply('ERR the publish id must have 1 to 64 characters')
    end
    local window = tonumber(args[10] or '')
    if args[10] ~= nil and args[10] ~= '' and (window == nil or window <= 0) then
      return redis.error_reply('ERR the id window must be a number of seconds > 0')
    end
    idem = base .. ':i:f:' .. id
    idem_ms = ID_MS
    if window ~= nil then
      idem_ms = math.ceil(window * 1000)
    end
  end
  local history_ms = math.ceil(ttl * 1000)
  local meta_ms = META_MS
  if meta_ms > 0 and history_ms > meta_ms then
    meta_ms = history_ms
  end
  return rt_publish(base .. ':s', base .. ':m', base .. ':r', base .. ':p', PUBLISH_CMD, data, size,
                    history_ms, meta_ms, args[4] or '', args[5] or '', info, args[7] or '', time, '', idem, idem_ms)
end

redis.register_function('realtime_publish', function(keys, args) return rt_fcall_publish(keys, args, false) end)
redis.register_function('realtime_publish_json', function(keys, args) return rt_fcall_publish(keys, args, true) end)
"""


def function_library(publish_command: str, meta_ms: int, id_ms: int = 300_000) -> str:
    """The ``realtime`` Function library for ``FUNCTION LOAD REPLACE``, with this
    deployment's pub/sub command (PUBLISH or SPUBLISH), meta TTL and default publish id
    window (``id_ms``, for calls that give an id but no window) baked in.

    A call with a publish id (argument 9) publishes at most once per id in the channel
    within the window (argument 10, seconds): a repeat gets the first result,
    ``{offset, epoch, mid, time, 1}``. Its ids are a scope of their own (key
    ``<stem>:i:f:<id>``), apart from the ids of the hub's clients and HTTP API.
    """
    if publish_command not in ("PUBLISH", "SPUBLISH"):
        raise ValueError(f"unexpected publish command {publish_command!r}")
    return (
        f"#!lua name={LIBRARY}\n"
        f"local PUBLISH_CMD = '{publish_command}'\n"
        f"local META_MS = {int(meta_ms)}\n"
        f"local ID_MS = {max(1, int(id_ms))}\n" + PUBLISH_CORE + _LIBRARY_BODY
    )

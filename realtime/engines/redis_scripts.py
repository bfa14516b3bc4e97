"""Lua run inside Redis by the Redis engine: each script is one atomic step.

Every script touches the keys of one hub channel only, all hash-tagged alike
(``<prefix>:{<channel>}:...``, see :func:`realtime.engines.redis.channel_base`),
or a single key (:data:`KV_SET_MAX`), so each runs on one Redis Cluster shard. docs/redis.md describes the keys.

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
                          user, client, info, mid, time, candidate, idem, idem_ms, max_bytes)
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
    -- The meta field b counts the bytes of the stream's messages (reset when the stream is
    -- gone: expired or removed); trimming by hand keeps it right, by count and by bytes.
    local bytes = 0
    if redis.call('EXISTS', stream) == 1 then
      bytes = tonumber(redis.call('HGET', meta, 'b') or '0')
    end
    redis.call('XADD', stream, offset, 'd', message)
    bytes = bytes + #message
    local length = redis.call('XLEN', stream)
    while length > size or (max_bytes > 0 and bytes > max_bytes and length > 1) do
      local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
      redis.call('XDEL', stream, oldest[1])
      bytes = bytes - #oldest[2][2]
      length = length - 1
    end
    redis.call('HSET', meta, 'b', bytes)
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
#: history max bytes (0 = no bound), idempotency ms (with the idempotency key).
PUBLISH = (
    PUBLISH_CORE
    + """
return rt_publish(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
                  tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11],
                  KEYS[5] or false, tonumber(ARGV[13] or '0'), tonumber(ARGV[12]))
"""
)

#: KEYS stream, meta. ARGV since epoch ('' = any), start id, end id, reverse ('1'/'0'),
#: count ('' = all, '0' = position only), max bytes ('0' = no bound).
#: Returns {offset, epoch, entries, truncated} or, for the position only, {offset, epoch}.
#: A read creates nothing: a channel without meta stands at {0, ''}. Entries are read in
#: batches and the read stops before the one that would take their bytes over max bytes
#: (the first is always read: truncated = 1), so a reply is bounded however large history is.
HISTORY = """
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  return {0, ''}
end
local offset = tonumber(redis.call('HGET', KEYS[2], 'o'))
if ARGV[5] == '0' or (ARGV[1] ~= '' and ARGV[1] ~= epoch) then
  return {offset, epoch}
end
local want = tonumber(ARGV[5])
local budget = tonumber(ARGV[6])
local first, last, reverse = ARGV[2], ARGV[3], ARGV[4] == '1'
local out, bytes, truncated = {}, 0, 0
while true do
  local n = 32
  if want then n = math.min(n, want - #out) end
  if n <= 0 then break end
  local batch
  if reverse then
    batch = redis.call('XREVRANGE', KEYS[1], last, first, 'COUNT', n)
  else
    batch = redis.call('XRANGE', KEYS[1], first, last, 'COUNT', n)
  end
  for _, entry in ipairs(batch) do
    local size = #entry[2][2]
    if budget > 0 and #out > 0 and bytes + size > budget then
      truncated = 1
      break
    end
    out[#out + 1] = entry
    bytes = bytes + size
  end
  if truncated == 1 or #batch < n then break end
  if reverse then
    last = '(' .. batch[#batch][1]
  else
    first = '(' .. batch[#batch][1]
  end
end
return {offset, epoch, out, truncated}
"""

#: kv_set_max: KEYS[1] the value's key, ARGV[1] the number (Python repr text). Returns the
#: number stored after, as text (a Lua number would come back truncated to an integer).
KV_SET_MAX = """
local stored = redis.call('GET', KEYS[1])
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
  return stored
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

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

# Live state (the rules: realtime/engines/state.py). Keys: sv hash key -> value (live keys),
# sz zset key -> version of its last change (tombstones included), st zset of the tombstones
# alone (key -> version), se zset live key -> expiry ms, sm hash {lb: live bytes, tb: tombstone
# bytes, floor}, sn the version counter (never expires). A channel whose sm is gone (expired
# whole) but whose sn is not counts every version up to sn as compacted.

#: Lua shared by the state scripts: delete the keys in ``due`` (tombstones with versions of their
#: own, appended to ``out``), given their values in ``values``.
_STATE_EXPIRE_DUE = """
for _, k in ipairs(due) do
  version = version + 1
  redis.call('HDEL', sv, k)
  redis.call('ZREM', se, k)
  redis.call('ZADD', sz, version, k)
  redis.call('ZADD', st, version, k)
  lb = lb - #k - #values[k]
  tb = tb + #k
  out[#out + 1] = k
  out[#out + 1] = version
end
"""

#: Lua shared by the state scripts: drop the oldest tombstones while over the limits; store the sizes.
_STATE_COMPACT = """
local tombs = redis.call('ZCARD', st)
while tombs > 0 and ((max_keys > 0 and tombs > max_keys) or (max_bytes > 0 and lb + tb > max_bytes)) do
  local oldest = redis.call('ZRANGE', st, 0, 0, 'WITHSCORES')
  redis.call('ZREM', st, oldest[1])
  redis.call('ZREM', sz, oldest[1])
  tb = tb - #oldest[1]
  floor = math.max(floor, tonumber(oldest[2]))
  tombs = tombs - 1
end
redis.call('HSET', sm, 'lb', lb, 'tb', tb, 'floor', floor)
"""

#: KEYS sv sz sn se sm st. ARGV key, has value ('1'/'0'), value, expected version ('' = any),
#: now ms, ttl ms (0 = never), max bytes (0 = none), max keys (0 = none).
#: Returns {1, version, expired key, its version, ...}; {0, current value or false, current
#: version} on a version conflict; {-1, 'keys' or 'bytes'} over a limit (nothing changed then).
STATE_WRITE = (
    """
local sv, sz, sn, se, sm, st = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local key, set, value = ARGV[1], ARGV[2] == '1', ARGV[3]
local now, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local max_bytes, max_keys = tonumber(ARGV[7]), tonumber(ARGV[8])
local due = redis.call('ZRANGEBYSCORE', se, '-inf', now)
local dead = {}
for _, k in ipairs(due) do
  dead[k] = true
end
local old = redis.call('HGET', sv, key)
local oldver = tonumber(redis.call('ZSCORE', sz, key) or '0')
if old and dead[key] then
  old = false
end
if ARGV[4] ~= '' then
  local have = 0
  if old then
    have = oldver
  end
  if have ~= tonumber(ARGV[4]) then
    return {0, old, oldver}
  end
end
local lb = tonumber(redis.call('HGET', sm, 'lb') or '0')
local tb = tonumber(redis.call('HGET', sm, 'tb') or '0')
local values = {}
local due_bytes = 0
for _, k in ipairs(due) do
  values[k] = redis.call('HGET', sv, k) or ''
  due_bytes = due_bytes + #k + #values[k]
end
if set then
  local keys = redis.call('HLEN', sv) - #due + 1
  local bytes = lb - due_bytes + #key + #value
  if old then
    keys = keys - 1
    bytes = bytes - #key - #old
  end
  if max_keys > 0 and keys > max_keys then
    return {-1, 'keys'}
  end
  if max_bytes > 0 and bytes > max_bytes then
    return {-1, 'bytes'}
  end
end
local version = tonumber(redis.call('GET', sn) or '0')
local floor = tonumber(redis.call('HGET', sm, 'floor') or '0')
if version > 0 and redis.call('EXISTS', sm) == 0 then
  floor = version + 1
end
local out = {1, 0}
"""
    + _STATE_EXPIRE_DUE
    + """version = version + 1
redis.call('SET', sn, version)
if old then
  lb = lb - #key - #old
end
if redis.call('ZSCORE', st, key) then
  tb = tb - #key
end
redis.call('ZADD', sz, version, key)
if set then
  redis.call('HSET', sv, key, value)
  redis.call('ZREM', st, key)
  lb = lb + #key + #value
  if ttl > 0 then
    redis.call('ZADD', se, now + ttl, key)
  else
    redis.call('ZREM', se, key)
  end
else
  redis.call('HDEL', sv, key)
  redis.call('ZREM', se, key)
  redis.call('ZADD', st, version, key)
  tb = tb + #key
end
"""
    + _STATE_COMPACT
    + """for _, k in ipairs({sv, sz, se, sm, st}) do
  if ttl > 0 then
    redis.call('PEXPIRE', k, ttl)
  else
    redis.call('PERSIST', k)
  end
end
out[2] = version
return out
"""
)

#: KEYS sv sz sn se sm st. ARGV now ms, max bytes (0 = none), max keys (0 = none). Deletes the
#: keys expired at now (as a write would before its own change), compacts; returns {key, version, ...}.
STATE_EXPIRE = (
    """
local sv, sz, sn, se, sm, st = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now, max_bytes, max_keys = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', se, '-inf', now)
if #due == 0 then
  return {}
end
local values = {}
for _, k in ipairs(due) do
  values[k] = redis.call('HGET', sv, k) or ''
end
local version = tonumber(redis.call('GET', sn) or '0')
local lb = tonumber(redis.call('HGET', sm, 'lb') or '0')
local tb = tonumber(redis.call('HGET', sm, 'tb') or '0')
local floor = tonumber(redis.call('HGET', sm, 'floor') or '0')
local out = {}
"""
    + _STATE_EXPIRE_DUE
    + """redis.call('SET', sn, version)
"""
    + _STATE_COMPACT
    + """return out
"""
)

#: KEYS sv sz se. ARGV key, now ms. Returns {value or false (deleted, expired), version (0 = never set)}.
STATE_GET = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
local expires = redis.call('ZSCORE', KEYS[3], ARGV[1])
if value and expires and tonumber(expires) <= tonumber(ARGV[2]) then
  value = false
end
return {value, tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0')}
"""

#: KEYS sv sz sn se sm. ARGV version, now ms. Returns {channel version, full (1/0), key, value or
#: false, version, ...}: every live key when full, else every key changed after the version.
STATE_READ = """
local version = tonumber(redis.call('GET', KEYS[3]) or '0')
local asked, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local full = asked <= 0
if not full and asked <= version then
  local floor = redis.call('HGET', KEYS[5], 'floor')
  if not floor or asked < tonumber(floor) or #redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1) > 0 then
    full = true
  end
end
local out = {version, 0}
if full then
  out[2] = 1
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local expires = redis.call('ZSCORE', KEYS[4], all[i])
    if not expires or tonumber(expires) > now then
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
      out[#out + 1] = tonumber(redis.call('ZSCORE', KEYS[2], all[i]))
    end
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
                    history_ms, meta_ms, args[4] or '', args[5] or '', info, args[7] or '', time, '', idem, idem_ms, 0)
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

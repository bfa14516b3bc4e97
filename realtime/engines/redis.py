"""The Redis engine: many hub nodes share one Redis (or Redis Cluster).

Each hub channel owns a few Redis keys, hash-tagged alike so that they live on
one cluster shard (:func:`channel_base`), and one pub/sub channel carrying its
publications and events. Every write that must be atomic is one Lua script
(:mod:`.redis_scripts`); publishing assigns the offset, appends to the
channel's stream and sends the publication in a single step, so offsets never
repeat or go backwards whichever node (or backend, through ``FCALL
realtime_publish``) publishes. docs/redis.md lists every key.

Delivery goes through :class:`~.redis_pubsub.RedisPubSub`: ``subscribe`` and
``unsubscribe`` map hub channels to Redis channels, each message is decoded
once and handed to the node's :class:`~.base.PublicationHandler`. When the
listener reconnects, the node is told to resync (``on_resync``) and the
Function library is loaded again (Redis may have restarted empty).

Redis being unreachable makes data calls raise :class:`~.errors.EngineUnavailable`
(temporary: clients are told to retry), with one short log line (at most one a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped]
import redis.exceptions as rex
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from protocol.messages import ClientInfo, Publication, StateEntry, StreamPosition
from protocol.wire import MAX_OFFSET

from ..tasks import cancel_and_wait
from . import redis_scripts as lua
from .base import Engine
from .broker import DeliveryHealth, HistoryOptions, HistorySlice, Idempotency, PublicationHandler, Published
from .errors import EngineUnavailable, OutcomeUnknown, StateLimitExceeded, VersionConflict
from .presence import PresenceCounts, PresenceEntry
from .redis_publish import PublishPipeline
from .state import NO_LIMITS, StateLimits, StateSlice, StateWrite

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from .redis_pubsub import RedisPubSub

log = logging.getLogger("realtime.engines.redis")

#: Pub/sub message types (first element of the msgpack array).
PUBLICATION = 0
EVENT = 1

#: Errors that mean "Redis is not reachable or not serving now": clients retry.
UNAVAILABLE: tuple[type[Exception], ...] = (
    rex.ConnectionError,  # includes BusyLoadingError
    rex.TimeoutError,
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.ReadOnlyError,  # a failover in progress
    rex.OutOfMemoryError,
    rex.MaxConnectionsError,
    OSError,
)

#: Errors Redis answers instead of running a command: it certainly did not run.
REFUSED: tuple[type[Exception], ...] = (
    rex.BusyLoadingError,
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.ReadOnlyError,
    rex.OutOfMemoryError,
    rex.MaxConnectionsError,
    ConnectionRefusedError,
)
#: Attempts of one publish whose answer is lost, and seconds after which no new one starts
#: (each attempt may take up to the socket timeout): the engine finds out what happened by
#: repeating the publish with the same id, which the publish script makes safe.
PUBLISH_ATTEMPTS = 4
PUBLISH_RETRY_TIME = 3.0
#: Seconds before the second attempt of a publish; doubled for each next one.
PUBLISH_BACKOFF = 0.05

#: Exception types :func:`is_outage` may say yes to.
_OUTAGE_TYPES: tuple[type[Exception], ...] = (*UNAVAILABLE, RuntimeError)


def transport_closed(exc: BaseException) -> bool:
    """A pooled connection's transport closed under redis-py mid-call (asyncio's RuntimeError)."""
    return isinstance(exc, RuntimeError) and "unable to perform operation on" in str(exc)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means "Redis is not reachable or not serving now"."""
    return isinstance(exc, UNAVAILABLE) or transport_closed(exc)


#: Seconds between attempts to load the Function library while Redis is unreachable.
LOAD_RETRY = 2.0
#: A pending leave lives three grace windows, and at least this many seconds.
LEAVE_MIN = 1.0
#: Seconds between looks at the listener while :meth:`RedisEngine.start` waits for it.
READY_POLL = 0.005
#: Seconds between two "Redis unavailable" warnings; the ones in between are counted.
WARN_INTERVAL = 1.0


def channel_base(prefix: str, channel: str) -> str:
    """The common start of a channel's key names: ``<prefix>:{<channel>}``.

    The braces make Redis Cluster hash only the channel name, so all of the
    channel's keys share one slot. A name that contains ``{`` or ``}`` (or is
    empty) cannot be a hash tag; it is tagged with a hash of itself instead:
    ``<prefix>:#{<first 32 hex digits of sha256(name)>}``.
    """
    if not channel or "{" in channel or "}" in channel:
        return f"{prefix}:#{{{hashlib.sha256(channel.encode()).hexdigest()[:32]}}}"
    return f"{prefix}:{{{channel}}}"


def encode_presence_entry(entry: PresenceEntry) -> bytes:
    """``<user byte length>:<user><info>``: Lua reads the user without msgpack."""
    user = entry.user.encode()
    return b"%d:%s%s" % (len(user), user, entry.info or b"")


def decode_presence_entry(raw: bytes) -> PresenceEntry:
    length, _, rest = raw.partition(b":")
    n = int(length)
    return PresenceEntry(rest[:n].decode(), rest[n:] or None)


def decode_publication(channel: str, raw: bytes) -> Publication:
    """A publication as the publish script packed it (docs/redis.md, "Pub/sub messages")."""
    m = msgpack.unpackb(raw, raw=True)
    return _publication(channel, m)


def _publication(channel: str, m: list[Any]) -> Publication:
    _, offset, epoch, data, who, mid, ms = m
    info = None
    if who:
        user, client, extra = who
        info = ClientInfo(user.decode(), client.decode(), extra or None)
    return Publication(channel, data, int(offset), epoch.decode(), info, mid.decode(), int(ms))


def _ms(seconds: float) -> int:
    """Seconds as whole milliseconds, rounded up: a positive TTL never becomes 0."""
    return max(1, math.ceil(seconds * 1000)) if seconds > 0 else 0


class RedisEngine(Engine):
    """Create with a Redis URL; :meth:`start` with the node's handler, :meth:`close` last.

    ``cluster=True`` talks to a Redis Cluster and uses sharded pub/sub
    (SSUBSCRIBE/SPUBLISH); otherwise one Redis and plain pub/sub.
    ``meta_ttl`` (seconds) is how long a channel's position (epoch, offset)
    and read receipts outlive its last publication. ``max_connections`` bounds
    the command connections (per cluster node); the pub/sub listener has its own.
    """

    name = "redis"

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = "rt",
        cluster: bool = False,
        meta_ttl: float = 86400.0,
        socket_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        max_connections: int = 64,
        publish_retry_time: float = PUBLISH_RETRY_TIME,
        publish_id_window: float = 300.0,
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must be non-empty and contain no braces")
        self.prefix = prefix
        self.cluster = cluster
        self.meta_ttl = meta_ttl
        self.connect_timeout = connect_timeout
        self.publish_retry_time = publish_retry_time
        #: Seconds ``FCALL realtime_publish`` remembers a publish id when the call names none.
        self.publish_id_window = publish_id_window
        # One quick retry for a pooled connection that died (Redis restarted); no retry on
        # timeouts. A publish may run twice this way: its publish id makes the second a replay.
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), 1, supported_errors=(rex.ConnectionError,))
        options: dict[str, Any] = {
            "decode_responses": False,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "retry": retry,
        }
        self.redis: Redis | RedisCluster
        if cluster:
            self.redis = RedisCluster.from_url(redis_url, max_connections=max_connections, **options)
        else:
            # Concurrent calls beyond the pool wait for a connection (up to socket_timeout),
            # rather than failing at once as redis-py's default pool does.
            pool = BlockingConnectionPool.from_url(
                redis_url,
                max_connections=max_connections,
                timeout=socket_timeout,
                health_check_interval=30,
                **options,
            )
            self.redis = Redis.from_pool(pool)
        self._publish_cmd = "SPUBLISH" if cluster else "PUBLISH"
        self._control_channel = f"{prefix}:control"
        r = self.redis
        self._publish_script = r.register_script(lua.PUBLISH)
        self._history = r.register_script(lua.HISTORY)
        self._receipt_set = r.register_script(lua.RECEIPT_SET)
        self._kv_set_max = r.register_script(lua.KV_SET_MAX)
        self._presence_add = r.register_script(lua.PRESENCE_ADD)
        self._presence_remove = r.register_script(lua.PRESENCE_REMOVE)
        self._presence_settle = r.register_script(lua.PRESENCE_SETTLE)
        self._presence_expire = r.register_script(lua.PRESENCE_EXPIRE)
        self._presence_get = r.register_script(lua.PRESENCE_GET)
        self._presence_stats = r.register_script(lua.PRESENCE_STATS)
        self._state_write = r.register_script(lua.STATE_WRITE)
        self._state_expire = r.register_script(lua.STATE_EXPIRE)
        self._state_get = r.register_script(lua.STATE_GET)
        self._state_read = r.register_script(lua.STATE_READ)
        self._handler: PublicationHandler | None = None
        self._pubsub: RedisPubSub | None = None
        #: Redis pub/sub channel -> hub channel, for the channels this node listens to.
        self._channels: dict[str, str] = {}
        self._loader: asyncio.Task[None] | None = None
        self._closed = False
        self._warned_at = 0.0
        self._suppressed = 0
        #: One Redis: every publish of this node goes through one ordered pipeline.
        self._pipeline = (
            None
            if isinstance(self.redis, RedisCluster)
            else PublishPipeline(
                self.redis,
                self._publish_script,
                is_outage=is_outage,
                warn=self._warn,
                refused=REFUSED,
                attempts=PUBLISH_ATTEMPTS,
                retry_time=publish_retry_time,
                backoff=PUBLISH_BACKOFF,
            )
        )
        self.pipelines_publishes = not cluster  # one ordered pipeline (a cluster has none yet)

    # --- keys ------------------------------------------------------------

    def base(self, channel: str) -> str:
        """The channel's key name stem (docs/redis.md); ``FCALL realtime_publish`` takes it."""
        return channel_base(self.prefix, channel)

    def pubsub_channel(self, channel: str) -> str:
        return self.base(channel) + ":p"

    def idempotency_key(self, channel: str, key: str) -> str:
        """The Redis key of a publish's idempotency ``key`` in ``channel``: in the channel's slot."""
        return f"{self.base(channel)}:i:{key}"

    @property
    def _meta_ms(self) -> int:
        return _ms(self.meta_ttl)

    # --- lifecycle -------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._pubsub is not None and self._pubsub.ready

    @property
    def delivery_health(self) -> DeliveryHealth:
        pubsub = self._pubsub
        if pubsub is None:
            return DeliveryHealth()
        return DeliveryHealth(pubsub.reconnects, pubsub.probe_failures)

    async def start(self, handler: PublicationHandler) -> None:
        """Start the listener (control channel included) and wait, at most
        ``connect_timeout``, for its first connection: a hub that starts with Redis
        up serves subscriptions at once; with Redis down it starts anyway, not ready."""
        from .redis_pubsub import RedisPubSub

        self._handler = handler
        self._closed = False
        self._pubsub = RedisPubSub(
            self.redis,
            sharded=self.cluster,
            on_message=self._on_message,
            on_reconnect=self._on_reconnect,
            name=self.prefix,
        )
        await self._pubsub.subscribe(self._control_channel)  # before start: kept for every connection
        await self._pubsub.start()
        self._loader = asyncio.create_task(self._load_library())
        try:
            async with asyncio.timeout(self.connect_timeout):
                while not self._pubsub.ready:
                    await asyncio.sleep(READY_POLL)  # the listener has no event to await
        except TimeoutError:
            log.warning("Redis not reachable within %.1fs: starting anyway, not ready", self.connect_timeout)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._handler = None
        self._channels.clear()
        if self._loader is not None:
            await cancel_and_wait(self._loader)
            self._loader = None
        if self._pubsub is not None:
            await self._pubsub.close()
            self._pubsub = None
        if self._pipeline is not None:
            await self._pipeline.close()
        await self.redis.aclose()

    async def load_library(self) -> None:
        """``FUNCTION LOAD REPLACE`` the direct-publish functions (every primary in a cluster)."""
        code = lua.function_library(self._publish_cmd, self._meta_ms, _ms(self.publish_id_window))
        await self.redis.function_load(code, replace=True)

    async def library_loaded(self) -> None:
        """Wait until the Function library load in progress (at start, after a reconnect) is over."""
        if self._loader is not None:
            await asyncio.shield(self._loader)

    async def _load_library(self) -> None:
        """Load the Function library, retrying while Redis is unreachable."""
        failures = 0
        while True:
            try:
                await self.load_library()
                if failures:
                    log.info("Function library loaded after %d failed attempts", failures)
                return
            except UNAVAILABLE as exc:
                # One line per outage: the listener already says Redis is unreachable.
                if not failures:
                    self._warn("load the Function library (retrying)", exc)
                failures += 1
            except rex.ResponseError as exc:
                # E.g. FUNCTION not allowed by ACL: the hub works, direct FCALL publishing does not.
                log.warning("Redis refused the Function library (direct FCALL publishing is off): %s", exc)
                return
            await asyncio.sleep(LOAD_RETRY)

    def _on_reconnect(self) -> None:
        """The listener is back: deliveries may have been lost, and Redis may have lost its functions."""
        if self._closed:
            return
        if self._loader is None or self._loader.done():
            self._loader = asyncio.create_task(self._load_library())
        if self._handler is not None:
            self._handler.on_resync()

    def _on_message(self, redis_channel: str, payload: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if redis_channel == self._control_channel:
            handler.on_control(payload)
            return
        channel = self._channels.get(redis_channel)
        if channel is None:
            return  # unsubscribed meanwhile
        try:
            m = msgpack.unpackb(payload, raw=True)
            kind = m[0]
            if kind == PUBLICATION:
                pub = _publication(channel, m)
            elif kind == EVENT:
                event = m[1]
            else:
                raise ValueError(kind)
        except Exception:
            log.warning("malformed message on Redis channel %s ignored", redis_channel)
            return
        if kind == PUBLICATION:
            handler.on_publication(pub)
        else:
            handler.on_event(channel, event)

    # --- errors ----------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, op: str) -> Iterator[None]:
        """Turn "Redis unreachable" into the engine's temporary error."""
        try:
            yield
        except _OUTAGE_TYPES as exc:
            if not is_outage(exc):
                raise
            self._warn(op, exc)
            raise EngineUnavailable("temporarily unavailable: retry") from None

    def _warn(self, op: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at < WARN_INTERVAL:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        self._warned_at, self._suppressed = now, 0
        log.warning("Redis unavailable, could not %s: %s: %s%s", op, type(exc).__name__, exc, more)

    async def _run(self, op: str, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        with self._guard(op):
            return await script(keys=keys, args=args)

    # --- publications ----------------------------------------------------

    async def _publish(
        self,
        channel: str,
        data: bytes,
        info: ClientInfo | None,
        history: HistoryOptions,
        mid: str,
        time: int,
        idempotency: Idempotency | None,
    ) -> Published:
        b = self.base(channel)
        history_ms = _ms(history.ttl)
        meta_ms = self._meta_ms
        if meta_ms and history_ms > meta_ms:
            meta_ms = history_ms
        user, client, extra = (info.user, info.client, info.info or b"") if info is not None else ("", "", b"")
        keys = [b + ":s", b + ":m", b + ":r", b + ":p"]
        args: list[Any] = [
            self._publish_cmd,
            data,
            max(0, history.size),
            history_ms,
            meta_ms,
            user,
            client,
            extra,
            mid,
            time,
            secrets.token_hex(4),
            max(0, history.max_bytes),
        ]
        if idempotency is not None:
            keys.append(self.idempotency_key(channel, idempotency.key))
            args.append(_ms(idempotency.ttl))
        reply = await self._publish_once(keys, args, retry=idempotency is not None)
        if len(reply) > 2:  # the key held a result: nothing was published
            return Published(int(reply[0]), reply[1].decode(), reply[2].decode(), int(reply[3]), replayed=True)
        return Published(int(reply[0]), reply[1].decode(), mid, time)

    async def _publish_once(self, keys: list[str], args: list[Any], *, retry: bool) -> Any:
        """Run the publish script and learn its true outcome, or say it is unknown.

        A failure before the script was sent (no connection, Redis refusing it) raises
        EngineUnavailable: nothing was published. A failure after (the connection dropped,
        a timeout) leaves the outcome unknown; with an idempotency key (``retry``) the script
        runs again with the same key, which publishes or replays the first result, at most
        :data:`PUBLISH_ATTEMPTS` times and not past ``publish_retry_time`` seconds. Still
        unknown (or without a key): :class:`OutcomeUnknown`. On one Redis the node's publishes
        go through one :class:`~.redis_publish.PublishPipeline` (in submit order, on one
        connection per round trip), so where an attempt failed is known; on a cluster
        redis-py's own retries cannot be seen, so any failure leaves it unknown.
        """
        if self._pipeline is not None:
            return await self._pipeline.call(keys, args, retry=retry)
        deadline = time.monotonic() + self.publish_retry_time
        unknown = False
        delay = PUBLISH_BACKOFF
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._publish_script(keys=keys, args=args)
            except _OUTAGE_TYPES as exc:
                if not is_outage(exc):
                    raise
                unknown = True
                self._warn("publish" if attempt == 1 else f"publish (attempt {attempt})", exc)
            if not retry or attempt >= PUBLISH_ATTEMPTS or time.monotonic() + delay >= deadline:
                break
            await asyncio.sleep(delay)
            delay *= 2
        if unknown:
            raise OutcomeUnknown("outcome unknown: retry with the same id") from None
        raise EngineUnavailable("temporarily unavailable: retry") from None

    async def subscribe(self, channel: str) -> None:
        assert self._pubsub is not None, "start the engine first"
        redis_channel = self.pubsub_channel(channel)
        self._channels[redis_channel] = channel
        try:
            with self._guard("subscribe"):
                await self._pubsub.subscribe(redis_channel)  # raises EngineUnavailable itself while down
        except BaseException:
            self._channels.pop(redis_channel, None)
            raise

    async def unsubscribe(self, channel: str) -> None:
        redis_channel = self.pubsub_channel(channel)
        self._channels.pop(redis_channel, None)
        if self._pubsub is not None:
            with self._guard("unsubscribe"):
                await self._pubsub.unsubscribe(redis_channel)

    # --- history ---------------------------------------------------------

    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        before: int | None = None,
        limit: int | None = None,
        reverse: bool = False,
        max_bytes: int = 0,
    ) -> HistorySlice:
        b = self.base(channel)
        start = str(max(0, since.offset) + 1) if since is not None else "-"
        end = str(before - 1) if before is not None else "+"
        count = "" if limit is None else str(max(0, limit))
        if before is not None and before <= 1:
            count = "0"  # nothing is before offset 1: the position only
        if since is not None and since.offset >= MAX_OFFSET:
            start, count = "-", "0"  # nothing is after the last offset (and 2**64 is no stream id)
        reply = await self._run(
            "read history",
            self._history,
            (b + ":s", b + ":m"),
            (
                since.epoch if since is not None else "",
                start,
                end,
                "1" if reverse else "0",
                count,
                max(0, max_bytes),
            ),
        )
        position = StreamPosition(int(reply[0]), reply[1].decode())
        pubs: list[Publication] = []
        if len(reply) > 2:
            for _id, fields in reply[2]:
                pubs.append(decode_publication(channel, _field(fields, b"d")))
        return HistorySlice(pubs, position, len(reply) > 3 and int(reply[3]) == 1)

    async def remove_history(self, channel: str) -> None:
        with self._guard("remove history"):
            await self.redis.delete(self.base(channel) + ":s")

    # --- ephemeral events and control ---------------------------------

    async def broadcast(self, channel: str, event: bytes) -> None:
        message = msgpack.packb([EVENT, event], use_bin_type=True)
        with self._guard("broadcast"):
            await self.redis.execute_command(self._publish_cmd, self.pubsub_channel(channel), message)

    async def control(self, message: bytes) -> None:
        with self._guard("send a control message"):
            await self.redis.execute_command(self._publish_cmd, self._control_channel, message)

    # --- presence --------------------------------------------------------

    def _presence_keys(self, channel: str) -> tuple[str, str, str, str, str]:
        """pc (entries), pe (expiry), pu (user counts), pl (pending leaves), pg (unannounced leaves)."""
        b = self.base(channel)
        return (b + ":pc", b + ":pe", b + ":pu", b + ":pl", b + ":pg")

    async def presence_add(self, channel: str, client: str, entry: PresenceEntry, *, ttl: float) -> bool:
        joined = await self._run(
            "add presence",
            self._presence_add,
            self._presence_keys(channel),
            (client, entry.user, encode_presence_entry(entry), _ms(ttl) or 1),
        )
        return bool(joined)

    async def presence_remove(self, channel: str, client: str, user: str, *, grace: float) -> int:
        # The pending leave outlives the grace window a few times over, then lapses.
        left = await self._run(
            "remove presence",
            self._presence_remove,
            self._presence_keys(channel),
            (client, _ms(max(grace * 3, LEAVE_MIN))),
        )
        return int(left)

    async def presence_settle(self, channel: str, user: str, leave: int) -> bool:
        keys = self._presence_keys(channel)
        settled = await self._run("settle presence", self._presence_settle, (keys[2], keys[3]), (user, leave))
        return bool(settled)

    async def presence_expire(self, channel: str) -> list[str]:
        pc, pe, pu, _, pg = self._presence_keys(channel)
        gone = await self._run("expire presence", self._presence_expire, (pc, pe, pu, pg), ())
        return [user.decode() for user in gone]

    async def presence(self, channel: str) -> dict[str, PresenceEntry]:
        pc, pe, pu, _, pg = self._presence_keys(channel)
        flat = await self._run("read presence", self._presence_get, (pc, pe, pu, pg), ())
        return {flat[i].decode(): decode_presence_entry(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def presence_stats(self, channel: str) -> PresenceCounts:
        pc, pe, pu, _, pg = self._presence_keys(channel)
        clients, users = await self._run("read presence stats", self._presence_stats, (pc, pe, pu, pg), ())
        return PresenceCounts(int(clients), int(users))

    # --- small shared values -------------------------------------------

    def _kv_key(self, key: str) -> str:
        return f"{self.prefix}:kv:{key}"

    async def kv_get(self, key: str) -> bytes | None:
        with self._guard("read a value"):
            value: Any = await self.redis.get(self._kv_key(key))
        return bytes(value) if value is not None else None

    async def kv_set(self, key: str, value: bytes, *, ttl: float = 0.0, only_if_absent: bool = False) -> bool:
        with self._guard("store a value"):
            stored = await self.redis.set(self._kv_key(key), value, px=_ms(ttl) or None, nx=only_if_absent)
        return bool(stored)

    async def kv_set_max(self, key: str, value: float) -> float:
        stored = await self._run("store a value", self._kv_set_max, (self._kv_key(key),), (repr(value),))
        return float(stored)

    # --- read receipts ---------------------------------------------------

    async def receipt_raise(self, channel: str, user: str, offset: int) -> tuple[int, bool]:
        b = self.base(channel)
        stored, moved = await self._run(
            "store a receipt", self._receipt_set, (b + ":r", b + ":m"), (user, offset, self._meta_ms)
        )
        return int(stored), bool(moved)

    async def receipts(self, channel: str) -> dict[str, int]:
        with self._guard("read receipts"):
            raw: Any = await self.redis.hgetall(self.base(channel) + ":r")
        return {user.decode(): int(offset) for user, offset in raw.items()}

    # --- keyed live state ------------------------------------------------

    def _state_keys(self, channel: str) -> tuple[str, str, str, str, str, str]:
        """sv (values), sz (versions, tombstones included), sn (the channel's version), se (expiry
        times), sm (sizes and floor), st (tombstones); see redis_scripts.py."""
        b = self.base(channel)
        return (b + ":sv", b + ":sz", b + ":sn", b + ":se", b + ":sm", b + ":st")

    async def state_write(
        self,
        channel: str,
        key: str,
        value: bytes | None,
        *,
        expected_version: int | None = None,
        limits: StateLimits = NO_LIMITS,
        now: float | None = None,
    ) -> StateWrite:
        out = await self._run(
            "set state",
            self._state_write,
            self._state_keys(channel),
            (
                key,
                "0" if value is None else "1",
                value or b"",
                "" if expected_version is None else str(expected_version),
                _now_ms(now),
                _ms(limits.ttl),
                limits.max_bytes,
                limits.max_keys,
            ),
        )
        if out[0] == 0:
            raise VersionConflict(StateEntry(key, out[1], int(out[2])))
        if out[0] == -1:
            what = out[1].decode()
            raise StateLimitExceeded(what, limits.max_keys if what == "keys" else limits.max_bytes)
        expired = tuple(StateEntry(out[i].decode(), None, int(out[i + 1])) for i in range(2, len(out), 2))
        return StateWrite(StateEntry(key, value, int(out[1])), expired)

    async def state_expire(
        self, channel: str, limits: StateLimits = NO_LIMITS, *, now: float | None = None
    ) -> tuple[StateEntry, ...]:
        flat = await self._run(
            "expire state",
            self._state_expire,
            self._state_keys(channel),
            (_now_ms(now), limits.max_bytes, limits.max_keys),
        )
        return tuple(StateEntry(flat[i].decode(), None, int(flat[i + 1])) for i in range(0, len(flat), 2))

    async def state_get(self, channel: str, key: str, *, now: float | None = None) -> StateEntry:
        sv, sz, _, se, _, _ = self._state_keys(channel)
        value, version = await self._run("read state", self._state_get, (sv, sz, se), (key, _now_ms(now)))
        return StateEntry(key, value, int(version))

    async def state_read(self, channel: str, version: int = 0, *, now: float | None = None) -> StateSlice:
        keys = self._state_keys(channel)[:5]
        flat = await self._run("read state", self._state_read, keys, (str(version), _now_ms(now)))
        entries = [StateEntry(flat[i].decode(), flat[i + 1], int(flat[i + 2])) for i in range(2, len(flat), 3)]
        return StateSlice(entries, int(flat[0]), bool(flat[1]))


def _now_ms(now: float | None) -> int:
    """Unix milliseconds (``now`` in seconds, or the clock): state expiry is wall-clock time."""
    return int((time.time() if now is None else now) * 1000)


def _field(fields: Any, name: bytes) -> bytes:
    """A field of a stream entry (redis-py gives a dict or a flat list, by protocol)."""
    if isinstance(fields, dict):
        value: bytes = fields[name]
        return value
    for i in range(0, len(fields), 2):
        if fields[i] == name:
            found: bytes = fields[i + 1]
            return found
    raise KeyError(name)

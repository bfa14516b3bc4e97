"""The Redis pub/sub listener: this node's subscriptions, read as fast as Redis sends them.

:class:`RedisPubSub` keeps the set of channels the node wants and one pub/sub
connection per Redis server that carries them: one in total for a single Redis
(or Sentinel-managed primary), one per primary of a Redis Cluster with sharded
pub/sub, since a sharded channel lives on its slot's primary. A task per
connection reads the socket in large chunks and hands every message to
``on_message(channel, data)`` synchronously, so the output buffer Redis keeps
for us stays near empty: Redis disconnects a subscriber whose buffer passes
``client-output-buffer-limit pubsub``.

One supervisor task connects in the background, retrying with exponential
backoff and full jitter (one warning per failure streak), subscribes every
wanted channel on every (re)connection, then calls ``on_reconnect()``:
deliveries may have been lost meanwhile, so the engine has the hub check each
channel against history. The first connection does not call it.

Liveness: every ``probe_interval`` the supervisor publishes a probe to a
node-private channel through the client's ordinary connections and expects it
back on each pub/sub connection before the next probe is due. A connection
that stays open but delivers nothing (a peer gone silent, a server that fell
out of replication after a failover) fails its probe and every pub/sub
connection is reopened. :attr:`RedisPubSub.ready` is false from the moment a
probe is overdue until a probe comes back. A connection whose probe is late
while messages keep arriving is behind, not stuck (the node cannot keep up
with what is published): it is kept, with a warning, since reopening it would
throw the backlog away; Redis itself drops it if the backlog passes
``client-output-buffer-limit pubsub``, and then it is reopened.

Connections are made by the client's own connection class and arguments, so
TLS, ACL users, credential providers, Unix sockets and Sentinel discovery of
the current primary work as for the engine's commands. After the handshake the
listener reads the socket itself with hiredis: redis-py's ``PubSub`` reconnects
and resubscribes inside its retry loop without telling anyone (so no resync
would follow), and its asyncio ``ClusterPubSub`` polls the nodes' connections
in turn with a timeout each instead of reading all of them as data comes.

Create with the engine's client, :meth:`~RedisPubSub.start` it (it returns at
once), then :meth:`~RedisPubSub.subscribe` and
:meth:`~RedisPubSub.unsubscribe`; :meth:`~RedisPubSub.close` last.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.retry import Retry

from protocol.backoff import backoff

from ..tasks import cancel_and_wait
from .errors import EngineUnavailable

log = logging.getLogger("realtime.redis")

#: Bytes asked of the socket per read; the hiredis reader parses every message in them.
READ_CHUNK = 1 << 18
#: Most channels in one (S)SUBSCRIBE or (S)UNSUBSCRIBE command.
BATCH_LIMIT = 512
#: Seconds one connection attempt may take (connect, handshake), before subscribing.
CONNECT_TIMEOUT = 5.0
#: Channels (re)subscribed per second assumed when bounding a reconnection.
RESUBSCRIBE_RATE = 20_000.0
#: Reconnect delays: full jitter between 0 and this, doubling up to ``MAX_DELAY``.
MIN_DELAY = 0.05
MAX_DELAY = 5.0
#: Seconds between attempts to publish a probe that failed.
PROBE_RETRY = 0.05

_MESSAGE = b"message"
_SMESSAGE = b"smessage"
_CONFIRMATIONS = frozenset({b"subscribe", b"ssubscribe", b"unsubscribe", b"sunsubscribe"})
#: Reply errors meaning our view of the cluster's slots is stale.
_TOPOLOGY_ERRORS = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")


def _unavailable(reason: str = "Redis is unavailable") -> EngineUnavailable:
    return EngineUnavailable(reason)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: its waiters may all have been cancelled."""
    if not future.cancelled():
        future.exception()


class _LinkDown(Exception):
    """A pub/sub connection failed or stopped delivering: every connection is reopened."""


class _Expect:
    """Replies a command sent on a link still waits for: one confirmation per channel, or one error."""

    __slots__ = ("future", "kind", "pending")

    def __init__(self, kind: bytes, channels: Iterable[bytes], future: asyncio.Future[None]) -> None:
        self.kind = kind
        self.pending = set(channels)
        self.future = future


class _Link:
    """One pub/sub connection to one Redis server, read by its own task.

    ``channels`` holds what was sent (subscribed and not unsubscribed since):
    Redis runs a connection's commands in order, so later commands may rely on it.
    """

    def __init__(
        self,
        key: str,
        address: str,
        conn: AbstractConnection,
        sharded: bool,
        on_message: Callable[[str, bytes], None],
        on_server_unsubscribe: Callable[[_Link, str], None],
        wake: Callable[[], None],
    ) -> None:
        self.key = key
        self.address = address
        self.conn = conn
        self.sub = b"ssubscribe" if sharded else b"subscribe"
        self.unsub = b"sunsubscribe" if sharded else b"unsubscribe"
        reader, writer = conn._reader, conn._writer  # redis-py did the handshake; we read from here on
        if reader is None or writer is None:
            raise ConnectionError("the connection closed during its handshake")
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()
        self._on_message = on_message
        self._on_server_unsubscribe = on_server_unsubscribe
        #: Called when the supervisor should look: the link failed, or a probe came back.
        self._wake = wake
        self.channels: set[str] = set()
        self._expect: deque[_Expect] = deque()
        self.error: BaseException | None = None
        #: The liveness probe: its channel, the token awaited and when it was sent (0 = none outstanding).
        self.probe_channel = ""
        self._probe_raw = b""
        self.probe_token = b""
        self.probe_sent = 0.0
        #: Reads that brought data, and their count at the last probe check: a late probe
        #: on a link that still reads data means a backlog, not a dead link.
        self.reads = 0
        self.reads_checked = 0
        self.behind_since = 0.0
        self._task = asyncio.create_task(self._read(), name=f"redis-pubsub {address}")

    def set_probe_channel(self, channel: str) -> None:
        self.probe_channel = channel
        self._probe_raw = channel.encode()

    # --- reading ---------------------------------------------------------

    async def _read(self) -> None:
        reader = self._reader
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    raise ConnectionError("closed by the server")
                self.reads += 1
                self._parser.feed(data)
                self._drain()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the socket failed, or hiredis found garbage
            self.fail(exc)

    def _drain(self) -> None:
        """Hand out every complete reply; messages go straight to ``on_message``."""
        gets = self._parser.gets
        on_message = self._on_message
        probe = self._probe_raw
        while True:
            reply = gets()
            if reply is False:
                return
            if type(reply) is list and (reply[0] == _MESSAGE or reply[0] == _SMESSAGE):
                channel = reply[1]
                if channel == probe:
                    if reply[2] == self.probe_token:
                        self.probe_sent = 0.0
                        self._wake()
                    continue
                try:
                    on_message(channel.decode(), reply[2])
                except Exception:
                    log.exception("a Redis message handler failed")
            else:
                self._reply(reply)

    def _reply(self, reply: Any) -> None:
        """A confirmation, an error or a command's reply: it belongs to the oldest command waiting."""
        head = self._expect[0] if self._expect else None
        if isinstance(reply, list) and reply and reply[0] in _CONFIRMATIONS:
            kind, channel = reply[0], reply[1]
            if head is not None and head.kind == kind and channel in head.pending:
                head.pending.discard(channel)
                if not head.pending:
                    self._expect.popleft()
                    if not head.future.done():
                        head.future.set_result(None)
            elif kind == self.unsub:
                # Not asked for: the server dropped it (its slot moved to another node).
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                self.channels.discard(name)
                self._on_server_unsubscribe(self, name)
            return
        if head is None:
            log.debug("unexpected reply on the pub/sub connection to %s: %r", self.address, reply)
            return
        self._expect.popleft()
        if isinstance(reply, hiredis.ReplyError):
            if head.kind == self.sub:
                self.channels.difference_update(c.decode() for c in head.pending)
            if not head.future.done():
                head.future.set_exception(reply)
        elif not head.future.done():
            head.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """The connection is unusable: fail what waits and tell the supervisor."""
        if self.error is not None:
            return
        self.error = exc
        while self._expect:
            future = self._expect.popleft().future
            if not future.done():
                future.set_exception(ConnectionError(_reason(exc)))
        self._wake()

    # --- writing ---------------------------------------------------------

    def send(self, commands: Iterable[tuple[bytes, list[str]]]) -> list[asyncio.Future[None]]:
        """Write commands (kind, channels) in one go; each future resolves with its last confirmation.

        ``kind`` b"" is a plain command whose one reply is awaited (CLIENT SETNAME).
        """
        if self.error is not None:
            raise ConnectionError(_reason(self.error))
        loop = asyncio.get_running_loop()
        parts: list[bytes] = []
        futures: list[asyncio.Future[None]] = []
        for kind, args in commands:
            if kind == self.sub:
                self.channels.update(args)
            elif kind == self.unsub:
                self.channels.difference_update(args)
            future: asyncio.Future[None] = loop.create_future()
            future.add_done_callback(_retrieve)  # a waiter that gave up must not leave a warning
            futures.append(future)
            if kind:
                self._expect.append(_Expect(kind, (a.encode() for a in args), future))
                parts.extend(self.conn.pack_command(kind, *args))
            else:
                self._expect.append(_Expect(b"", (), future))
                parts.extend(self.conn.pack_command(*args))
        self._writer.write(b"".join(parts))
        return futures

    async def close(self) -> None:
        """Drop the connection at once (a silent peer would hold a graceful close)."""
        self.fail(ConnectionError("closed"))
        await cancel_and_wait(self._task)
        self._writer.transport.abort()
        with contextlib.suppress(Exception):
            await self.conn.disconnect(nowait=True)


def _commands(kind: bytes, channels: Iterable[str], by_slot: bool) -> list[tuple[bytes, list[str]]]:
    """(kind, channels) commands of at most :data:`BATCH_LIMIT` channels; one slot each when ``by_slot``
    (a cluster refuses a sharded command whose channels hash to several slots)."""
    groups: dict[int, list[str]] = {}
    for channel in channels:
        groups.setdefault(key_slot(channel.encode()) if by_slot else 0, []).append(channel)
    return [(kind, group[i : i + BATCH_LIMIT]) for group in groups.values() for i in range(0, len(group), BATCH_LIMIT)]


class RedisPubSub:
    """This node's Redis subscriptions; see the module docstring for the model.

    ``redis`` is the engine's client (``Redis`` or ``RedisCluster``). With
    ``sharded`` the listener uses SSUBSCRIBE (sharded pub/sub, Redis 7), one
    connection per cluster primary; otherwise SUBSCRIBE on one connection.
    ``on_message(channel, data)`` is called once per message, synchronously, in
    the order Redis sent them; it must not block. ``on_reconnect()`` is called
    after every reconnection, once every channel is subscribed again. ``name``
    (the engine's prefix, say) names the connections in CLIENT LIST and the
    probe channel.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        sharded: bool,
        on_message: Callable[[str, bytes], None],
        on_reconnect: Callable[[], None],
        name: str = "",
        probe_interval: float = 5.0,
    ) -> None:
        if probe_interval <= 0:
            raise ValueError(f"probe_interval must be > 0, got {probe_interval!r}")
        self._redis = redis
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        self.sharded = sharded
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self.name = "".join(c if c.isalnum() or c in "-_.:" else "_" for c in name) or "rt"
        self.probe_interval = probe_interval
        self._token = secrets.token_hex(6)
        self._probe_counter = itertools.count(1)
        #: Channels this node wants: subscribed on every (re)connection.
        self._wanted: set[str] = set()
        self._links: dict[str, _Link] = {}
        #: Sharded cluster: slot -> the link of its primary.
        self._slot_links: list[_Link] = []
        self._connected = False
        self._closed = False
        #: Whether the cluster client was initialized: later connections refresh its slot table.
        self._cluster_known = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: Channels the server unsubscribed on its own (slot migration), to subscribe at their new home.
        self._moved: set[str] = set()
        self._topology_changed = ""
        self._probes: set[asyncio.Task[None]] = set()
        # The batch being gathered: what to (un)subscribe and who waits for it.
        self._to_subscribe: set[str] = set()
        self._to_unsubscribe: set[str] = set()
        self._batch: asyncio.Future[None] | None = None
        self._batches: set[asyncio.Future[list[BaseException | None]]] = set()
        #: For metrics: reconnections after a loss, and probes not back within the interval.
        self.reconnects = 0
        self.probe_failures = 0

    # --- public interface ----------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected, every channel subscribed, and no liveness probe overdue."""
        if not self._connected or self._moved or self._topology_changed:
            return False
        now = time.monotonic()
        return all(
            link.error is None and (not link.probe_sent or now - link.probe_sent < self.probe_interval)
            for link in self._links.values()
        )

    @property
    def channels(self) -> frozenset[str]:
        """The channels this node wants (subscribed whenever connected)."""
        return frozenset(self._wanted)

    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="redis-pubsub supervisor")

    async def close(self) -> None:
        """Stop, and close every pub/sub connection; idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        await self._teardown()

    async def subscribe(self, *channels: str) -> None:
        """Subscribe to ``channels``; returns once Redis confirmed every one.

        Calls made while the loop runs other tasks join one batch: one
        (S)SUBSCRIBE per 512 channels (per slot in a cluster). Raises
        :class:`~.errors.EngineUnavailable` while Redis cannot be reached
        (the channels are not kept then). Channels given before :meth:`start`
        are subscribed with the first connection and the call returns at once.
        """
        if self._closed:
            raise _unavailable("the Redis listener is closed")
        new = [c for c in dict.fromkeys(channels) if c not in self._wanted]
        self._wanted.update(new)
        if self._task is None:
            return
        if not self._connected:
            self._wanted.difference_update(new)
            raise _unavailable()
        self._to_subscribe.update(channels)
        self._to_unsubscribe.difference_update(channels)
        try:
            await asyncio.shield(self._schedule())
        except BaseException as exc:
            self._drop(new)
            if isinstance(exc, (EngineUnavailable, asyncio.CancelledError)):
                raise
            raise _unavailable(f"Redis did not confirm the subscription: {_reason(exc)}") from None

    async def unsubscribe(self, *channels: str) -> None:
        """Stop receiving ``channels``; returns once Redis confirmed (at once when disconnected)."""
        self._wanted.difference_update(channels)
        self._to_subscribe.difference_update(channels)
        if not self._connected:
            return
        self._to_unsubscribe.update(channels)
        with contextlib.suppress(EngineUnavailable, ConnectionError, hiredis.ReplyError):
            await asyncio.shield(self._schedule())

    # --- batching ----------------------------------------------------------

    def _schedule(self) -> asyncio.Future[None]:
        """The future of the batch being gathered; it is sent once the loop gets to it."""
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._batch = loop.create_future()
            self._batch.add_done_callback(_retrieve)
            loop.call_soon(self._flush)
        return self._batch

    def _drop(self, channels: list[str]) -> None:
        """Forget channels whose subscription failed or was abandoned, unsubscribing if sent."""
        self._wanted.difference_update(channels)
        if self._connected and any(c in link.channels for link in self._links.values() for c in channels):
            self._to_unsubscribe.update(channels)
            self._schedule()

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None or batch.done():
            return
        subscribe, self._to_subscribe = self._to_subscribe, set()
        unsubscribe, self._to_unsubscribe = self._to_unsubscribe, set()
        if not self._connected:
            batch.set_exception(_unavailable())
            return
        wanted = self._wanted
        sends: dict[_Link, list[tuple[bytes, list[str]]]] = {}
        for link in self._links.values():
            gone = [c for c in unsubscribe if c in link.channels and c not in wanted]
            if gone:
                sends.setdefault(link, []).extend(_commands(link.unsub, gone, self._by_slot))
        per_link: dict[_Link, list[str]] = {}
        for channel in subscribe:
            if channel in wanted:
                link = self._link_for(channel)
                if channel not in link.channels:
                    per_link.setdefault(link, []).append(channel)
        for link, chans in per_link.items():
            sends.setdefault(link, []).extend(_commands(link.sub, chans, self._by_slot))
        futures: list[asyncio.Future[None]] = []
        try:
            for link, commands in sends.items():
                futures.extend(link.send(commands))
        except ConnectionError as exc:
            batch.set_exception(_unavailable(f"Redis connection lost: {_reason(exc)}"))
            return
        if not futures:
            batch.set_result(None)
            return
        gathered = asyncio.gather(*futures, return_exceptions=True)
        self._batches.add(gathered)
        gathered.add_done_callback(lambda g: self._batch_done(g, batch))

    def _batch_done(self, gathered: asyncio.Future[list[BaseException | None]], batch: asyncio.Future[None]) -> None:
        self._batches.discard(gathered)
        if batch.done():
            return
        if gathered.cancelled():
            batch.set_exception(_unavailable())
            return
        errors = [r for r in gathered.result() if isinstance(r, BaseException)]
        if not errors:
            batch.set_result(None)
            return
        first = errors[0]
        if isinstance(first, hiredis.ReplyError) and str(first).startswith(_TOPOLOGY_ERRORS):
            self._topology("a subscription was refused: " + _reason(first))
        batch.set_exception(_unavailable(f"Redis refused the subscription: {_reason(first)}"))

    # --- topology ----------------------------------------------------------

    @property
    def _by_slot(self) -> bool:
        return self.sharded and self._cluster is not None

    def _link_for(self, channel: str) -> _Link:
        if self._slot_links:
            return self._slot_links[key_slot(channel.encode())]
        return next(iter(self._links.values()))

    def _targets(self) -> list[tuple[str, str, type[AbstractConnection], dict[str, Any]]]:
        """(key, address, connection class, its arguments) of each server to listen to."""
        if self._cluster is None:
            assert isinstance(self._redis, Redis)
            pool = self._redis.connection_pool
            kwargs = dict(pool.connection_kwargs)
            return [("", _describe(pool, kwargs), pool.connection_class, kwargs)]
        nodes: list[ClusterNode]
        if self.sharded:
            nodes = self._cluster.get_primaries()
        else:
            nodes = [self._cluster.get_default_node() or self._cluster.get_primaries()[0]]
        return [(n.name, n.name, n.connection_class, dict(n.connection_kwargs)) for n in nodes]

    def _map_slots(self) -> list[_Link]:
        """Slot -> link from the cluster client's slot table; the probe channel of each link.

        Returns the links given a new probe channel, which they must subscribe.
        """
        assert self._cluster is not None
        manager = self._cluster.nodes_manager
        slot_links: list[_Link] = []
        for slot in range(REDIS_CLUSTER_HASH_SLOTS):
            link = self._links.get(manager.get_node_from_slot(slot).name)
            if link is None:
                raise _LinkDown("the cluster's primaries changed")
            slot_links.append(link)
        self._slot_links = slot_links
        # A link keeps its probe channel while its slot stays on the link: it is subscribed
        # there already, and probes out on it still come back.
        unset: set[str] = set()
        for link in self._links.values():
            if link.probe_channel and slot_links[key_slot(link.probe_channel.encode())] is link:
                continue
            if link.probe_channel:
                # Its slot moved away: the server drops it on its own, and a probe out on it is lost.
                link.channels.discard(link.probe_channel)
                link.probe_sent = 0.0
            unset.add(link.key)
        changed = [link for link in self._links.values() if link.key in unset]
        if not unset:
            return changed
        for i in itertools.count():
            # The tag goes first: a hash tag in the name would otherwise decide the slot.
            channel = f"{{p{i}}}{self.name}:probe:{self._token}"
            link = slot_links[key_slot(channel.encode())]
            if link.key in unset:
                link.set_probe_channel(channel)
                unset.discard(link.key)
                if not unset:
                    break
        return changed

    def _address(self) -> str:
        if self._cluster is not None:
            return ", ".join(self._cluster.nodes_manager.startup_nodes) or "the Redis Cluster"
        assert isinstance(self._redis, Redis)
        pool = self._redis.connection_pool
        return _describe(pool, pool.connection_kwargs)

    def _server_unsubscribed(self, link: _Link, channel: str) -> None:
        if channel == link.probe_channel:
            self._topology("the probe channel's slot moved")
        elif channel in self._wanted:
            self._moved.add(channel)
            self._wake.set()

    def _topology(self, why: str) -> None:
        if not self._topology_changed:
            self._topology_changed = why
        self._wake.set()

    # --- the supervisor ----------------------------------------------------

    async def _run(self) -> None:
        delays = backoff(MIN_DELAY, MAX_DELAY)
        failures = 0
        down_since = 0.0
        connected_before = False
        while True:
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._teardown()
                if failures == 0:
                    down_since = time.monotonic()
                    log.warning("cannot reach Redis at %s (%s): retrying", self._address(), _reason(exc))
                else:
                    log.debug("Redis at %s still unreachable (%s)", self._address(), _reason(exc))
                failures += 1
                await asyncio.sleep(next(delays))
                continue
            channels = len(self._wanted)
            if failures:
                log.info(
                    "Redis pub/sub connected to %s after %d failed attempts in %.1fs; %d channels subscribed",
                    self._address(),
                    failures,
                    time.monotonic() - down_since,
                    channels,
                )
            else:
                log.info("Redis pub/sub connected to %s; %d channels subscribed", self._address(), channels)
            failures = 0
            delays = backoff(MIN_DELAY, MAX_DELAY)
            if connected_before:
                self.reconnects += 1
                self._notify_reconnect()
            connected_before = True
            try:
                await self._watch()
            except _LinkDown as exc:
                log.warning("Redis pub/sub: %s: reconnecting", exc)
            finally:
                await self._teardown()

    async def _connect(self) -> None:
        """Open every link, subscribe every wanted channel and see a probe come back on each."""
        self._topology_changed = ""
        self._moved.clear()
        self._wake.clear()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if self._cluster is not None:
                if self._cluster_known:  # after a failover or a resharding: ask again
                    await self._cluster.nodes_manager.initialize()
                await self._cluster.initialize()
                self._cluster_known = True
            targets = self._targets()
            links = await asyncio.gather(*(self._open(*target) for target in targets), return_exceptions=True)
            for result in links:
                if isinstance(result, _Link):
                    self._links[result.key] = result
            for result in links:
                if isinstance(result, BaseException):
                    raise result
            if self._by_slot:
                self._map_slots()
            else:
                self._slot_links = []
                for link in self._links.values():
                    link.set_probe_channel(f"{self.name}:probe:{self._token}")
        wanted = list(self._wanted)
        futures: list[asyncio.Future[None]] = []
        per_link: dict[_Link, list[str]] = {link: [link.probe_channel] for link in self._links.values()}
        for channel in wanted:
            per_link[self._link_for(channel)].append(channel)
        for link, chans in per_link.items():
            futures.extend(link.send([(b"", ["CLIENT", "SETNAME", f"{self.name}:pubsub"])]))
            futures.extend(link.send(_commands(link.sub, chans, self._by_slot)))
        async with asyncio.timeout(CONNECT_TIMEOUT + len(wanted) / RESUBSCRIBE_RATE):
            await asyncio.gather(*futures)
            await self._publish_probes(self._arm_probes())
            while True:
                self._wake.clear()
                self._check_links()
                if all(link.probe_sent == 0.0 for link in self._links.values()):
                    break
                await self._wake.wait()
        for link in self._links.values():
            link.reads_checked = link.reads
        self._connected = True
        self._reconcile()

    async def _open(self, key: str, address: str, cls: type[AbstractConnection], kwargs: dict[str, Any]) -> _Link:
        # RESP2: messages come as plain arrays. One attempt per call: the supervisor retries.
        conn = cls(**{**kwargs, "protocol": 2, "retry": Retry(NoBackoff(), 0)})
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            return _Link(key, address, conn, self.sharded, self._on_message, self._server_unsubscribed, self._wake.set)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise

    async def _watch(self) -> None:
        """While connected: send probes, check them and the links, reroute moved channels.

        Raises :class:`_LinkDown` when the connections must be reopened.
        """
        next_probe = time.monotonic() + self.probe_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_probe - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            self._check_links()
            if self._moved:
                await self._reroute()
            now = time.monotonic()
            for link in self._links.values():
                if link.behind_since and not link.probe_sent:
                    log.info("Redis pub/sub connection to %s caught up", link.address)
                    link.behind_since = 0.0
            if now >= next_probe:
                self._check_probes(now)
                task = asyncio.create_task(self._publish_probes(self._arm_probes()))
                self._probes.add(task)
                task.add_done_callback(self._probes.discard)
                next_probe = now + self.probe_interval

    def _check_links(self) -> None:
        for link in self._links.values():
            if link.error is not None:
                raise _LinkDown(f"the connection to {link.address} was lost ({_reason(link.error)})")
        if self._topology_changed:
            raise _LinkDown(f"the cluster topology changed: {self._topology_changed}")

    def _check_probes(self, now: float) -> None:
        """A probe still out was sent an interval ago: the link is stuck if it read nothing since."""
        for link in self._links.values():
            if link.probe_sent:
                self.probe_failures += 1
                if link.reads == link.reads_checked:
                    raise _LinkDown(
                        f"the connection to {link.address} delivered nothing in "
                        f"{now - link.probe_sent:.1f}s, not even the liveness probe (stuck)"
                    )
                if not link.behind_since:
                    link.behind_since = link.probe_sent
                    log.warning(
                        "Redis pub/sub connection to %s is behind: the probe sent %.1fs ago is not back"
                        " while messages keep coming (this node cannot keep up with what is published)",
                        link.address,
                        now - link.probe_sent,
                    )
            link.reads_checked = link.reads

    def _arm_probes(self) -> list[_Link]:
        """Give each link without a probe out a new one, due from now; links whose probe is
        late keep it (publishing it again), so that its return shows how far behind they were."""
        links = list(self._links.values())
        now = time.monotonic()
        for link in links:
            if not link.probe_sent:
                link.probe_token = b"%d" % next(self._probe_counter)
                link.probe_sent = now
        return links

    async def _publish_probes(self, links: list[_Link]) -> None:
        """Publish each link's probe through the ordinary connections; its reader notes the return.

        A failed publish is tried again (a pooled connection may be stale after
        a restart) until the probe is due; one never published fails its check.
        """
        try:
            async with asyncio.timeout(self.probe_interval):
                await asyncio.gather(*(self._publish_probe(link) for link in links))
        except TimeoutError:
            log.debug("Redis probe not published in %.1fs", self.probe_interval)

    async def _publish_probe(self, link: _Link) -> None:
        publish = self._redis.spublish if self.sharded else self._redis.publish
        while True:
            try:
                await publish(link.probe_channel, link.probe_token)
                return
            except Exception as exc:
                log.debug("Redis probe not published: %s", _reason(exc))
                await asyncio.sleep(PROBE_RETRY)

    async def _reroute(self) -> None:
        """Subscribe channels the server dropped (their slot moved) on their new primary."""
        assert self._cluster is not None
        moved, self._moved = self._moved & self._wanted, set()
        if not moved:
            return
        log.info("%d channels moved to another Redis Cluster node: subscribing them there", len(moved))
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._cluster.nodes_manager.initialize()
                if {n.name for n in self._cluster.get_primaries()} != set(self._links):
                    raise _LinkDown("the cluster's primaries changed")
                per_link: dict[_Link, list[str]] = {link: [link.probe_channel] for link in self._map_slots()}
                futures: list[asyncio.Future[None]] = []
                for channel in moved & self._wanted:  # some may have been unsubscribed meanwhile
                    per_link.setdefault(self._link_for(channel), []).append(channel)
                for link, chans in per_link.items():
                    futures.extend(link.send(_commands(link.sub, chans, True)))
                await asyncio.gather(*futures)
        except _LinkDown:
            raise
        except Exception as exc:
            raise _LinkDown(f"moved channels could not be subscribed again ({_reason(exc)})") from exc
        self._reconcile()
        self._notify_reconnect()

    def _reconcile(self) -> None:
        """Unsubscribe what a link carries but nobody wants any more.

        While a (re)connection or a reroute waits for Redis, ``unsubscribe`` only
        drops the channel from ``_wanted``, and the subscriptions being sent were
        taken before: without this the node would receive those channels for good.
        """
        extra = [
            channel
            for link in self._links.values()
            for channel in link.channels
            # A channel whose slot left the link is dropped by the server itself.
            if channel not in self._wanted and channel != link.probe_channel and self._link_for(channel) is link
        ]
        if extra:
            self._to_unsubscribe.update(extra)
            self._schedule()

    def _notify_reconnect(self) -> None:
        try:
            self._on_reconnect()
        except Exception:
            log.exception("the Redis reconnect handler failed")

    async def _teardown(self) -> None:
        self._connected = False
        for task in list(self._probes):
            task.cancel()
        links = list(self._links.values())
        self._links.clear()
        self._slot_links = []
        for link in links:
            await link.close()
        batch, self._batch = self._batch, None
        if batch is not None and not batch.done():
            batch.set_exception(_unavailable("Redis connection lost"))
        self._to_subscribe.clear()
        self._to_unsubscribe.clear()


def _describe(pool: Any, kwargs: dict[str, Any]) -> str:
    """Where a pool's connections go, for log lines (no credentials)."""
    service = getattr(pool, "service_name", None)
    if service:
        return f"Sentinel service {service}"
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

"""Presence: who is in a channel, join and leave events, and users' online status.

Channel presence (namespaces with ``presence = true``): a connection is present
in a channel from its subscribe reply until it unsubscribes or disconnects.
With ``join_leave = true`` subscribers get a :class:`Join` when a user's first
device arrives and a :class:`Leave` after their last device went and stayed
away for the namespace's ``presence_grace``: a phone that drops and reconnects
within the window produces neither. A join reaches every subscriber, the
joining connection included (fan-out is shared, never filtered per client).
Anonymous connections (user "") are listed
(user "") and counted (all of them together as one user in ``users``), never
announced.

User status: every authenticated connection is also present under the internal
key ``$status:<user>`` (``$`` cannot start a namespace name, so clients can
neither subscribe to it nor query it). A user is online while any device of
theirs is connected to any node. When the last one goes, the time (ms) is kept
as their last seen (kv ``seen:<user>``); if none comes back within the status
grace (the largest ``presence_grace`` of the "status" namespaces, else
:data:`STATUS_GRACE`), subscribers of ``<ns>:<user>`` in every status
namespace get a :class:`StatusNotice` saying offline; the first device back
brings an online notice. Queries answer "online" during the grace window too,
so they agree with the notices.

Who may ask: presence queries need the channel's subscription or the right to
subscribe (as history does); a status query needs an authenticated connection,
and each user asked about must be the asker or someone whose status channel in
some status namespace the asker may subscribe to. Without a status namespace,
status queries answer BAD_REQUEST, as presence queries in a namespace without
presence do: the hub's configuration decides, so retrying cannot help (the
temporary NOT_AVAILABLE would send clients into retrying forever), and no token
grants it either (PERMISSION_DENIED would say one could).

Multi-node: entries carry a TTL (the ``presence_ttl`` setting); one task per hub
re-adds this node's entries every third of it, one ``presence_add`` per
entry (connection x presence channel, plus one status entry per authenticated
connection), so a crashed node's entries expire. A node that stops during a
grace window announces none of its pending leaves.

The HTTP API calls :meth:`Presence.status`, :meth:`Presence.members` and
:meth:`Presence.stats` (the composition root hands it this feature as its
``PresenceQueries``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from protocol.codes import ErrorCode
from protocol.errors import CommandError
from protocol.limits import MAX_PRESENCE_REPLY
from protocol.messages import (
    Join,
    Leave,
    PresenceMember,
    PresenceQuery,
    PresenceResult,
    PresenceStatsQuery,
    PresenceStatsResult,
    StatusNotice,
    StatusQuery,
    StatusResult,
    Subscribe,
    UserStatus,
)
from realtime.auth import check_subscribe
from realtime.backend.events import json_value
from realtime.engines.presence import PresenceEntry
from realtime.logs import log_failure
from realtime.tasks import cancel_and_wait

from .base import Feature, Handler, HubServices, namespace_of

if TYPE_CHECKING:
    from realtime.connection import Connection
    from realtime.namespaces import Namespace

log = logging.getLogger("realtime.presence")

#: Seconds a user's last device may be gone before they are announced offline,
#: when no "status" namespace is configured.
STATUS_GRACE = 5.0
#: Engine presence key of a user's connections: "$status:<user>".
STATUS_KEY = "$status:"
#: Engine presence key of a channel's subscribers, all under user "" (so the engine's first join and
#: last leave are the channel's first subscriber and last one, across nodes): "$occ:<channel>".
#: Kept only in namespaces where a sink wants channel.occupied or channel.vacated.
OCCUPANCY_KEY = "$occ:"
OCCUPIED, VACATED = "channel.occupied", "channel.vacated"
JOINED, LEFT = "presence.join", "presence.leave"
ONLINE, OFFLINE = "user.online", "user.offline"
#: kv key of a user's last seen time (ms since the Unix epoch, decimal text).
SEEN_KEY = "seen:"
#: The refresh yields to the loop after this many entries (the memory engine never does).
REFRESH_BATCH = 1000


class Presence(Feature):
    """Channel presence and user status; the hub runs one per node."""

    name = "presence"

    def __init__(self, hub: HubServices) -> None:
        self.hub = hub
        #: Engine TTL of presence entries (seconds); the refresh runs every third of it.
        self.ttl = hub.settings.presence_ttl
        self.status_namespaces: tuple[Namespace, ...] = tuple(
            ns for ns in hub.settings.namespaces.values() if ns.kind == "status"
        )
        self.status_grace = max((ns.presence_grace for ns in self.status_namespaces), default=STATUS_GRACE)
        #: This node's entries: presence key -> connection id -> entry (what the refresh re-adds).
        self._local: dict[str, dict[str, PresenceEntry]] = {}
        #: Pending leaves: (presence key, user) -> the task settling it after the grace window.
        self._settles: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._refresher: asyncio.Task[None] | None = None
        #: Every running settle task (the loop keeps only weak references).
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def commands(self) -> Mapping[type, Handler]:
        return {
            PresenceQuery: self.presence_query,
            PresenceStatsQuery: self.presence_stats_query,
            StatusQuery: self.status_query,
        }

    # --- hooks -----------------------------------------------------------

    async def on_connect(self, conn: Connection) -> None:
        if not conn.user:
            return
        try:
            if await self._add(STATUS_KEY + conn.user, conn.id, PresenceEntry(conn.user)):
                self.hub.events.fire(ONLINE, user=conn.user, client=conn.id)
                await self._announce_status(UserStatus(conn.user, True))
        except Exception:
            log_failure(log, "status of a connecting user not recorded")

    async def on_disconnect(self, conn: Connection) -> None:
        if conn.user:
            await self._remove(STATUS_KEY + conn.user, conn.id, conn.user)

    async def on_subscribe(self, conn: Connection, ns: Namespace, cmd: Subscribe, fields: dict[str, Any]) -> None:
        if ns.kind == "status":
            user = cmd.channel.partition(":")[2]
            if not user:
                raise CommandError(ErrorCode.UNKNOWN_CHANNEL, "status channels are <namespace>:<user>")
            fields["status"] = await self._status_of(user)

    async def on_subscribed(self, conn: Connection, ns: Namespace, channel: str) -> None:
        events = self.hub.events
        if events.sinks and (events.wants(OCCUPIED, ns.name) or events.wants(VACATED, ns.name)):
            try:
                if await self._add(OCCUPANCY_KEY + channel, conn.id, PresenceEntry("")):
                    events.fire(OCCUPIED, channel=channel, namespace=ns.name, user=conn.user, client=conn.id)
            except Exception:
                log_failure(log, "occupancy of a channel not recorded")
        if not ns.presence:
            return
        info = conn.channel_info.get(channel, conn.identity.info)
        try:
            joined = await self._add(channel, conn.id, PresenceEntry(conn.user, info))
            if joined and conn.user:
                if events.sinks and events.wants(JOINED, ns.name):
                    data = {"info": json_value(info) if info is not None else None}
                    events.fire(JOINED, channel=channel, namespace=ns.name, user=conn.user, client=conn.id, data=data)
                if ns.join_leave:
                    await self.hub.broadcast(channel, Join(channel, conn.user, info))
        except Exception:  # the subscribe reply is out: nothing to answer with
            log_failure(log, "presence of a subscriber not recorded")

    async def on_unsubscribe(self, conn: Connection, ns: Namespace, channel: str) -> None:
        if OCCUPANCY_KEY + channel in self._local:
            await self._remove(OCCUPANCY_KEY + channel, conn.id, "")
        if ns.presence:
            await self._remove(channel, conn.id, conn.user)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        self._settles.clear()
        if self._refresher is not None:
            tasks.append(self._refresher)
            self._refresher = None
        await cancel_and_wait(*tasks)

    # --- commands --------------------------------------------------------

    async def presence_query(self, conn: Connection, cmd: PresenceQuery) -> PresenceResult:
        self._check_presence(conn, cmd.channel)
        members = await self.members(cmd.channel)
        if len(members) <= MAX_PRESENCE_REPLY:
            return PresenceResult(members)
        # A reply bounded whatever the room's size (never over the client's queue): some members
        # and the flag; presence_stats counts them all.
        return PresenceResult(dict(itertools.islice(members.items(), MAX_PRESENCE_REPLY)), True)

    async def presence_stats_query(self, conn: Connection, cmd: PresenceStatsQuery) -> PresenceStatsResult:
        self._check_presence(conn, cmd.channel)
        return await self.stats(cmd.channel)

    async def status_query(self, conn: Connection, cmd: StatusQuery) -> StatusResult:
        if not conn.user:
            raise CommandError(ErrorCode.PERMISSION_DENIED, "anonymous connections may not ask for status")
        if not self.status_namespaces:
            raise CommandError(ErrorCode.BAD_REQUEST, "no status namespace is configured")
        for user in cmd.users:
            if user != conn.user and not self._may_watch(conn, user):
                raise CommandError(ErrorCode.PERMISSION_DENIED, f"may not see the status of {user}")
        return StatusResult(tuple(await self.status(cmd.users)))

    def _check_presence(self, conn: Connection, channel: str) -> None:
        ns = namespace_of(self.hub, channel)
        if not ns.presence:
            raise CommandError(ErrorCode.BAD_REQUEST, "this namespace keeps no presence")
        if channel not in conn.channels:  # subscribers may ask; others need the right to subscribe
            check_subscribe(conn.identity, channel, ns, None, self.hub.verifier)

    def _may_watch(self, conn: Connection, user: str) -> bool:
        for ns in self.status_namespaces:
            try:
                check_subscribe(conn.identity, f"{ns.name}:{user}", ns, None, self.hub.verifier)
            except CommandError:
                continue
            return True
        return False

    # --- for the HTTP API ------------------------------------------------

    async def status(self, users: Sequence[str]) -> list[UserStatus]:
        """Each user's status, in the order given (two engine reads per distinct user)."""
        distinct = list(dict.fromkeys(users))
        found = dict(zip(distinct, await asyncio.gather(*(self._status_of(u) for u in distinct))))
        return [found[user] for user in users]

    async def members(self, channel: str) -> dict[str, PresenceMember]:
        """Connection id -> member of everyone present in ``channel``."""
        entries = await self.hub.engine.presence(channel)
        return {client: PresenceMember(e.user, e.info) for client, e in entries.items()}

    async def stats(self, channel: str) -> PresenceStatsResult:
        """Connections and distinct users in ``channel``, without listing them."""
        s = await self.hub.engine.presence_stats(channel)
        return PresenceStatsResult(s.clients, s.users)

    # --- status ----------------------------------------------------------

    async def _status_of(self, user: str) -> UserStatus:
        if not user:
            return UserStatus(user, False)
        engine = self.hub.engine
        if (await engine.presence_stats(STATUS_KEY + user)).clients:
            return UserStatus(user, True)
        seen = _ms(await engine.kv_get(SEEN_KEY + user))
        if seen and _now_ms() - seen < self.status_grace * 1000:
            return UserStatus(user, True)  # gone, but may come back within the grace window
        return UserStatus(user, False, seen)

    async def _announce_status(self, status: UserStatus) -> None:
        for ns in self.status_namespaces:
            channel = f"{ns.name}:{status.user}"
            await self.hub.broadcast(channel, StatusNotice(channel, status))

    # --- entries, leaves and the refresh -----------------------------------

    async def _add(self, key: str, client: str, entry: PresenceEntry) -> bool:
        """Record ``client`` under ``key``; True when the user just became present (announce)."""
        self._local.setdefault(key, {})[client] = entry
        if self._refresher is None and not self._closed:
            self._refresher = asyncio.create_task(self._refresh_forever())
        joined = await self.hub.engine.presence_add(key, client, entry, ttl=self.ttl)
        # The user is present: a leave pending here would settle to nothing.
        pending = self._settles.pop((key, entry.user), None)
        if pending is not None:
            pending.cancel()
        if self._local.get(key, {}).get(client) is not entry:
            await self._undo_late_add(key, client, entry.user)
        return joined

    async def _remove(self, key: str, client: str, user: str) -> None:
        clients = self._local.get(key)
        if clients is None or clients.pop(client, None) is None:
            return
        if not clients:
            del self._local[key]
        try:
            await self._engine_remove(key, client, user)
        except Exception:  # on Redis the entry expires with its TTL
            log_failure(log, "presence entry not removed")

    async def _undo_late_add(self, key: str, client: str, user: str) -> None:
        """``client`` went while its add was in flight (a multi-node engine may have run them
        in either order): remove it again so that no entry outlives its connection."""
        await self._engine_remove(key, client, user)

    async def _engine_remove(self, key: str, client: str, user: str) -> None:
        """Remove the entry; when it was the user's last, settle their leave after the grace."""
        engine = self.hub.engine
        events = self.hub.events
        status = key.startswith(STATUS_KEY)
        seen = _now_ms()
        announce: Callable[[], Awaitable[None]] | None = None
        grace = 0.0  # nothing to announce: no reason to wait
        if status:
            wanted = events.wants(OFFLINE)
            if self.status_namespaces or wanted:  # else nobody to tell: queries alone use the grace
                grace = self.status_grace
                announce = partial(self._went_offline, user, seen, client)
        elif key.startswith(OCCUPANCY_KEY):  # the channel's last subscriber left: at once, no grace
            channel = key[len(OCCUPANCY_KEY) :]
            ns = self.hub.namespace(channel)
            if ns is not None and events.wants(VACATED, ns.name):
                announce = partial(self._fire, VACATED, channel, ns.name, "", client)
        else:
            ns = self.hub.namespace(key)
            if ns is not None and user and (ns.join_leave or events.wants(LEFT, ns.name)):
                grace = ns.presence_grace
                announce = partial(self._left, key, ns, user, client)
        leave = await engine.presence_remove(key, client, user, grace=grace)
        if not leave:
            return
        if status:
            await engine.kv_set(SEEN_KEY + user, str(seen).encode())
        previous = self._settles.pop((key, user), None)
        if previous is not None:
            previous.cancel()
        if announce is None or grace <= 0:
            if await engine.presence_settle(key, user, leave) and announce is not None:
                await announce()
        elif not self._closed:
            task = self._settles[(key, user)] = asyncio.create_task(
                self._settle_later(key, user, leave, grace, announce)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fire(self, name: str, channel: str, namespace: str, user: str, client: str) -> None:
        self.hub.events.fire(name, channel=channel, namespace=namespace, user=user, client=client)

    async def _went_offline(self, user: str, seen: int, client: str = "") -> None:
        """A user's last device went and stayed away for the status grace: the event, then the notices."""
        self.hub.events.fire(OFFLINE, user=user, client=client, data={"seen": seen})
        if self.status_namespaces:
            await self._announce_status(UserStatus(user, False, seen))

    async def _left(self, channel: str, ns: Namespace, user: str, client: str = "") -> None:
        """A user left ``channel`` and stayed away for the grace: the event, then the push."""
        self.hub.events.fire(LEFT, channel=channel, namespace=ns.name, user=user, client=client)
        if ns.join_leave:
            await self.hub.broadcast(channel, Leave(channel, user))

    async def _settle_later(
        self, key: str, user: str, leave: int, grace: float, announce: Callable[[], Awaitable[None]]
    ) -> None:
        await asyncio.sleep(grace)
        # From here on a comeback must not cancel us: the leave may be settled already.
        if self._settles.get((key, user)) is asyncio.current_task():
            del self._settles[(key, user)]
        try:
            if await self.hub.engine.presence_settle(key, user, leave):
                await announce()
        except Exception:
            log_failure(log, "leave not settled or not announced")

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.refresh()
                await self.expire()
            except Exception:
                log_failure(log, "presence refresh failed; retrying next period")

    async def refresh(self) -> int:
        """Re-add every entry of this node (one ``presence_add`` each); returns how many."""
        engine = self.hub.engine
        done = 0
        for key, clients in list(self._local.items()):
            for client, entry in list(clients.items()):
                if self._local.get(key, {}).get(client) is not entry:
                    continue  # removed during this pass
                await engine.presence_add(key, client, entry, ttl=self.ttl)
                if self._local.get(key, {}).get(client) is not entry:
                    await self._undo_late_add(key, client, entry.user)
                done += 1
                if done % REFRESH_BATCH == 0:
                    await asyncio.sleep(0)
        return done

    async def expire(self) -> int:
        """Announce the leaves of users whose entries expired (their node died without a word).

        Only channels with subscribers here need the news, so this node sweeps
        those: presence channels with join/leave, and the status keys of users
        whose status channels are subscribed here. The engine hands each expired
        user to one sweeping node only. Returns how many leaves were announced.
        """
        engine = self.hub.engine
        announced = 0
        for channel in self.hub.local_channels():
            ns = self.hub.namespace(channel)
            if ns is None:
                continue
            if ns.kind == "status":
                user = channel[len(ns.name) + 1 :]
                for gone in await engine.presence_expire(STATUS_KEY + user):
                    seen = _now_ms()
                    await engine.kv_set(SEEN_KEY + gone, str(seen).encode())
                    await self._went_offline(gone, seen)
                    announced += 1
            elif ns.presence and (ns.join_leave or self.hub.events.wants(LEFT, ns.name)):
                for gone in await engine.presence_expire(channel):
                    if gone:
                        await self._left(channel, ns, gone)
                        announced += 1
        return announced


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ms(raw: bytes | None) -> int:
    try:
        return int(raw) if raw else 0
    except ValueError:
        return 0

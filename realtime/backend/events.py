"""The events the hub tells the app's backend about, and the bus they travel on.

An :class:`Event` is one thing that happened (a channel got its first subscriber, a user went
offline, a message was published); :data:`EVENT_NAMES` lists every name. The hub owns one
:class:`EventBus` (``hub.events``): emission points in the hub and its features call
:meth:`EventBus.wants` first, and build and :meth:`EventBus.emit` an event only when some sink
wants it, so an event nobody asked for costs one dict lookup. Sinks (webhooks, the event stream,
the offline push hook) register with :meth:`EventBus.add_sink` and do their I/O in tasks of their
own: ``put`` queues, it never waits.

The JSON body of an event is :meth:`Event.to_dict` (docs/integration.md, the event catalogue);
:meth:`Event.from_dict` reads it back (a Redis Stream entry, a backend's consumer).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from protocol.json_codec import msgpack_to_json

log = logging.getLogger("realtime.events")

EVENT_NAMES: Final = (
    "channel.occupied",
    "channel.vacated",
    "presence.join",
    "presence.leave",
    "user.online",
    "user.offline",
    "message.published",
    "connection.closed",
)
#: A rule's ``on`` entry that selects every event.
ALL: Final = "*"
#: Most (name, namespace) answers :meth:`EventBus.wants` remembers (names and namespaces are few).
WANTS_CACHE: Final = 4096


@dataclass(frozen=True, slots=True)
class Event:
    """One event; its :meth:`to_dict` is what a backend receives."""

    id: str  # unique (uuid4 hex): the dedup key for backends, the same on every retry
    name: str  # one of EVENT_NAMES
    time: int  # ms since the epoch, when it happened
    node: str  # the node that saw it
    channel: str = ""  # for channel events
    namespace: str = ""
    user: str = ""
    client: str = ""  # connection id
    data: dict[str, Any] = field(default_factory=dict)  # event-specific fields, JSON-able
    #: Bytes of the client's payload it carries (a publication's data and info): what bounds a
    #: memory queue besides its count. Not sent.
    size: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The event as a backend receives it: every field, always present."""
        return {
            "id": self.id,
            "name": self.name,
            "time": self.time,
            "node": self.node,
            "channel": self.channel,
            "namespace": self.namespace,
            "user": self.user,
            "client": self.client,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        """The event :meth:`to_dict` wrote (KeyError or TypeError when ``raw`` is not one)."""
        data = raw.get("data") or {}
        if not isinstance(data, dict):
            raise TypeError("an event's data is a map")
        return cls(
            str(raw["id"]),
            str(raw["name"]),
            int(raw["time"]),
            str(raw.get("node", "")),
            str(raw.get("channel", "")),
            str(raw.get("namespace", "")),
            str(raw.get("user", "")),
            str(raw.get("client", "")),
            data,
        )


class Sink(Protocol):
    """Where events go: a webhook endpoint, the event stream, the push hook."""

    def wants(self, name: str, namespace: str) -> bool:
        """Whether events named ``name`` in ``namespace`` ("" for events of no channel) go here."""

    def put(self, event: Event) -> None:
        """Take the event: queue it, never wait, never raise."""


def now_ms() -> int:
    return int(time.time() * 1000)


def json_value(packed: bytes) -> Any:
    """A MessagePack value (``data``, ``info``) as JSON holds it: as a JSON client receives it (binary as
    base64, other map keys as strings; protocol.md, data values)."""
    try:
        return orjson.loads(msgpack_to_json(packed))
    except ValueError:  # not what the hub stores; an event never fails for it
        return None


class EventBus:
    """The hub's events: :meth:`wants`, then :meth:`emit` (or :meth:`fire`, which does both)."""

    def __init__(self, node: str = "") -> None:
        #: The node name every event of this bus carries.
        self.node = node
        self.sinks: list[Sink] = []
        self._wants: dict[tuple[str, str], bool] = {}

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)
        self._wants.clear()

    def remove_sink(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)
        self._wants.clear()

    def wants(self, name: str, namespace: str = "") -> bool:
        """Whether any sink wants events named ``name`` in ``namespace``: check before building one."""
        if not self.sinks:
            return False
        key = (name, namespace)
        wanted = self._wants.get(key)
        if wanted is None:
            wanted = any(sink.wants(name, namespace) for sink in self.sinks)
            if len(self._wants) < WANTS_CACHE:
                self._wants[key] = wanted
        return wanted

    def event(
        self,
        name: str,
        *,
        channel: str = "",
        namespace: str = "",
        user: str = "",
        client: str = "",
        data: dict[str, Any] | None = None,
    ) -> Event:
        """A new event of this node, now, with a fresh id."""
        return Event(uuid.uuid4().hex, name, now_ms(), self.node, channel, namespace, user, client, data or {})

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until the events emitted so far are in every durable
        queue (the sinks with a ``settle``: a webhook endpoint's Redis Stream), so a publish is
        answered only once its event survives this node's death."""
        waits = [settle() for sink in self.sinks if (settle := getattr(sink, "settle", None)) is not None]
        if not waits:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)
        except TimeoutError:  # Redis unreachable: the event stays buffered (bounded), the answer goes
            pass

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every sink that wants it; never blocks, never raises."""
        for sink in self.sinks:
            try:
                if sink.wants(event.name, event.namespace):
                    sink.put(event)
            except Exception:  # a sink's bug must not break the hot path that emitted
                log.exception("event sink %s failed to take %s", type(sink).__name__, event.name)

    def fire(
        self,
        name: str,
        *,
        channel: str = "",
        namespace: str = "",
        user: str = "",
        client: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Build and emit an event when a sink wants it (cheap data only: else check :meth:`wants` first)."""
        if self.wants(name, namespace):
            self.emit(self.event(name, channel=channel, namespace=namespace, user=user, client=client, data=data))


__all__ = ["ALL", "EVENT_NAMES", "Event", "EventBus", "Sink", "json_value", "now_ms"]

"""The decoded values both SDKs return: one shape whichever way they came.

:mod:`realtime.client` (WebSocket) and :mod:`realtime.publisher` (HTTP API)
build these from their wire forms and re-export them, so
``from realtime.client import Message`` and
``from realtime.publisher import Message`` name the same class. Every
opaque value (``data``, user ``info``) is unpacked. Named apart from the wire's
:class:`protocol.messages.Publication` and ``PublishResult``, which hold
MessagePack bytes. Pure values and conversions: no I/O here.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]

from protocol import messages as m
from protocol.messages import StreamPosition, UserStatus

__all__ = [
    "HistoryPage",
    "Message",
    "PresenceMember",
    "PresenceStats",
    "Sender",
    "Sent",
    "StreamPosition",
    "UserStatus",
    "message_of",
    "new_publish_id",
    "unpack",
    "unpack_info",
]

log = logging.getLogger("realtime.client")


@dataclass(frozen=True, slots=True)
class Sender:
    """The connection that published: its user ("" when anonymous), its id, and the user's info, unpacked.

    Absent (None) on publications made through the server API.
    """

    user: str
    client: str
    info: Any = None


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a channel: ``data`` is the publisher's value, unpacked.

    ``info`` is the :class:`Sender`, or None when the backend published. In
    chat channels ``mid`` is the message id (a ULID, sortable) and ``time`` the
    hub's time of the message in ms since the Unix epoch; elsewhere they are
    ``""`` and 0.
    """

    channel: str
    data: Any
    offset: int
    epoch: str
    info: Sender | None = None
    mid: str = ""
    time: int = 0

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self.offset, self.epoch)


@dataclass(frozen=True, slots=True, eq=False)
class Sent(StreamPosition):
    """What ``publish`` returns: the new publication's position, plus its chat fields.

    It *is* a :class:`StreamPosition` (code written for ``publish() ->
    StreamPosition`` keeps working) and compares and hashes as one: only
    ``offset`` and ``epoch`` count, ``mid`` and ``time`` (chat channels; ``""``
    and 0 elsewhere) are extras.
    """

    mid: str = ""
    time: int = 0

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self.offset, self.epoch)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StreamPosition):
            return self.offset == other.offset and self.epoch == other.epoch
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.offset, self.epoch))  # as StreamPosition's


class HistoryPage(list[Message]):
    """A page of history, oldest first (a list), and ``position``: where the stream stands now.

    Page further with ``history(channel, before=page[0].offset)``.
    """

    __slots__ = ("position",)

    def __init__(self, publications: Iterable[Message], position: StreamPosition) -> None:
        super().__init__(publications)
        self.position = position


@dataclass(frozen=True, slots=True)
class PresenceMember:
    """A connection in a channel: its user ("" when anonymous) and their info, unpacked."""

    user: str
    info: Any = None


@dataclass(frozen=True, slots=True)
class PresenceStats:
    """How many connections, and how many unique users, are in a channel."""

    clients: int
    users: int


def unpack(data: bytes) -> Any:
    """A MessagePack value as the hub relays it (map keys of any type)."""
    return msgpack.unpackb(data, strict_map_key=False)


def unpack_info(data: bytes | None) -> Any:
    """Opaque user info (msgpack) as a value; None when absent or unreadable."""
    if data is None:
        return None
    try:
        return unpack(data)
    except Exception:
        log.warning("user info is not MessagePack, ignored")
        return None


def message_of(pub: m.Publication) -> Message | None:
    """The SDK's message, ``data`` and the sender's info unpacked; None (logged) when ``data`` is not MessagePack."""
    try:
        data = unpack(pub.data)
    except Exception:  # another publisher's bytes: skip them, keep the stream
        log.warning("channel %r offset %d: data is not MessagePack, skipped", pub.channel, pub.offset)
        return None
    sender = None if pub.info is None else Sender(pub.info.user, pub.info.client, unpack_info(pub.info.info))
    return Message(pub.channel, data, pub.offset, pub.epoch, sender, pub.mid, pub.time)


def new_publish_id() -> str:
    """A fresh publish id (the wire's ``key``): 128 random bits, 22 URL-safe characters."""
    return secrets.token_urlsafe(16)

"""The decoded values both SDKs return: one shape whichever way they came.

:mod:`realtime.client` (WebSocket) and :mod:`realtime.publisher` (HTTP API)
build these from their wire forms and re-export them, so
``from realtime.client import Publication`` and
``from realtime.publisher import Publication`` name the same class. Every
opaque value (``data``, user ``info``) is unpacked. Pure values: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from protocol.messages import StreamPosition, UserStatus

__all__ = [
    "HistoryPage",
    "PresenceMember",
    "PresenceStats",
    "Publication",
    "PublishResult",
    "Sender",
    "StreamPosition",
    "UserStatus",
]


@dataclass(frozen=True, slots=True)
class Sender:
    """The connection that published: its user ("" when anonymous), its id, and the user's info, unpacked.

    Absent (None) on publications made through the server API.
    """

    user: str
    client: str
    info: Any = None


@dataclass(frozen=True, slots=True)
class Publication:
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
class PublishResult(StreamPosition):
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


class HistoryPage(list[Publication]):
    """A page of history, oldest first (a list), and ``position``: where the stream stands now.

    Page further with ``history(channel, before=page[0].offset)``.
    """

    __slots__ = ("position",)

    def __init__(self, publications: Iterable[Publication], position: StreamPosition) -> None:
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

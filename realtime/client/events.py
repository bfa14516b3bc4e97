"""The channel events a subscription made with ``events=True`` yields (``async for event in sub.events()``).

Named apart from the wire's pushes of :mod:`protocol.messages` (``Join``,
``Leave``, ``TypingNotice``...): these carry decoded values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from .values import UserStatus

__all__ = ["Event", "Joined", "Left", "ReadReceipt", "StateChanged", "StatusChanged", "TypingChanged"]


@dataclass(frozen=True, slots=True)
class Joined:
    """``user`` came into ``channel`` (their first device); ``info`` is their info, unpacked."""

    channel: str
    user: str
    info: Any = None


@dataclass(frozen=True, slots=True)
class Left:
    """``user`` left ``channel`` (their last device, after the presence grace window)."""

    channel: str
    user: str


@dataclass(frozen=True, slots=True)
class TypingChanged:
    """``user`` is typing in ``channel`` (or stopped); ``typing=True`` lapses after ``timeout`` s."""

    channel: str
    user: str
    typing: bool
    timeout: float


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    """``user`` has read ``channel`` up to ``offset``."""

    channel: str
    user: str
    offset: int


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The user of status channel ``channel`` came online or went offline (``sub.status`` too)."""

    channel: str
    status: UserStatus


@dataclass(frozen=True, slots=True)
class StateChanged:
    """Key ``key`` of live channel ``channel`` is now ``value`` (None: deleted), set at ``version``.

    ``sub.state`` already holds the new value when the event comes out.
    """

    channel: str
    key: str
    value: Any
    version: int


Event: TypeAlias = Joined | Left | TypingChanged | ReadReceipt | StatusChanged | StateChanged

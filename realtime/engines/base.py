"""The engine: everything hub nodes share, as one object playing every role.

Each role is an interface of its own, with its value types: :class:`Broker`
(``broker.py``: publications, history, events, control), :class:`PresenceStore`
(``presence.py``), :class:`KeyValueStore` (``kv.py``), :class:`ReceiptStore`
(``receipts.py``) and :class:`StateStore` (``state.py``, live state). Code
that uses one role can be typed against it. The memory engine serves one
process; the Redis engine (same interfaces, same contract tests) serves many.
Engines raise only :mod:`.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .broker import Broker, HistoryOptions, HistorySlice, Idempotency, PublicationHandler, Published
from .errors import EngineError, EngineUnavailable, VersionConflict
from .kv import KeyValueStore
from .presence import PresenceCounts, PresenceEntry, PresenceStore
from .receipts import ReceiptStore
from .state import StateStore

__all__ = [
    "Broker",
    "Engine",
    "EngineError",
    "EngineStats",
    "EngineUnavailable",
    "HistoryOptions",
    "HistorySlice",
    "Idempotency",
    "KeyValueStore",
    "PresenceCounts",
    "PresenceEntry",
    "PresenceStore",
    "PublicationHandler",
    "Published",
    "ReceiptStore",
    "StateStore",
    "VersionConflict",
]


@dataclass(slots=True)
class EngineStats:
    """Counters an operator may want; engines fill what they know."""

    channels: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Engine(Broker, PresenceStore, KeyValueStore, ReceiptStore, StateStore):
    """Every role at once: what a hub node is given (memory or Redis)."""

"""Errors engines raise; the only ones they raise on purpose.

Engines know nothing of clients: the WebSocket command path
(:meth:`realtime.connection.Connection.execute`) and the HTTP API
(:func:`realtime.api.refusal`) turn these into client errors, each in one place.
"""

from __future__ import annotations

from protocol.errors import RealtimeError
from protocol.messages import StateEntry


class EngineError(RealtimeError):
    """Root of the engines' errors."""


class EngineUnavailable(EngineError):
    """The engine cannot serve now (Redis unreachable, loading, failing over): temporary, retry."""


class VersionConflict(EngineError):
    """A conditional state update found another version than expected."""

    def __init__(self, current: StateEntry) -> None:
        super().__init__(f"version is {current.version}")
        self.current = current

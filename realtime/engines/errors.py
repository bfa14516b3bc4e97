"""Errors engines raise; the only ones they raise on purpose.

Engines know nothing of clients: the WebSocket command path
(:meth:`realtime.connection.Connection.execute`) and the HTTP API
(:func:`realtime.api.refusal`) turn these into client errors, each in one place.
"""

from __future__ import annotations

from protocol.codes import ErrorCode
from protocol.errors import RealtimeError
from protocol.messages import StateEntry


class EngineError(RealtimeError):
    """Root of the engines' errors."""


class EngineUnavailable(EngineError):
    """The engine cannot serve now (Redis unreachable, loading, failing over): temporary, retry."""


class OutcomeUnknown(EngineUnavailable):
    """A write may or may not have happened: the engine lost its answer (the connection dropped
    after the command was sent, a timeout) and could not find out in time. Temporary: repeat it
    with the same idempotency key, which makes the repeat safe."""


class VersionConflict(EngineError):
    """A conditional state update found another version than expected."""

    def __init__(self, current: StateEntry) -> None:
        super().__init__(f"version is {current.version}")
        self.current = current


def outage_code(exc: EngineUnavailable) -> ErrorCode:
    """The client error code of an engine outage: OUTCOME_UNKNOWN when the write may have
    happened, NOT_AVAILABLE when it certainly did not (both temporary)."""
    return ErrorCode.OUTCOME_UNKNOWN if isinstance(exc, OutcomeUnknown) else ErrorCode.NOT_AVAILABLE

"""Errors engines raise; the only ones they raise on purpose.

Engines know nothing of clients: the WebSocket command path
(:meth:`realtime.connection.Connection.execute`) and the HTTP API
(:func:`realtime.api.refusal`) turn these into client errors, each in one
place, both with :func:`client_error`. (The live-data feature answers a
:class:`VersionConflict` itself, with the key's version in the message.)
"""

from __future__ import annotations

from protocol.codes import ErrorCode
from protocol.errors import CommandError, RealtimeError
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


def client_error(exc: EngineError) -> CommandError:
    """What a client is told of an engine error: NOT_AVAILABLE (temporary) for an outage,
    CONFLICT for a version conflict, INTERNAL for anything else."""
    if isinstance(exc, EngineUnavailable):
        return CommandError(ErrorCode.NOT_AVAILABLE, str(exc))
    if isinstance(exc, VersionConflict):
        return CommandError(ErrorCode.CONFLICT, str(exc))
    return CommandError(ErrorCode.INTERNAL)

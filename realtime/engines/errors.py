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


class OutcomeUnknown(EngineUnavailable):
    """A write may or may not have happened: the engine lost its answer (the connection dropped
    after the command was sent, a timeout) and could not find out in time. Temporary: repeat it
    with the same idempotency key, which makes the repeat safe."""


class VersionConflict(EngineError):
    """A conditional state update found another version than expected."""

    def __init__(self, current: StateEntry) -> None:
        super().__init__(f"version is {current.version}")
        self.current = current


class StateLimitExceeded(EngineError):
    """A state write would leave a channel over its key count or byte size (``what``: "keys" or "bytes")."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"the channel's state would hold more than {limit} {what}")
        self.what = what
        self.limit = limit


def client_error(exc: EngineError) -> CommandError:
    """What a client is told of an engine error: OUTCOME_UNKNOWN when a write may have
    happened and NOT_AVAILABLE when it certainly did not (both temporary), CONFLICT for a
    version conflict, LIMIT_EXCEEDED for a state write over a limit, INTERNAL for anything else."""
    if isinstance(exc, OutcomeUnknown):
        return CommandError(ErrorCode.OUTCOME_UNKNOWN, str(exc))
    if isinstance(exc, EngineUnavailable):
        return CommandError(ErrorCode.NOT_AVAILABLE, str(exc))
    if isinstance(exc, VersionConflict):
        return CommandError(ErrorCode.CONFLICT, str(exc))
    if isinstance(exc, StateLimitExceeded):
        return CommandError(ErrorCode.LIMIT_EXCEEDED, str(exc))
    return CommandError(ErrorCode.INTERNAL)

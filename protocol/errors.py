"""Exceptions of the protocol layer and of the hub's command handling.

One root, :class:`RealtimeError`. :class:`ProtocolError` means the peer sent
something that is not protocol v1 (garbage in); :class:`CommandError` means a
well-formed command was refused; :class:`DisconnectError` ends a connection.
Misuse of our own API raises ordinary ``TypeError``/``ValueError``/``RuntimeError``.
"""

from __future__ import annotations

import math

from .codes import CLOSE_REASONS, CloseCode, ErrorCode, should_reconnect
from .messages import Disconnect, Error


class RealtimeError(Exception):
    """Root of every error the product raises on purpose."""


class CommandError(RealtimeError):
    """A command was refused; becomes an :class:`Error` reply with ``code``.

    ``retry_after``: seconds the client should wait before retrying (0: no advice).
    """

    def __init__(self, code: ErrorCode, message: str = "", *, retry_after: float = 0.0) -> None:
        super().__init__(message or code.name.lower().replace("_", " "))
        self.code = code
        self.retry_after = retry_after

    @property
    def message(self) -> str:
        return str(self)

    def to_error(self) -> Error:
        return Error(int(self.code), self.message, retry_after_ms(self.retry_after))


def retry_after_ms(seconds: float) -> int:
    """The wire's ``retry_after``: whole milliseconds, rounded up (advice of any wait is at least 1)."""
    if seconds <= 0:
        return 0
    return max(1, math.ceil(seconds * 1000))


class ProtocolError(CommandError):
    """The peer sent bytes that are not a valid protocol v1 message.

    ``id`` is the command id when it could be read, else 0. Details stay short
    and never echo the peer's payload.
    """

    def __init__(self, message: str, *, id: int = 0, code: ErrorCode = ErrorCode.BAD_REQUEST) -> None:
        super().__init__(code, message)
        self.id = id


class DisconnectError(RealtimeError):
    """The connection must end with close ``code``; the client gets a Disconnect push first.

    ``retry_after`` (seconds) is the advice of a refusal (4008, 4009): the push carries it.
    ``code`` is a plain int only for the codes the app's backend chooses (4000-4999).
    """

    def __init__(self, code: CloseCode | int, reason: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(reason or (CLOSE_REASONS[code] if isinstance(code, CloseCode) else "disconnect"))
        self.code = code
        self.retry_after = retry_after

    @property
    def reason(self) -> str:
        return str(self)

    def to_push(self) -> Disconnect:
        after = None if self.retry_after is None else max(0, math.ceil(self.retry_after * 1000))  # never less
        return Disconnect(int(self.code), self.reason, should_reconnect(self.code), after)

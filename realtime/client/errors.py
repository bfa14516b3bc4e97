"""The errors the client SDK raises; all derive from :class:`ClientError`."""

from __future__ import annotations

from protocol.codes import ErrorCode
from protocol.errors import RealtimeError

__all__ = [
    "ClientError",
    "CodedError",
    "CommandTimeout",
    "ConnectionClosed",
    "ConnectionLost",
    "ReplyError",
    "TokenError",
    "Unsubscribed",
]


class ClientError(RealtimeError):
    """Root of the errors the client SDK raises.

    ``key``: for a failed ``publish``, the publish id it was sent with; publish again with
    it (``key=error.key``) to make sure it is stored once.
    """

    key: str | None = None


class CodedError(RealtimeError):
    """A refusal with an :class:`ErrorCode` ``code`` (a plain int when this SDK does not know it);
    shared by the client's :class:`ReplyError` and the publisher's ``ApiError``."""

    def __init__(self, code: int, message: str) -> None:
        try:
            self.code: ErrorCode | int = ErrorCode(code)
        except ValueError:
            self.code = code
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self)

    @property
    def temporary(self) -> bool:
        """True when the same request may succeed if retried later."""
        return isinstance(self.code, ErrorCode) and self.code.temporary


class ReplyError(ClientError, CodedError):
    """The hub refused a command; ``code`` is an :class:`ErrorCode` (a plain int if unknown).

    ``retry_after``: seconds the hub advises waiting before sending the command again
    (0.0: no advice); it comes with TOO_MANY_REQUESTS.
    """

    def __init__(self, code: int, message: str = "", *, retry_after: float = 0.0) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after
        if not message:  # the code's name, or its number when this SDK does not know it
            name = self.code.name.lower().replace("_", " ") if isinstance(self.code, ErrorCode) else f"error {code}"
            self.args = (name,)


class ConnectionClosed(ClientError):
    """The client stopped for good; every pending and later call raises this.

    ``code`` is the hub's close code (4500-4999: do not reconnect), 1000 after
    :meth:`Client.close`, or 1006 when the first connection could not be made.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionLost(ClientError):
    """The connection dropped while this command waited for its reply.

    The hub may or may not have run it; the client is reconnecting on its own.
    Only writes raise this (``publish`` without a key, ``typing``,
    ``state_set``, ``state_patch``): the other commands are retried.
    """

    def __init__(self, code: int, reason: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(f"connection lost: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason
        #: Seconds the hub advised to wait before reconnecting (4008, 4009), else None.
        self.retry_after = retry_after


class CommandTimeout(ClientError, TimeoutError):
    """No reply (or no connection to send on) within ``command_timeout``."""


class TokenError(ClientError):
    """A subscription's ``get_token`` failed (raised, or returned no str); the app's error is the ``__cause__``.

    :meth:`Client.subscribe` raises it when the first token cannot be had. On a
    resubscribe the client does not raise it: it asks ``get_token`` again with
    backoff, for as long as the connection lives.
    """

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"get_token for {channel!r} failed: {reason}")
        self.channel = channel


class Unsubscribed(ClientError):
    """The hub unsubscribed this client from ``channel`` (an API call of the app's backend).

    Raised by the subscription's iterators once queued items are out; the
    client does not resubscribe the channel. Subscribe again if it should.
    """

    def __init__(self, channel: str, reason: str = "") -> None:
        super().__init__(f"unsubscribed from {channel!r} by the hub: {reason}".rstrip(": "))
        self.channel = channel
        self.reason = reason

"""Numbered error codes (in replies) and close codes (on disconnect).

Error codes answer one command; the connection goes on. Close codes end the
connection and come in two groups, so a client needs no table to decide:

* 4000-4499: the client should reconnect (with backoff and jitter);
* 4500-4999: the client must not reconnect until the cause is fixed
  (a protocol bug in the client, a bad or revoked token).

Standard WebSocket codes keep their meaning: 1000 normal, 1001 going away,
1006 connection lost, 1009 frame over the hub's size limit. A client
reconnects after any code outside 4500-4999.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """The ``code`` of an :class:`protocol.messages.Error` reply."""

    INTERNAL = 100  # temporary: retry later
    UNAUTHORIZED = 101
    UNKNOWN_CHANNEL = 102
    PERMISSION_DENIED = 103
    UNKNOWN_COMMAND = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108  # temporary
    TOKEN_EXPIRED = 109
    TOO_MANY_REQUESTS = 110  # temporary
    UNRECOVERABLE_POSITION = 111
    NOT_SUBSCRIBED = 112
    DUPLICATE_ID = 113
    ALREADY_CONNECTED = 114
    CONFLICT = 115  # the write conflicts with stored state: a stale version, a receipt moving backwards
    OUTCOME_UNKNOWN = 116  # temporary: the publish may or may not have happened; retry with the same id

    @property
    def temporary(self) -> bool:
        """True when the same command may succeed if retried later."""
        return self in _TEMPORARY


_TEMPORARY = frozenset(
    {ErrorCode.INTERNAL, ErrorCode.NOT_AVAILABLE, ErrorCode.TOO_MANY_REQUESTS, ErrorCode.OUTCOME_UNKNOWN}
)


class CloseCode(IntEnum):
    """WebSocket close codes the hub sends, with a matching Disconnect push."""

    # 4000-4499: reconnect.
    SHUTDOWN = 4001  # the node is stopping or restarting
    SLOW = 4002  # the client did not read fast enough; its queue overflowed
    STALE = 4003  # no pong within the ping timeout (rarely seen: the peer is gone)
    INTERNAL = 4004  # unexpected server error
    CONNECT_TIMEOUT = 4005  # no connect command within the connect timeout
    FORCE_RECONNECT = 4006  # the server asked this client to reconnect
    TOKEN_EXPIRED = 4007  # refresh the token, then reconnect
    OVERLOADED = 4008  # this node cannot take the connection now: retry after the advice
    TOO_MANY_CONNECTIONS = 4009  # over a per-user or per-address connection limit: retry after the advice
    TOO_MANY_REQUESTS = 4010  # flooded on with commands refused with TOO_MANY_REQUESTS
    # 4500-4999: do not reconnect.
    BAD_REQUEST = 4500  # protocol violation, e.g. a command before connect
    UNAUTHORIZED = 4501  # bad token
    FORCE_DISCONNECT = 4502  # the server disconnected this client for good

    @property
    def reconnect(self) -> bool:
        return should_reconnect(self)


def should_reconnect(code: int) -> bool:
    """Whether a client should reconnect after the server closed with ``code``."""
    return not 4500 <= code <= 4999


CLOSE_REASONS: dict[CloseCode, str] = {
    CloseCode.SHUTDOWN: "shutdown",
    CloseCode.SLOW: "slow client",
    CloseCode.STALE: "no pong",
    CloseCode.INTERNAL: "internal error",
    CloseCode.CONNECT_TIMEOUT: "connect timeout",
    CloseCode.FORCE_RECONNECT: "force reconnect",
    CloseCode.TOKEN_EXPIRED: "token expired",
    CloseCode.OVERLOADED: "overloaded",
    CloseCode.TOO_MANY_CONNECTIONS: "too many connections",
    CloseCode.TOO_MANY_REQUESTS: "too many requests",
    CloseCode.BAD_REQUEST: "bad request",
    CloseCode.UNAUTHORIZED: "unauthorized",
    CloseCode.FORCE_DISCONNECT: "force disconnect",
}

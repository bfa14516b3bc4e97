"""The audit log: one record per security event, on the logger ``realtime.audit``.

Each event is one function here, called at the point where the hub refuses or ends
something; a new refusal point is wired with one line: ``audit.connection_event("rate_limited",
conn, reason=...)`` for a refusal a connection can repeat (capped per connection), or
``audit.event(name, subject, **details)``. Add the new name to :data:`EVENTS` and to
docs/deploy.md. Records carry their own fields (the
connection, user, remote address or API key they are about, and the event's details),
never a payload or a token; every client-provided string goes through
:func:`realtime.logs.safe`.

Events (``event`` field; docs/deploy.md shows an example line of each):

* ``auth_failed``: a ``connect`` refused: bad, expired or revoked token, or none where
  one is required (``reason``, ``code``).
* ``refresh_refused``: a ``refresh`` refused (``reason``, ``code``).
* ``forbidden``: any other command refused for want of a right: subscribe, publish,
  history, presence, live state... (``command``, ``channel``, ``reason``, ``code``).
* ``audit_suppressed``: the connection's refusals (the three above) passed
  :data:`MAX_PER_CONNECTION`; later ones are not written.
* ``disconnect``: the server closed an authenticated connection with a code of
  :data:`AUDITED_CLOSES` (forced by the API, a revocation, a slow client, a command flood, a 4500-range code).
* ``upgrade_refused``: a WebSocket upgrade refused before any connection exists (an Origin
  not allowed): ``reason``, ``origin``, ``user_agent``.
* ``api_refused``: an HTTP API request refused for its key (none, unknown, or without the
  route's scope): ``method``, ``path``, ``status``, ``reason``.
* ``api_call``: an HTTP API request made with a valid key: ``key`` (its name), ``method``,
  ``path``, ``status``, and the ``user``/``channel`` acted on where the route names one.
* ``revoke``: a revocation through the API (``user``, ``before``).

:func:`configure` points the logger at the ``audit_log`` setting's destination; the hub
server calls it at start.
"""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Callable
from typing import Protocol

from protocol.codes import CloseCode, ErrorCode
from protocol.errors import CommandError, DisconnectError
from protocol.messages import Command, Connect, Publish, Refresh, Subscribe
from protocol.wire import COMMANDS

from .config import AUDIT_MAIN, AUDIT_OFF, ConfigError
from .logs import FIELDS, ApiCaller, JsonFormatter, Subject, current, safe, subject_fields

log = logging.getLogger("realtime.audit")

#: Refusal records (``forbidden``) kept per connection: a client sending forbidden commands
#: in a loop must not fill the disk; past it one ``audit_suppressed`` record says so.
MAX_PER_CONNECTION = 100
#: Error codes that make a refused command an audit event.
REFUSALS = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.PERMISSION_DENIED, ErrorCode.TOKEN_EXPIRED})
#: Close codes of a server-side disconnect that are audited (of authenticated connections:
#: a refused connect is already ``auth_failed``). Shutdown, ping timeouts and token expiry
#: are the hub's routine, in the main log only.
AUDITED_CLOSES = frozenset(
    {
        CloseCode.SLOW,
        CloseCode.FORCE_RECONNECT,
        CloseCode.TOO_MANY_REQUESTS,
        *(code for code in CloseCode if 4500 <= code <= 4999),
    }
)
#: Every event name (docs/deploy.md lists them; a test keeps the two in step).
EVENTS = (
    "auth_failed",
    "refresh_refused",
    "forbidden",
    "audit_suppressed",
    "disconnect",
    "upgrade_refused",
    "connection_limit",
    "api_refused",
    "api_call",
    "revoke",
)
#: The level of every audit record; the audit logger's own level lets it through whatever ``log_level`` is.
LEVEL = logging.INFO

_HANDLER_NAME = "realtime.audit"
_OFF = logging.CRITICAL + 10
_COMMAND_NAMES: dict[object, str] = {
    **{spec.make: name for name, spec in COMMANDS.items()},
    Publish: "publish",
    Subscribe: "subscribe",
}


class Connection(Subject, Protocol):
    """What the audit needs of a connection (``realtime.connection.Connection``)."""

    @property
    def connected(self) -> bool: ...

    #: Refusal records written for it so far (see :data:`MAX_PER_CONNECTION`).
    audit_records: int


def enabled() -> bool:
    """Whether audit records are written (``audit_log`` is not "")."""
    return log.isEnabledFor(LEVEL)


def event(name: str, subject: Subject | None = None, **details: object) -> None:
    """Write one audit record: ``name``, who it is about, and ``details`` (strings are passed
    through :func:`~realtime.logs.safe`; None values are left out)."""
    if not log.isEnabledFor(LEVEL):
        return
    fields: dict[str, object] = {"event": name, **subject_fields(subject)}
    for key, value in details.items():
        if value is None:
            continue
        fields[key] = value if isinstance(value, (bool, int, float)) else safe(value)
    text = " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items() if key != "event")
    log.log(LEVEL, "%s %s", name, text, extra={FIELDS: fields})


def _logfmt(value: object) -> str:
    text = str(value)  # already escaped by safe(): no line breaks, backslashes doubled
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace('"', '\\"') + '"'
    return text


# --- WebSocket connections --------------------------------------------------------------


def refused(conn: Connection, command: Command, error: CommandError | DisconnectError) -> None:
    """A command of ``conn`` was refused with ``error``: an audit record when it is a refusal of
    a right (:data:`REFUSALS`, or a close with 4501): ``auth_failed`` for connect,
    ``refresh_refused`` for refresh, else ``forbidden``. ``Connection.execute`` calls it."""
    if isinstance(error, DisconnectError):
        if error.code not in (CloseCode.UNAUTHORIZED, CloseCode.TOKEN_EXPIRED):
            return
        code, reason = int(error.code), error.reason
    else:
        if error.code not in REFUSALS:
            return
        code, reason = int(error.code), error.message
    if isinstance(command, Connect):
        connection_event("auth_failed", conn, reason=reason, code=code)
    elif isinstance(command, Refresh):
        connection_event("refresh_refused", conn, reason=reason, code=code)
    else:
        name = _COMMAND_NAMES.get(type(command), type(command).__name__)
        forbidden(conn, name, reason, code, getattr(command, "channel", None))


def forbidden(conn: Connection, command: str, reason: str, code: int, channel: str | None = None) -> None:
    """``conn`` was refused ``command`` (on ``channel``) for want of a right."""
    connection_event("forbidden", conn, command=command, channel=channel, reason=reason, code=code)


def connection_event(name: str, conn: Connection, **details: object) -> None:
    """:func:`event` about ``conn``, for refusals a client can repeat on one connection (a
    connect with an expired token can be sent again, a forbidden subscribe a hundred times a
    frame): at most :data:`MAX_PER_CONNECTION` of them, then one ``audit_suppressed``."""
    if not log.isEnabledFor(LEVEL):
        return
    conn.audit_records += 1
    if conn.audit_records > MAX_PER_CONNECTION:
        if conn.audit_records == MAX_PER_CONNECTION + 1:
            event("audit_suppressed", conn, reason=f"more than {MAX_PER_CONNECTION} refusals on this connection")
        return
    event(name, conn, **details)


def disconnected(conn: Connection, error: DisconnectError) -> None:
    """The server is closing ``conn`` with ``error``: a ``disconnect`` record when it was
    authenticated and the code is in :data:`AUDITED_CLOSES`. ``Connection.close`` calls it."""
    if conn.connected and error.code in AUDITED_CLOSES:
        event("disconnect", conn, code=int(error.code), reason=error.reason)


def upgrade_refused(
    remote: str, reason: str, *, origin: str | None = None, user_agent: str | None = None, host: str | None = None
) -> None:
    """A WebSocket upgrade from ``remote`` was refused before a connection existed."""
    event("upgrade_refused", None, remote=remote, reason=reason, origin=origin, user_agent=user_agent, host=host)


def host_refused(remote: str, method: str, path: str, host: str | None) -> None:
    """An HTTP API request named a Host that ``allowed_hosts`` does not allow (421)."""
    event(
        "api_refused", None, remote=remote, method=method, path=path, status=421, reason="host not allowed", host=host
    )


def connection_limit(remote: str, reason: str, *, user: str | None = None, conn: Connection | None = None) -> None:
    """A WebSocket refused with 4009: its address (at the upgrade) or its user (at ``connect``) is at
    its connection limit. (4008, a node too busy, is load, not a security event: metrics count it.)"""
    event("connection_limit", conn, remote=remote, reason=reason, user=user, code=int(CloseCode.TOO_MANY_CONNECTIONS))


# --- the HTTP API -------------------------------------------------------------------------


def api_refused(caller: ApiCaller, method: str, path: str, status: int, reason: str) -> None:
    """An API request was refused for its key (401: none or unknown; 403: not allowed the route)."""
    event("api_refused", caller, method=method, path=path, status=status, reason=reason)


def api_call(caller: ApiCaller, method: str, path: str, status: int) -> None:
    """An API request authenticated with ``caller.key`` was answered with ``status``."""
    event("api_call", caller, method=method, path=path, status=status, **caller.target)


def key_used(name: str) -> None:
    """The API request being served presented the key named ``name`` (allowed the route or not)."""
    caller = current()
    if isinstance(caller, ApiCaller):
        caller.key = name


def target(**fields: object) -> None:
    """Name what the API request being served acts on (``user``, ``channel``), for its ``api_call`` record."""
    caller = current()
    if isinstance(caller, ApiCaller):
        caller.target.update(fields)


def revoked(user: str, before: float) -> None:
    """The API revoked ``user``'s tokens issued before ``before``; the request's key and remote are in the record."""
    event("revoke", current(), user=user, before=before)


# --- destination ---------------------------------------------------------------------------


def configure(destination: str, node: str) -> Callable[[], None]:
    """Send audit records to ``destination`` (the ``audit_log`` setting): "" nowhere, "-" the
    main log (its handlers and format), else that file, appended to as JSON lines naming
    ``node`` (a ``WatchedFileHandler``: a file moved away by logrotate is reopened).

    One destination per process: a second call replaces the first. Returns the function that
    undoes it (closing the file). Raises :class:`~realtime.config.ConfigError` when the file
    cannot be opened.
    """
    _reset()
    if destination == AUDIT_OFF:
        log.setLevel(_OFF)
        return _reset
    log.setLevel(LEVEL)  # whatever log_level says
    if destination == AUDIT_MAIN:
        return _reset
    try:
        handler = logging.handlers.WatchedFileHandler(destination, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot open audit_log {destination}: {exc.strerror or exc}") from None
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(node))
    log.addHandler(handler)
    log.propagate = False  # a separate log: not in the main stream too

    def close() -> None:
        if handler in log.handlers:
            _reset()

    return close


def _reset() -> None:
    for handler in [h for h in log.handlers if h.get_name() == _HANDLER_NAME]:
        log.removeHandler(handler)
        handler.close()
    log.setLevel(logging.NOTSET)
    log.propagate = True

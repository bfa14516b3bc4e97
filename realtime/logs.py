"""Logging: setup, the two line formats, and the rules every logged value follows.

Modules log to named loggers under ``realtime`` (``logging.getLogger("realtime.server")``);
the command line calls :func:`setup_logging` once, before ``realtime.server.run``. Security
events go to ``realtime.audit`` (:mod:`realtime.audit`), configured by the hub itself.

* **Client strings.** Anything a client (or a token, or a request) chose is logged through
  :func:`safe`: characters that could forge or hide log lines are escaped and the value is
  cut at a length. Both formatters also escape the whole message and cap it, in case a
  value slipped through.
* **Context.** The WebSocket handler binds its connection (an API request its
  :class:`ApiCaller`) to the task that serves it (:func:`bind`), so every record logged there carries the
  connection id, user and remote address without passing them by hand; the JSON format
  writes them as fields (:func:`context_fields`).
* **Formats.** ``text`` (:class:`OneLineFormatter`): ``time level logger: message``, one
  line per record. ``json`` (:class:`JsonFormatter`): one JSON object per line.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TextIO

import orjson
from aiohttp import http_exceptions as bad

from .config import LOG_FORMATS, LOG_LEVELS
from .engines.errors import EngineUnavailable

#: UTC time with milliseconds, level, logger name, message.
FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
#: Longest client-provided value logged, in characters (a channel name, 255 at most, fits);
#: the rest is replaced by a marker saying how much was cut.
MAX_VALUE = 256
#: Longest client name or version logged (the connect command's ``name``/``version``).
CLIENT_NAME_LIMIT = 64
#: Longest message logged, in characters, whatever it holds (tracebacks are not counted).
MAX_MESSAGE = 4096
#: The record attribute holding a record's own fields (audit records), used instead of the context.
FIELDS = "realtime_fields"

_HANDLER_NAME = "realtime.stderr"


# --- escaping -------------------------------------------------------------------------

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    code = ord(char)
    return _ESCAPES.get(char) or (
        f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    )


def escape(text: str, *, backslash: bool = False) -> str:
    """``text`` with every character ``str.isprintable`` refuses written as an escape (``\\n``,
    ``\\x1b``, ``\\u2028``): C0 and C1 controls, DEL, line and paragraph separators, format
    characters (bidi overrides, zero-width characters), surrogates, private-use, unassigned and
    non-ASCII spaces. With ``backslash``, ``\\`` too (``\\\\``), so an escape cannot be faked."""
    if text.isprintable() and not (backslash and "\\" in text):
        return text  # the common case, at C speed
    return "".join(_escape_char(c) if not c.isprintable() or (backslash and c == "\\") else c for c in text)


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text``, then a marker of how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


def safe(value: object, limit: int = MAX_VALUE) -> str:
    """A client-provided value, ready for a log line: at most ``limit`` characters of it (then
    ``...[N more characters]``), with non-printable characters and backslashes escaped
    (:func:`escape`). Non-strings are logged as ``str(value)``."""
    # The marker _clip adds is printable and has no backslash: escaping leaves it as it is.
    return escape(_clip(value if isinstance(value, str) else str(value), limit), backslash=True)


# --- context --------------------------------------------------------------------------


class Subject(Protocol):
    """Who a record is about: a connection (``realtime.connection.Connection``) or an :class:`ApiCaller`."""

    @property
    def id(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def remote(self) -> str: ...


@dataclass(slots=True)
class ApiCaller:
    """An HTTP API request, as records logged while it runs see it."""

    remote: str
    #: The name of the API key it presented, once found; "" until then.
    key: str = ""
    #: Whether the key allows the route (the request is then an ``api_call`` in the audit log).
    authorized: bool = False
    #: What the route acted on (the user of /api/disconnect...), for its audit record.
    target: dict[str, object] = field(default_factory=dict)
    id: str = ""
    user: str = ""


_subject: contextvars.ContextVar[Subject | None] = contextvars.ContextVar("realtime_log_subject", default=None)


def bind(subject: Subject) -> contextvars.Token[Subject | None]:
    """Records logged from now on in this task (and tasks it starts) are about ``subject``;
    hand the token to :func:`unbind` when done."""
    return _subject.set(subject)


def unbind(token: contextvars.Token[Subject | None]) -> None:
    _subject.reset(token)


@contextlib.contextmanager
def bound(subject: Subject) -> Iterator[None]:
    """:func:`bind` for the ``with`` block."""
    token = _subject.set(subject)
    try:
        yield
    finally:
        _subject.reset(token)


def current() -> Subject | None:
    """The subject bound in this context, if any."""
    return _subject.get()


def subject_fields(subject: Subject | None) -> dict[str, object]:
    """The log fields of ``subject``: ``conn``, ``user`` (when not anonymous), ``remote``, ``key``."""
    if subject is None:
        return {}
    fields: dict[str, object] = {}
    if subject.id:
        fields["conn"] = subject.id
    if subject.user:
        fields["user"] = safe(subject.user)
    if subject.remote:
        fields["remote"] = safe(subject.remote)
    key = getattr(subject, "key", "")
    if key:
        fields["key"] = safe(key)
    return fields


def context_fields() -> dict[str, object]:
    """The fields of the subject bound in this context (none outside a connection or API request)."""
    return subject_fields(_subject.get())


def node_name(configured: str) -> str:
    """The node's name in log records: ``configured`` (the ``node_name`` setting), else the host name."""
    return configured or socket.gethostname()


# --- formats --------------------------------------------------------------------------


class OneLineFormatter(logging.Formatter):
    """``time level logger: message``; the message is escaped (:func:`escape`: line breaks and
    other characters that could forge a log line or hide part of one) and capped at
    :data:`MAX_MESSAGE` characters.

    A traceback (``log.exception``) still follows its record on the next lines.
    """

    def __init__(self) -> None:
        super().__init__(FORMAT, DATE_FORMAT)
        self.converter = time.gmtime  # UTC, as the "Z" in FORMAT says

    def formatMessage(self, record: logging.LogRecord) -> str:
        prefix = len(record.name) + 40  # time, level, logger
        return escape(_clip(super().formatMessage(record), MAX_MESSAGE + prefix))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time``, ``level``, ``logger``, ``message``,
    ``node``, then when known ``conn``, ``user``, ``remote`` and ``key`` (from the context,
    :func:`bind`), an audit record's own fields, and ``exc`` (a traceback) or ``stack``.

    The message and every field are escaped like text lines (JSON would keep U+2028, bidi
    overrides and C1 controls as they are) and capped.
    """

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = safe(node)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime(DATE_FORMAT, time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": escape(_clip(record.getMessage(), MAX_MESSAGE)),
            "node": self.node,
        }
        own: Mapping[str, object] | None = getattr(record, FIELDS, None)
        entry.update(context_fields() if own is None else own)
        if record.exc_info:
            entry["exc"] = _multiline(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = _multiline(self.formatStack(record.stack_info))
        return orjson.dumps(entry).decode()


def _multiline(text: str) -> str:
    """A traceback keeps its line breaks (JSON escapes them); each line is escaped."""
    return "\n".join(escape(line) for line in text.split("\n"))


def formatter(fmt: str, node: str) -> logging.Formatter:
    """The formatter of log format ``fmt`` ("text" or "json")."""
    if fmt == "json":
        return JsonFormatter(node)
    if fmt == "text":
        return OneLineFormatter()
    raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(LOG_FORMATS)}")


def setup_logging(level: str, fmt: str = "text", node: str = "", stream: TextIO | None = None) -> None:
    """Log records at ``level`` ("debug", "info", "warning", "error") and above to stderr (or
    ``stream``), in format ``fmt`` ("text" or "json"; JSON records name ``node``, by default the
    host name).

    Calling it again replaces the handler it installed, rather than adding another.
    """
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LOG_LEVELS)}")
    chosen = formatter(fmt, node_name(node))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream)  # None: sys.stderr
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(chosen)
    root.addHandler(handler)
    root.setLevel(level.upper())
    install_http_log_filter()


#: What a malformed request aiohttp refuses before routing was, most specific first: the exception's
#: message is never logged, as it may quote the request (a header line with an API key in it).
_MALFORMED: tuple[tuple[type[Exception], str], ...] = (
    (bad.BadHttpMethod, "a request line with an invalid method"),
    (bad.BadStatusLine, "a malformed request line"),
    (bad.InvalidHeader, "a malformed header line"),
    (bad.LineTooLong, "a request line or header line too long"),
    (bad.InvalidURLError, "an invalid request target"),
    (bad.TransferEncodingError, "a malformed chunked body"),
    (bad.ContentLengthError, "a body shorter than its Content-Length"),
    (bad.ContentEncodingError, "a body that does not decompress"),
    (bad.HttpProcessingError, "a malformed request"),
)


class HttpClientErrors(logging.Filter):
    """On aiohttp's server logger: a client's fault (a malformed request line or header, a client
    that leaves mid-request) becomes one INFO line naming the kind of fault and the peer, instead
    of an ERROR with a traceback whose message quotes the request, header values included."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        args = record.args if isinstance(record.args, tuple) else ()
        peer = args[0] if len(args) == 1 and isinstance(args[0], str) else "-"
        if isinstance(exc, bad.HttpProcessingError):
            what = next(text for kind, text in _MALFORMED if isinstance(exc, kind))
            record.msg, record.args = "http: refused %s from %s (%d)", (what, peer, exc.code)
        elif isinstance(exc, ConnectionError):
            record.msg, record.args = "http: the client %s left mid-request (%s)", (peer, type(exc).__name__)
        else:
            return True
        record.levelno = min(record.levelno, logging.INFO)
        record.levelname = logging.getLevelName(record.levelno)
        record.exc_info = record.exc_text = None
        return True


def install_http_log_filter() -> None:
    """Put :class:`HttpClientErrors` on aiohttp's server logger, once (calling it again does nothing)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, HttpClientErrors) for f in logger.filters):
        logger.addFilter(HttpClientErrors())


def log_failure(logger: logging.Logger, message: str) -> None:
    """Log the exception being handled as a warning: one line for an engine outage
    (:class:`EngineUnavailable`, e.g. Redis unreachable, which would otherwise flood
    the log once per connection), a traceback for anything else."""
    exc = sys.exc_info()[1]
    if isinstance(exc, EngineUnavailable):
        logger.warning("%s: %s", message, exc)
    else:
        logger.warning(message, exc_info=True)

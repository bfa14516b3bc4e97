"""Logging setup: stdlib logging to stderr, one line per record.

Modules log to named loggers under ``realtime`` (``logging.getLogger("realtime.server")``);
the command line calls :func:`setup_logging` once, before ``realtime.server.run``.
"""

from __future__ import annotations

import logging
import sys
import time

from aiohttp import http_exceptions as bad

from .config import LOG_LEVELS
from .engines.errors import EngineUnavailable

#: UTC time with milliseconds, level, logger name, message.
FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"

_HANDLER_NAME = "realtime.stderr"


class OneLineFormatter(logging.Formatter):
    """Escapes line breaks in messages, so that a value logged cannot forge log lines.

    A traceback (``log.exception``) still follows its record on the next lines.
    """

    def __init__(self) -> None:
        super().__init__(FORMAT, DATE_FORMAT)
        self.converter = time.gmtime  # UTC, as the "Z" in FORMAT says

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).replace("\r", "\\r").replace("\n", "\\n")


def setup_logging(level: str) -> None:
    """Log records at ``level`` ("debug", "info", "warning", "error") and above to stderr.

    Calling it again replaces the handler it installed, rather than adding another.
    """
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LOG_LEVELS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler()  # sys.stderr
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(OneLineFormatter())
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

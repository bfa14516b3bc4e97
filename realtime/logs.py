"""Logging setup: stdlib logging to stderr, one line per record.

Modules log to named loggers under ``realtime`` (``logging.getLogger("realtime.server")``);
the command line calls :func:`setup_logging` once, before ``realtime.server.run``.
"""

from __future__ import annotations

import logging
import sys
import time

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


def log_failure(logger: logging.Logger, message: str) -> None:
    """Log the exception being handled as a warning: one line for an engine outage
    (:class:`EngineUnavailable`, e.g. Redis unreachable, which would otherwise flood
    the log once per connection), a traceback for anything else."""
    exc = sys.exc_info()[1]
    if isinstance(exc, EngineUnavailable):
        logger.warning("%s: %s", message, exc)
    else:
        logger.warning(message, exc_info=True)

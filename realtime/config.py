"""Hub settings: one dataclass, read and validated in one place.

Precedence: command-line flags > ``REALTIME_*`` environment variables > one
TOML file > the defaults below.

Call :func:`load_settings` once at startup and hand the :class:`Settings` to
``realtime.server.run``; nothing else reads the environment. Every field has
an environment variable named ``REALTIME_`` + the field name upper-cased
(:func:`env_name`) and a top-level key of the same name in the TOML file; the
file itself is named by ``--config`` or ``REALTIME_CONFIG``. A bad value raises
:class:`ConfigError`, whose message is one line naming the setting and where
it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.errors import RealtimeError

ENV_PREFIX = "REALTIME_"
#: The environment variable naming the TOML file (the ``--config`` flag beats it).
CONFIG_ENV = "REALTIME_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class ConfigError(RealtimeError, ValueError):
    """A setting is malformed or out of range, or the config file is unusable.

    ``str(error)`` is one line meant for the operator, e.g.
    ``invalid setting port=abc (from REALTIME_PORT): expected an integer``.
    """


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the hub can be configured with; build it with :func:`load_settings`.

    Constructing it directly (tests do) skips validation.
    """

    #: Address to listen on ("0.0.0.0" for all IPv4 interfaces).
    host: str = "127.0.0.1"
    #: TCP port to listen on; 0 picks a free port.
    port: int = 8000
    #: Lowest level logged: "debug", "info", "warning" or "error".
    log_level: str = "info"
    #: Redis URL for the Redis engine; None runs the in-memory engine (one process).
    redis: str | None = None
    #: Seconds between server pings; a peer silent for about 1.5x this is dropped.
    ping_interval: float = 25.0
    #: Seconds a new connection has to send its connect command.
    connect_timeout: float = 10.0
    #: Largest WebSocket frame accepted from a client, in bytes.
    max_frame_size: int = 65536
    #: Bytes that may wait for one client before it is disconnected as slow.
    max_queue_bytes: int = 1024 * 1024
    #: Most channels one connection may subscribe to.
    max_subscriptions: int = 128
    #: Allowed values of the Origin header ("*" allows any, "https://*.example.com"
    #: a wildcard); requests without Origin (native apps) are always allowed, and an
    #: empty list allows only the hub's own host.
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)
    #: Seconds over which shutdown spreads its disconnects, against reconnect storms.
    drain_window: float = 5.0
    #: Publications kept per channel for recovery, and for how long (seconds).
    history_size: int = 100
    history_ttl: float = 300.0


def env_name(name: str) -> str:
    """The environment variable of setting ``name``: ``port`` -> ``REALTIME_PORT``."""
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    """The command-line flag of setting ``name``: ``ping_interval`` -> ``--ping-interval``.

    ``allowed_origins`` is ``--allowed-origin``, given once per origin.
    """
    if name == "allowed_origins":
        return "--allowed-origin"
    return "--" + name.replace("_", "-")


def load_settings(
    argv_overrides: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Read, cast and validate the settings from every source; raise :class:`ConfigError`.

    ``argv_overrides`` maps field names to command-line values, as text (cast
    here like environment values) or already typed; ``None`` values count as
    not given. ``env`` defaults to ``os.environ``; only ``REALTIME_*``
    variables named after a field are read, others are ignored. ``config_file``
    is the ``--config`` value; without it ``REALTIME_CONFIG`` names the file,
    and without either no file is read.
    """
    env = os.environ if env is None else env
    given: dict[str, tuple[object, str]] = {}  # field name -> (raw value, source)

    if config_file is not None:
        given.update(_read_config_file(config_file, "--config"))
    elif env.get(CONFIG_ENV):
        given.update(_read_config_file(env[CONFIG_ENV], CONFIG_ENV))

    for name in _CASTS:
        if env_name(name) in env:
            given[name] = (env[env_name(name)], env_name(name))

    for name, value in (argv_overrides or {}).items():
        if name not in _CASTS:
            raise TypeError(f"load_settings() got an unknown setting {name!r}")
        if value is not None:
            given[name] = (value, flag_name(name))

    values: dict[str, Any] = {}
    for name, (raw, source) in given.items():
        try:
            values[name] = _CHECKS.get(name, _any)(_CASTS[name](raw))
        except ValueError as exc:
            raise ConfigError(f"invalid setting {name}={_show(raw)} (from {source}): {exc}") from None
    return Settings(**values)


def _read_config_file(path: str | Path, source: str) -> dict[str, tuple[object, str]]:
    """The file's top-level keys, each with the file's path as its source."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path} (from {source}): {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"invalid config file {path} (from {source}): not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid config file {path} (from {source}): {exc}") from None
    for key in data:
        if key not in _CASTS:
            close = difflib.get_close_matches(key, _CASTS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown setting {key!r} in config file {path}{hint}")
    return {key: (value, str(path)) for key, value in data.items()}


# Casts: text (environment, flags) or TOML values -> the field's type. A
# ValueError's message is the reason shown after the setting and its source.


def _to_int(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise ValueError("expected an integer")


def _to_float(raw: object) -> float:
    value = math.nan
    try:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            value = float(raw.strip())
    except (ValueError, OverflowError):
        pass
    if not math.isfinite(value):
        raise ValueError("expected a number")
    return value


def _to_str(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw.strip()


def _to_optional_str(raw: object) -> str | None:
    """An empty value (``REALTIME_REDIS=``) means unset."""
    return _to_str(raw) or None


def _to_strs(raw: object) -> tuple[str, ...]:
    """A comma-separated string, or a list of them (a repeated flag, a TOML array)."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise ValueError("expected a comma-separated list of strings")
    return tuple(part.strip() for item in items for part in item.split(",") if part.strip())


_CASTERS: dict[object, Callable[[object], object]] = {
    int: _to_int,
    float: _to_float,
    str: _to_str,
    str | None: _to_optional_str,
    tuple[str, ...]: _to_strs,
}
_HINTS = typing.get_type_hints(Settings)
# A KeyError here means a new field has a type without a cast: add one above.
_CASTS = {f.name: _CASTERS[_HINTS[f.name]] for f in dataclasses.fields(Settings)}


# Checks: a cast value -> the value to keep, or ValueError(reason).


def _any(value: Any) -> Any:
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("expected a number > 0")
    return value


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError("expected a number >= 0")
    return value


def _host(value: str) -> str:
    if not value:
        raise ValueError("expected a host name or address")
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number 0..65535")
    return value


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return value.lower()


def _redis(value: str | None) -> str | None:
    if value is not None and not value.lower().startswith(REDIS_SCHEMES):
        raise ValueError(f"expected a URL starting with {', '.join(REDIS_SCHEMES)}")
    return value


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/]+")


def _origins(value: tuple[str, ...]) -> tuple[str, ...]:
    """Origins are compared case-insensitively, so they are kept lower-cased."""
    value = tuple(origin.lower() for origin in value)
    for origin in value:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ValueError(f"expected '*' or scheme://host[:port] (no path), got {origin!r}")
    return value


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "host": _host,
    "port": _port,
    "log_level": _log_level,
    "redis": _redis,
    "ping_interval": _positive,
    "connect_timeout": _positive,
    "max_frame_size": _positive,
    "max_queue_bytes": _positive,
    "max_subscriptions": _positive,
    "allowed_origins": _origins,
    # 0 disconnects every client at once on shutdown (tests and single-client setups).
    "drain_window": _non_negative,
    "history_size": _non_negative,
    "history_ttl": _positive,
}

_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")


def _show(raw: object) -> str:
    """A raw value for an error message: one line, short, with URL passwords masked."""
    text = ",".join(map(str, raw)) if isinstance(raw, (list, tuple)) else str(raw)
    text = _PASSWORD.sub(r"\1***@", text)
    if not text or not text.isprintable() or text != text.strip():
        text = repr(text)
    return text if len(text) <= 80 else text[:77] + "..."

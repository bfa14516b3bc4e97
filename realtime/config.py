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

Two settings come only from the file: ``namespaces`` (``[namespaces.NAME]``
tables) and ``api_keys`` (``[[api_keys]]`` tables). ``REALTIME_API_KEY`` adds
one more API key, named "env", with every scope.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
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

from .auth import ALL_SCOPES, ApiKey, load_public_key, secret_bytes
from .backend.events import ALL as ALL_EVENTS
from .backend.events import EVENT_NAMES
from .backend.options import PushOptions, StreamOptions
from .backend.rules import FORMATS as BACKEND_FORMATS
from .backend.rules import MIN_SECRET as MIN_BACKEND_SECRET_BYTES
from .backend.rules import BackendSettings, RuleError, WebhookRule, check_namespaces, check_rules, webhook_rules
from .hosts import ANY_HOST, LOOPBACK_HOSTS, effective_allowed_hosts, origin_entry_problem
from .hosts import ENTRY as HOST_ENTRY
from .namespaces import OPTIONS as NAMESPACE_OPTIONS
from .namespaces import Namespace, Namespaces, OptionError, default_namespaces
from .tls import TlsError, tls_context

ENV_PREFIX = "REALTIME_"
#: The environment variable naming the TOML file (the ``--config`` flag beats it).
CONFIG_ENV = "REALTIME_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
#: The main log's line formats: "text" (``time level logger: message``) or "json" (one object per line).
LOG_FORMATS = ("text", "json")
#: The ``audit_log`` values that are not a file: off, and into the main log stream.
AUDIT_OFF, AUDIT_MAIN = "", "-"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
#: The environment variable holding one more API key (name "env", all scopes).
API_KEY_ENV = "REALTIME_API_KEY"
#: The TOML table of the namespace for channels without a colon (stored under "").
DEFAULT_NAMESPACE = "default"
#: The demo secret and API key published in quickstart.toml: anyone can use them, so the hub
#: warns at startup when either is in use (a test keeps them in step with the file).
DEMO_TOKEN_SECRET = "quickstart-demo-secret-for-trying-the-hub-only"
DEMO_API_KEY = "quickstart-key"


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
    #: Format of the main log on stderr: "text" (one ``time level logger: message`` line per
    #: record) or "json" (one JSON object per line, with the connection id, user and node).
    log_format: str = "text"
    #: Where security events (``realtime.audit``: auth failures, refusals, revocations, API
    #: calls, server-side disconnects) go: "" nowhere, "-" into the main log on stderr, or a
    #: file path (appended to, JSON lines whatever ``log_format`` says).
    audit_log: str = ""
    #: This node's name in JSON log and audit records; "" uses the host name.
    node_name: str = ""
    #: Redis URL for the Redis engine; None runs the in-memory engine (one process).
    redis: str | None = None
    #: Whether ``redis`` names a node of a Redis Cluster (the others are discovered);
    #: channels then use sharded pub/sub, one subscription connection per primary.
    redis_cluster: bool = False
    #: Start of every Redis key and channel name the hub uses: hubs of different
    #: apps sharing one Redis need different prefixes. No braces or spaces.
    redis_prefix: str = "rt"
    #: Seconds between server pings; a peer silent for about 1.5x this is dropped.
    ping_interval: float = 25.0
    #: Seconds a new connection has to send its connect command.
    connect_timeout: float = 10.0
    #: Largest WebSocket frame accepted from a client, in bytes.
    max_frame_size: int = 65536
    #: Bytes that may wait for one client before it is disconnected as slow.
    max_queue_bytes: int = 1024 * 1024
    #: Most bytes of publications one history reply (a history page, or the publications a
    #: recovering subscribe brings back) may carry, as encoded for the client; at most a
    #: quarter of max_queue_bytes is used, so that one reply never makes an honest client slow.
    history_reply_bytes: int = 256 * 1024
    #: Most channels one connection may subscribe to.
    max_subscriptions: int = 128
    #: Commands per second one connection may send on average (a token bucket refilled at
    #: this rate); over it a command is refused with TOO_MANY_REQUESTS (110) and a
    #: ``retry_after``. 0: no limit.
    command_rate: float = 100.0
    #: Commands one connection may send at once (the bucket's size). A client whose refused
    #: commands exceed this many at once, or ten times command_rate a second, is closed with 4010.
    command_burst: int = 200
    #: Bytes a second one connection may send on average, after receive_burst bytes at once. A
    #: client over it is not refused: the hub waits before reading its next frame (TCP slows the
    #: client). Decoding costs the hub per byte, which the command budget does not see. 0: no limit.
    receive_rate: int = 262144
    receive_burst: int = 2097152
    #: Allowed values of the Origin header ("*" allows any, "https://*.example.com"
    #: a wildcard); requests without Origin (native apps) are always allowed, and an
    #: empty list allows only the hub's own host.
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)
    #: Host header values answered on WebSocket upgrades and API requests (others get 421),
    #: against DNS rebinding: names or addresses without a port ("[::1]" for IPv6),
    #: "*.example.com", or "*" for any. Empty: the loopback names (localhost, 127.0.0.1,
    #: [::1]) when ``host`` is a loopback address, else any Host, with a startup warning.
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    #: Seconds over which shutdown spreads its disconnects, against reconnect storms.
    drain_window: float = 5.0
    #: Seconds a new TCP connection has to send its first complete HTTP request head
    #: (the WebSocket upgrade, or an HTTP API call); slower ones (slowloris) are closed.
    handshake_timeout: float = 10.0
    #: Seconds an HTTP keep-alive connection may wait idle for its next request before
    #: it is closed. WebSocket connections are not affected (they have ping_interval).
    http_idle_timeout: float = 60.0
    #: Seconds an HTTP API request has, from its head, to send its whole body; a slower
    #: body (a stalled or trickling client) is answered 408 and its connection closed.
    http_body_timeout: float = 30.0
    #: Most unauthenticated sockets (plain HTTP connections, and WebSockets whose
    #: connect command has not succeeded yet) from one remote address; over it a new
    #: socket gets a 503 and is closed. 0: no limit (behind a proxy that is one address).
    max_pending_per_address: int = 256
    #: Most unauthenticated sockets on this node, from all addresses; 0: no limit.
    #: Keep it well below the open-file limit (``ulimit -n``).
    max_pending: int = 4096
    #: Listen queue length (connections the kernel holds before the hub accepts
    #: them), for reconnect storms; the kernel caps it at net.core.somaxconn.
    backlog: int = 2048
    #: Most WebSocket connections on this node (connected, or upgraded and connecting); over
    #: it an upgrade is refused with 4008 OVERLOADED and retry advice. 0: no limit.
    max_connections: int = 0
    #: Most WebSocket connections on this node from one client address (an IPv6 address
    #: counts by its /64); over it: 4009 TOO_MANY_CONNECTIONS. 0: no limit (the default:
    #: mobile carriers' NAT put many users behind one address).
    max_connections_per_address: int = 0
    #: Most connections of one user (the token's sub) on this node; over it the connect is
    #: refused with 4009 TOO_MANY_CONNECTIONS. Anonymous connections are not counted. 0: no limit.
    max_connections_per_user: int = 100
    #: WebSocket upgrades this node accepts per second (a token bucket holding one second's
    #: worth); over it an upgrade is refused with 4008 OVERLOADED and advice that spreads
    #: the refused clients over time. 0: no limit.
    max_connects_per_second: float = 0.0
    #: Most WebSocket connections on this node in the middle of connecting (upgraded, their
    #: connect not yet answered); over it an upgrade is refused with 4008 OVERLOADED and advice
    #: that spreads the refused clients over the seconds the node needs to take them: a storm
    #: larger than the node can serve within clients' connect timeouts is shed instead of
    #: timing everyone out. 0: no limit.
    max_connecting: int = 1000
    #: Addresses or networks (CIDR) of the proxies in front of the hub: a connection from one
    #: of them is counted under the client address its X-Forwarded-For names (the rightmost
    #: address that is not a trusted proxy), and is not held to max_pending_per_address.
    #: Empty: X-Forwarded-For is ignored.
    trusted_proxies: tuple[str, ...] = field(default_factory=tuple)
    #: PEM files of the certificate chain and its private key: set both to serve wss:// and
    #: https:// (small deployments without a proxy); SIGHUP loads them again. Neither: plain.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Port of a second listener serving only GET /metrics, without an API key, at
    #: metrics_host: for a scraper on a private network. Unset: no such listener (GET
    #: /metrics on the main port needs an API key with the "metrics" scope); 0 picks a free port.
    metrics_port: int | None = None
    #: Address of the metrics_port listener; keep it off the public network.
    metrics_host: str = "127.0.0.1"
    #: Publications kept per channel for recovery, and for how long (seconds); for
    #: namespaces that do not set their own history_size/history_ttl.
    history_size: int = 100
    history_ttl: float = 300.0
    #: Seconds a publish id (a publish's ``key``) is remembered per channel and sender: a
    #: repeat within it gets the first result and publishes nothing. Chat namespaces use
    #: their own idempotency_window. 0 turns publish ids off (outside chat).
    publish_id_window: float = 300.0
    #: Whether connections without a token are accepted (as user ""). Leave off in
    #: production unless anonymous access is intended.
    allow_anonymous: bool = False
    #: Secret shared with the backend that signs HS256 tokens, at least 32 bytes.
    #: Never shown in repr or error messages.
    token_secret: str | None = field(default=None, repr=False)
    #: Public key for RS256 (RSA, at least 2048 bits) or ES256 (EC P-256; P-384 and
    #: P-521 give ES384/ES512) tokens: PEM text (one-line text with literal "\n" is
    #: accepted) or the path of a PEM file, read at load time and kept here as PEM
    #: text. May be set together with token_secret.
    token_public_key: str | None = None
    #: When set, tokens must name this audience (aud: the string, or a list holding it); when
    #: unset, aud is not checked (identity providers put one in every token).
    token_audience: str | None = None
    #: When set, tokens must name this issuer (iss); when unset, iss is not checked.
    token_issuer: str | None = None
    #: A file where the memory engine keeps revocations (POST /api/revoke) across restarts:
    #: read at start, rewritten (atomically) on each revocation. Unset: they live in memory
    #: only (a startup warning says so when an API key may revoke). Not with ``redis``: Redis
    #: keeps them.
    revocations_file: str | None = None
    #: Seconds after a connection token's exp during which the connection may still
    #: refresh it; after that it is disconnected.
    token_grace: float = 30.0
    #: Seconds a presence entry lives in the engine unless its node refreshes it
    #: (every third of it): how long the users of a node that died without a word
    #: stay present. Shorter costs more engine calls per connection.
    presence_ttl: float = 60.0
    #: Channel namespaces by name; "" holds channels without a colon. Only from the
    #: config file, as [namespaces.NAME] tables ([namespaces.default] for ""); no
    #: environment variable or flag sets them. A file without any gets one default
    #: namespace with default options; with some but no default, channels without a
    #: colon are unknown.
    namespaces: Mapping[str, Namespace] = field(default_factory=default_namespaces)
    #: Serve the demo chat page at GET /demo (and /demo/token, which signs short-lived tokens
    #: with token_secret for any user name, answered only on a loopback hub asked from its own
    #: machine): for trying the hub, never in production.
    demo: bool = False
    #: Keys of the server API: [[api_keys]] tables {name, key, scopes} in the config
    #: file, then one from REALTIME_API_KEY (name "env", all scopes) when it is set.
    api_keys: tuple[ApiKey, ...] = ()
    #: The event stream for backends that pull (Redis engine only): an ``[events]`` table in the
    #: config file (stream, on, namespaces, maxlen, buffer); see docs/integration.md.
    events: StreamOptions = field(default_factory=StreamOptions)
    #: The offline push hook: a ``[push]`` table in the config file (url, interval, batch, delay,
    #: timeout, max_members, queue); namespaces turn it on with ``push = true``.
    push: PushOptions = field(default_factory=PushOptions)
    #: The trigger rules: ``[[webhooks]]`` tables (``url``, ``on``, ``namespaces``, delivery options),
    #: only from the config file; docs/integration.md#webhooks.
    webhooks: tuple[WebhookRule, ...] = ()
    # The app's backend: the [backend] table of the file (``[backend] timeout`` is backend_timeout,
    # REALTIME_BACKEND_TIMEOUT, --backend-timeout), read by the proxies, webhooks and the push hook
    # through :attr:`backend`; the [proxy] table likewise (docs/integration.md).
    #: Secrets signing every request to the backend (realtime.backend.signing), the current
    #: one first; required when any proxy, webhook or push hook is configured. Never shown.
    backend_secrets: tuple[str, ...] = field(default_factory=tuple, repr=False)
    #: Seconds a request to the backend may take (a namespace's proxy_timeout, a webhook's or
    #: the push hook's timeout overrides it).
    backend_timeout: float = 2.0
    #: Request bodies: "json" or "msgpack" (an answer may use either, by its Content-Type).
    backend_format: str = "json"
    #: Consecutive failures (timeouts, refused connections, 5xx) of one endpoint that open its
    #: circuit breaker, and the seconds it then fails fast before one trial call.
    backend_breaker_failures: int = 5
    backend_breaker_cooldown: float = 10.0
    #: URL of the connect proxy: connects without a JWT are authenticated by the backend; "": off.
    proxy_connect: str = ""
    #: URL of the refresh proxy: extends connections the connect proxy let in before they expire.
    proxy_refresh: str = ""
    #: URL of the rpc command's backend; "": rpc is refused (UNKNOWN_COMMAND).
    proxy_rpc: str = ""
    #: Headers of the WebSocket upgrade passed to the connect proxy (e.g. Cookie, Authorization).
    proxy_headers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def backend(self) -> BackendSettings:
        """The ``[backend]`` table as one value, for the parts that talk to the app's backend."""
        return BackendSettings(
            self.backend_secrets,
            self.backend_timeout,
            self.backend_format,
            self.backend_breaker_failures,
            self.backend_breaker_cooldown,
        )


#: List settings whose flag is singular and repeated.
_REPEATED_FLAGS = {"allowed_origins": "--allowed-origin", "allowed_hosts": "--allowed-host"}


def env_name(name: str) -> str:
    """The environment variable of setting ``name``: ``port`` -> ``REALTIME_PORT``."""
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    """The command-line flag of setting ``name``: ``ping_interval`` -> ``--ping-interval``.

    ``allowed_origins`` is ``--allowed-origin`` and ``allowed_hosts`` ``--allowed-host``,
    given once per value.
    """
    if name in _REPEATED_FLAGS:
        return _REPEATED_FLAGS[name]
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
    variables named after a field are read, others are ignored, except
    ``REALTIME_API_KEY``. ``config_file`` is the ``--config`` value; without it
    ``REALTIME_CONFIG`` names the file, and without either no file is read.
    ``namespaces`` and ``api_keys`` come only from the file: setting
    ``REALTIME_NAMESPACES`` or ``REALTIME_API_KEYS`` is a ConfigError, and
    passing them in ``argv_overrides`` a TypeError.
    """
    env = os.environ if env is None else env
    given: dict[str, tuple[object, str]] = {}  # field name -> (raw value, source)

    if config_file is not None:
        given.update(_read_config_file(config_file, "--config"))
    elif env.get(CONFIG_ENV):
        given.update(_read_config_file(env[CONFIG_ENV], CONFIG_ENV))

    for name in _FILE_ONLY:
        if env_name(name) in env:
            raise ConfigError(f"setting {name} cannot come from {env_name(name)}: set it in the config file")
    for name in _CASTS:
        if env_name(name) in env:
            given[name] = (env[env_name(name)], env_name(name))

    for name, value in (argv_overrides or {}).items():
        if name in _FILE_ONLY:
            raise TypeError(f"load_settings() cannot set {name!r}: it comes only from the config file")
        if name not in _CASTS:
            raise TypeError(f"load_settings() got an unknown setting {name!r}")
        if value is not None:
            given[name] = (value, flag_name(name))

    values: dict[str, Any] = {}
    for name, (raw, source) in given.items():
        if name in _FILE_ONLY:
            values[name] = _FILE_ONLY[name](raw, source)
            continue
        try:
            values[name] = _CHECKS.get(name, _any)(_CASTS[name](raw))
        except ValueError as exc:
            shown = "***" if name in _SECRETS else _show(raw)
            raise ConfigError(f"invalid setting {name}={shown} (from {source}): {exc}") from None
    env_key = env.get(API_KEY_ENV, "").strip()
    if env_key:
        values["api_keys"] = _add_env_api_key(values.get("api_keys", ()), env_key)
    if values.get("redis_cluster") and str(values.get("redis") or "").lower().startswith("unix://"):
        source = given["redis_cluster"][1]
        raise ConfigError(
            f"invalid setting redis_cluster=true (from {source}): a Redis Cluster is not reached by a unix:// socket"
        )
    if values.get("revocations_file") and values.get("redis"):
        source = given["revocations_file"][1]
        raise ConfigError(
            f"invalid setting revocations_file (from {source}): it is for the memory engine; Redis keeps revocations"
        )
    _check_tls(values, given)
    if values.get("events", StreamOptions()).stream and not values.get("redis"):
        raise ConfigError(
            f"invalid setting events.stream=true (from {given['events'][1]}): the event stream is a Redis Stream; "
            "set redis (with the memory engine there is nothing for a backend to pull from)"
        )
    _check_backend(values, given)
    settings = Settings(**values)
    try:
        check_rules(settings.webhooks, settings.namespaces)
    except RuleError as exc:
        raise _rules_error(exc, given["webhooks"][1]) from None
    try:  # like the webhook rules': a name not declared would select nothing, silently
        check_namespaces("events.namespaces", settings.events.namespaces, settings.namespaces)
    except RuleError as exc:
        raise _rules_error(exc, given["events"][1]) from None
    return settings


def _check_backend(values: Mapping[str, Any], given: Mapping[str, tuple[object, str]]) -> None:
    """Every request to the app's backend is signed: a proxy, a webhook or the push hook needs
    ``[backend] secrets``. The first one configured is named."""
    if values.get("backend_secrets"):
        return
    namespaces = values.get("namespaces") or {}
    for name in ("proxy_connect", "proxy_refresh", "proxy_rpc"):
        if values.get(name):
            raise _unsigned(name, given[name][1], "proxy requests are signed: backend.secrets is required")
    for ns in namespaces.values():
        for option in ("subscribe_proxy", "publish_proxy"):
            if getattr(ns, option):
                label = f"namespaces.{ns.name or DEFAULT_NAMESPACE}.{option}"
                raise _unsigned(label, given["namespaces"][1], "proxy requests are signed: backend.secrets is required")
    if values.get("webhooks"):
        raise _unsigned("webhooks[0]", given["webhooks"][1], "webhooks are signed: set [backend] secrets")
    push = values.get("push", PushOptions())
    if push.url:
        raise _bad("push.url", push.url, given["push"][1], "push requests are signed: set [backend] secrets")


def _unsigned(label: str, source: str, reason: str) -> ConfigError:
    return ConfigError(f"invalid setting {label} (from {source}): {reason}")


def _check_tls(values: Mapping[str, Any], given: Mapping[str, tuple[object, str]]) -> None:
    """Both TLS files or neither, and a certificate that loads with its key."""
    cert, key = values.get("tls_cert"), values.get("tls_key")
    if cert is None and key is None:
        return
    if cert is None or key is None:
        name = "tls_cert" if cert is not None else "tls_key"
        raise ConfigError(
            f"invalid setting {name}={_show(values[name])} (from {given[name][1]}): set tls_cert and tls_key together"
        )
    try:
        tls_context(cert, key)
    except TlsError as exc:
        raise ConfigError(f"invalid setting tls_cert={_show(cert)} (from {given['tls_cert'][1]}): {exc}") from None


def _read_config_file(path: str | Path, source: str) -> dict[str, tuple[object, str]]:
    """The file's settings, each with its source: the file's path (``proxy.rpc in PATH`` for a key
    of the [backend] and [proxy] tables, whose keys are settings named TABLE_KEY)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path} (from {source}): {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"invalid config file {path} (from {source}): not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid config file {path} (from {source}): {exc}") from None
    # A table's keys are settings too; their source names them as the file spells them.
    sources = {key: str(path) for key in data}
    for table in _TABLES:
        if isinstance(data.get(table), dict):
            del sources[table]
            for key, value in data.pop(table).items():
                name = f"{table}_{key}"
                if name not in _CASTS:
                    hint = _did_you_mean(name, [n for n in _CASTS if n.startswith(table + "_")])
                    raise ConfigError(f"unknown setting '{table}.{key}' in config file {path}{hint}")
                data[name] = value
                sources[name] = f"{table}.{key} in {path}"
    for key in data:
        if key not in _CASTS and key not in _FILE_ONLY:
            hint = _did_you_mean(key, [*_CASTS, *_FILE_ONLY])
            raise ConfigError(f"unknown setting {key!r} in config file {path}{hint}")
    return {key: (value, sources[key]) for key, value in data.items()}


def _did_you_mean(key: str, known: typing.Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


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


def _to_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError("expected true or false")


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _to_optional_int(raw: object) -> int | None:
    """An empty value (``REALTIME_METRICS_PORT=``) means unset."""
    if isinstance(raw, str) and not raw.strip():
        return None
    return _to_int(raw)


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
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    str | None: _to_optional_str,
    float | None: lambda raw: None if isinstance(raw, str) and not raw.strip() else _to_float(raw),
    int | None: _to_optional_int,
    tuple[str, ...]: _to_strs,
}
_HINTS = typing.get_type_hints(Settings)
#: Settings read only from the config file (their parsers are in _FILE_ONLY, below).
_FILE_ONLY_NAMES = ("namespaces", "api_keys", "events", "push", "webhooks")
# A KeyError here means a new field has a type without a cast: add one above.
_CASTS = {f.name: _CASTERS[_HINTS[f.name]] for f in dataclasses.fields(Settings) if f.name not in _FILE_ONLY_NAMES}
#: Settings whose values error messages never show.
_SECRETS = frozenset({"token_secret", "backend_secrets"})
#: Tables of the file whose keys are settings named ``TABLE_KEY`` (``[proxy] connect`` is proxy_connect).
_TABLES = ("backend", "proxy")


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


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """The check of a setting naming one of ``choices``, in any case (kept lower-cased)."""

    def check(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value.lower()

    return check


def _audit_log(value: str) -> str:
    """ "", "-", or a file the hub can append to (checked now, opened when the hub starts)."""
    if value in (AUDIT_OFF, AUDIT_MAIN):
        return value
    path = Path(value)
    if path.is_dir():
        raise ValueError("expected a file path, '-' (the main log) or '' (off); this is a directory")
    if not path.exists() and not path.parent.is_dir():
        raise ValueError(f"no directory {str(path.parent)!r} to create the file in")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise ValueError("the file cannot be written")
    return value


def _node_name(value: str) -> str:
    if not value.isprintable() or len(value) > 255:
        raise ValueError("expected a printable name of at most 255 characters")
    return value


def _redis(value: str | None) -> str | None:
    if value is None:
        return value
    if not value.lower().startswith(REDIS_SCHEMES):
        raise ValueError(f"expected a URL starting with {', '.join(REDIS_SCHEMES)}")
    from redis.asyncio.connection import parse_url  # what the engine will do with it, checked now

    try:
        parse_url(value)
    except ValueError as exc:
        raise ValueError(f"not a valid Redis URL: {exc}") from None
    return value


def _redis_prefix(value: str) -> str:
    if not value or any(c in value for c in "{} ") or not value.isprintable():
        raise ValueError("expected a non-empty name without braces or spaces")
    return value


def _origins(value: tuple[str, ...]) -> tuple[str, ...]:
    """Origins are compared case-insensitively, so they are kept lower-cased."""
    value = tuple(origin.lower() for origin in value)
    for origin in value:
        if (problem := origin_entry_problem(origin)) is not None:
            raise ValueError(problem)
    return value


def _hosts(value: tuple[str, ...]) -> tuple[str, ...]:
    """Host names are compared case-insensitively, so they are kept lower-cased."""
    value = tuple(host.lower() for host in value)
    for host in value:
        if not HOST_ENTRY.fullmatch(host):
            raise ValueError(
                f"expected '*', '*.example.com', a host name or an address ('[::1]'), no port; got {host!r}"
            )
    return value


def _secret(value: str | None) -> str | None:
    if value is not None:
        secret_bytes(value)
    return value


def _networks(value: tuple[str, ...]) -> tuple[str, ...]:
    """IP addresses or CIDR networks, kept in their normal form (``10.0.0.0/8``)."""
    networks = []
    for item in value:
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"expected IP addresses or networks (CIDR), got {item!r}") from None
    return tuple(networks)


def _readable_file(value: str | None) -> str | None:
    if value is not None:
        try:
            with open(value, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read the file: {exc.strerror or exc}") from None
    return value


_PEM_BEGIN = "-----BEGIN"


def _public_key(value: str | None) -> str | None:
    """PEM text, or the path of a PEM file (read now); the key must be usable for tokens."""
    if value is None:
        return None
    text = value
    if _PEM_BEGIN not in text:
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read the file: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError("the file is not PEM text") from None
    elif "\n" not in text and "\\n" in text:  # one line, as some env files need
        text = text.replace("\\n", "\n")
    load_public_key(text)
    return text.strip() + "\n"


def _backend_secrets(value: tuple[str, ...]) -> tuple[str, ...]:
    for secret in value:
        if len(secret.encode()) < MIN_BACKEND_SECRET_BYTES:
            raise ValueError(f"expected secrets of at least {MIN_BACKEND_SECRET_BYTES} bytes")
    return value


def _url(value: str) -> str:
    """ "" (off) or an http(s) URL."""
    if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value, re.IGNORECASE):
        raise ValueError("expected an http:// or https:// URL, or '' (off)")
    return value


def _header_names(value: tuple[str, ...]) -> tuple[str, ...]:
    for name in value:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise ValueError(f"expected HTTP header names, got {name!r}")
    return value


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "host": _host,
    "port": _port,
    "log_level": _one_of(LOG_LEVELS),
    "log_format": _one_of(LOG_FORMATS),
    "audit_log": _audit_log,
    "node_name": _node_name,
    "redis": _redis,
    "redis_prefix": _redis_prefix,
    "ping_interval": _positive,
    "connect_timeout": _positive,
    "max_frame_size": _positive,
    "max_queue_bytes": _positive,
    "history_reply_bytes": _positive,
    "max_subscriptions": _positive,
    # 0 turns the command budget off.
    "command_rate": _non_negative,
    "command_burst": _positive,
    "receive_rate": _non_negative,
    "receive_burst": _positive,
    "allowed_origins": _origins,
    "allowed_hosts": _hosts,
    # 0 disconnects every client at once on shutdown (tests and single-client setups).
    "drain_window": _non_negative,
    "handshake_timeout": _positive,
    "http_idle_timeout": _positive,
    "http_body_timeout": _positive,
    # 0 turns the limit off.
    "max_pending_per_address": _non_negative,
    "max_pending": _non_negative,
    "backlog": _positive,
    "max_connections": _non_negative,
    "max_connections_per_address": _non_negative,
    "max_connections_per_user": _non_negative,
    "max_connects_per_second": _non_negative,
    "max_connecting": _non_negative,
    "trusted_proxies": _networks,
    "tls_cert": _readable_file,
    "tls_key": _readable_file,
    "metrics_port": lambda port: port if port is None else _port(port),
    "metrics_host": _host,
    "history_size": _non_negative,
    "history_ttl": _positive,
    "publish_id_window": _non_negative,
    "token_secret": _secret,
    "token_public_key": _public_key,
    "token_grace": _non_negative,
    "presence_ttl": _positive,
    "backend_secrets": _backend_secrets,
    "backend_timeout": _positive,
    "backend_format": _one_of(BACKEND_FORMATS),
    "backend_breaker_failures": _positive,
    "backend_breaker_cooldown": _non_negative,
    "proxy_connect": _url,
    "proxy_refresh": _url,
    "proxy_rpc": _url,
    "proxy_headers": _header_names,
}


# Settings only the config file sets: (raw TOML value, file path) -> value, or ConfigError.


def _namespaces(raw: object, source: str) -> Namespaces:
    """``[namespaces.NAME]`` tables; ``[namespaces.default]`` is stored as ""."""
    if not isinstance(raw, dict) or not all(isinstance(table, dict) for table in raw.values()):
        raise ConfigError(f"invalid setting namespaces (from {source}): expected [namespaces.NAME] tables")
    if not raw:
        return default_namespaces()
    namespaces = []
    for name, options in raw.items():
        label = f"namespaces.{name}"
        if name == "":
            raise ConfigError(
                f"invalid setting namespaces.'' (from {source}): name the default namespace {DEFAULT_NAMESPACE!r}"
            )
        for key in options:
            if key not in NAMESPACE_OPTIONS:
                hint = _did_you_mean(key, NAMESPACE_OPTIONS, f"{label}.")
                raise ConfigError(f"unknown setting '{label}.{key}' in config file {source}{hint}")
        try:
            namespaces.append(Namespace(name="" if name == DEFAULT_NAMESPACE else name, **options))
        except OptionError as exc:
            if exc.option == "name":
                raise ConfigError(f"invalid setting {_show(label)} (from {source}): {exc.reason}") from None
            # The option blamed may be one left at its default (typing_timeout below typing_interval).
            defaults = {f.name: f.default for f in dataclasses.fields(Namespace)}
            value = _show(options.get(exc.option, defaults.get(exc.option, "")))
            raise ConfigError(f"invalid setting {label}.{exc.option}={value} (from {source}): {exc.reason}") from None
    return Namespaces(namespaces)


_API_KEY_FIELDS = ("name", "key", "scopes")


def _api_keys(raw: object, source: str) -> tuple[ApiKey, ...]:
    """``[[api_keys]]`` tables of name, key and scopes; names and keys must be unique."""
    if not isinstance(raw, list) or not all(isinstance(table, dict) for table in raw):
        raise ConfigError(f"invalid setting api_keys (from {source}): expected [[api_keys]] tables")
    keys: list[ApiKey] = []
    for index, table in enumerate(raw):
        label = f"api_keys[{index}]"
        for option in table:
            if option not in _API_KEY_FIELDS:
                hint = _did_you_mean(option, _API_KEY_FIELDS, f"{label}.")
                raise ConfigError(f"unknown setting '{label}.{option}' in config file {source}{hint}")
        for option in _API_KEY_FIELDS:
            if option not in table:
                raise ConfigError(f"invalid setting {label} (from {source}): missing {option!r}")
        try:
            key = ApiKey(table["name"], table["key"], table["scopes"])
        except OptionError as exc:
            shown = "" if exc.option == "key" else "=" + _show(table[exc.option])
            raise ConfigError(f"invalid setting {label}.{exc.option}{shown} (from {source}): {exc.reason}") from None
        clash = _clash(keys, key)
        if clash:
            raise ConfigError(f"invalid setting {label} (from {source}): {clash}")
        keys.append(key)
    return tuple(keys)


def _add_env_api_key(keys: tuple[ApiKey, ...], secret: str) -> tuple[ApiKey, ...]:
    key = ApiKey("env", secret, frozenset({ALL_SCOPES}))
    clash = _clash(keys, key)
    if clash:
        raise ConfigError(f"invalid setting api_keys[{len(keys)}] (from {API_KEY_ENV}): {clash}")
    return (*keys, key)


def _clash(keys: typing.Sequence[ApiKey], new: ApiKey) -> str:
    """Why ``new`` cannot join ``keys`` (a name or key already taken), or ""."""
    for index, key in enumerate(keys):
        if key.name == new.name:
            return f"api_keys[{index}] has the same name {_show(new.name)}"
        if key.key == new.key:
            return f"api_keys[{index}] has the same key"
    return ""


def _table(raw: object, source: str, name: str, cls: type[Any]) -> dict[str, Any]:
    """A ``[name]`` table's options, each cast to its field's type (ConfigError naming ``name.option``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid setting {name} (from {source}): expected a [{name}] table")
    hints = typing.get_type_hints(cls)
    options: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            hint = _did_you_mean(key, hints, f"{name}.")
            raise ConfigError(f"unknown setting '{name}.{key}' in config file {source}{hint}")
        try:
            options[key] = _CASTERS[hints[key]](value)
        except ValueError as exc:
            raise ConfigError(f"invalid setting {name}.{key}={_show(value)} (from {source}): {exc}") from None
    return options


def _bad(name: str, value: object, source: str, reason: str) -> ConfigError:
    return ConfigError(f"invalid setting {name}={_show(value)} (from {source}): {reason}")


def _event_names(name: str, names: tuple[str, ...], source: str) -> None:
    for event in names:
        if event != ALL_EVENTS and event not in EVENT_NAMES:
            hint = _did_you_mean(event, EVENT_NAMES)
            raise _bad(name, event, source, f"not an event name{hint}")


def _events(raw: object, source: str) -> StreamOptions:
    """``[events]``: the event stream (its engine check is in :func:`load_settings`)."""
    options = _table(raw, source, "events", StreamOptions)
    _event_names("events.on", options.get("on", ()), source)
    for key in ("maxlen", "buffer"):
        if key in options and options[key] <= 0:
            raise _bad(f"events.{key}", options[key], source, "expected a number > 0")
    return StreamOptions(**options)


def _push(raw: object, source: str) -> PushOptions:
    """``[push]``: the offline push hook."""
    options = _table(raw, source, "push", PushOptions)
    url = options.get("url", "")
    if url and not url.lower().startswith(("http://", "https://")):
        raise _bad("push.url", url, source, "expected an http:// or https:// URL")
    for key in ("interval", "delay"):
        if key in options and options[key] < 0:
            raise _bad(f"push.{key}", options[key], source, "expected a number >= 0")
    for key in ("batch", "max_members", "queue", "timeout", "max_attempts", "retry_for", "backoff_max"):
        if options.get(key) is not None and options[key] <= 0:
            raise _bad(f"push.{key}", options[key], source, "expected a number > 0")
    return PushOptions(**options)


def _rules_error(exc: RuleError, source: str) -> ConfigError:
    return ConfigError(f"invalid setting {exc.label} (from {source}): {exc.reason}")


def _webhooks(raw: object, source: str) -> tuple[WebhookRule, ...]:
    """The ``[[webhooks]]`` tables (realtime.backend.rules); checked against the rest in load_settings."""
    try:
        return webhook_rules(raw)
    except RuleError as exc:
        raise _rules_error(exc, source) from None


_FILE_ONLY: dict[str, Callable[[object, str], object]] = {
    "namespaces": _namespaces,
    "api_keys": _api_keys,
    "events": _events,
    "push": _push,
    "webhooks": _webhooks,
}
assert set(_FILE_ONLY) == set(_FILE_ONLY_NAMES)

_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")


def _show(raw: object) -> str:
    """A raw value for an error message: one line, short, with URL passwords masked."""
    text = ",".join(map(str, raw)) if isinstance(raw, (list, tuple)) else str(raw)
    text = _PASSWORD.sub(r"\1***@", text)
    if not text or not text.isprintable() or text != text.strip():
        text = repr(text)
    return text if len(text) <= 80 else text[:77] + "..."


def startup_warnings(settings: Settings) -> list[str]:
    """What the hub logs at WARNING when it starts with these settings (one line each): settings
    that leave it open to anyone, or that will surprise the operator later."""
    warnings = []
    if settings.token_secret == DEMO_TOKEN_SECRET:
        warnings.append(
            "token_secret is the demo secret published in quickstart.toml: anyone can sign tokens for this hub; "
            "set your own (openssl rand -hex 32)"
        )
    for key in settings.api_keys:
        if key.key == DEMO_API_KEY:
            warnings.append(
                f"API key {key.name!r} is the demo key published in quickstart.toml: anyone can call the server "
                "API with it; set your own keys"
            )
    if effective_allowed_hosts(settings.host, settings.allowed_hosts) == (ANY_HOST,):
        warnings.append(
            f"allowed_hosts is not set and host {settings.host} is not a loopback address: any Host header is "
            "answered, so a page whose name points at this hub (DNS rebinding) can use it; set allowed_hosts "
            f"to the names clients use (on loopback it defaults to {', '.join(LOOPBACK_HOSTS)})"
        )
    if not settings.redis and not settings.revocations_file and any(k.allows("users") for k in settings.api_keys):
        warnings.append(
            "revocations (POST /api/revoke) are kept in memory only and a restart forgets them; "
            "set revocations_file to keep them"
        )
    return warnings

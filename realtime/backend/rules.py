"""The ``[backend]`` settings as one value, and the ``[[webhooks]]`` trigger rules of the TOML file, read and validated.

``realtime.config`` reads the ``[backend]`` table as settings of their own (``backend_secrets``, …, so
that the environment and flags set them too: ``Settings.backend`` is this module's :class:`BackendSettings`
of them), calls :func:`webhook_rules` with the raw TOML value and turns a :class:`RuleError` into its
one-line ConfigError; :func:`check_rules` then checks the rules against the namespaces. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import urlsplit

from .events import ALL, EVENT_NAMES

#: Request and response bodies the backend may choose.
FORMATS: Final = ("json", "msgpack")
#: The TOML name of the namespace of channels without a colon (stored as "").
DEFAULT: Final = "default"
#: Shortest signing secret accepted, in bytes.
MIN_SECRET: Final = 16


class RuleError(ValueError):
    """A bad ``[backend]`` or ``[[webhooks]]`` value: ``label`` names it (``webhooks[0].on``), the message why."""

    def __init__(self, label: str, reason: str) -> None:
        super().__init__(reason)
        self.label = label
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """``[backend]``: how the hub talks to the app's backend (proxies, webhooks, push); ``Settings.backend``."""

    #: Signing secrets, the current one first (rotation: put the new one first, drop the old one later).
    secrets: tuple[str, ...] = field(default=(), repr=False)
    #: Default seconds per request.
    timeout: float = 2.0
    #: Request bodies: "json" or "msgpack".
    format: str = "json"
    #: Consecutive failures of one proxy endpoint that open its circuit breaker, and the seconds it stays open.
    breaker_failures: int = 5
    breaker_cooldown: float = 10.0

    @property
    def secret_bytes(self) -> tuple[bytes, ...]:
        return tuple(secret.encode() for secret in self.secrets)


@dataclass(frozen=True, slots=True)
class WebhookRule:
    """``[[webhooks]]``: on events ``on`` (in ``namespaces``), POST them to ``url``; then how to deliver."""

    url: str
    #: Event names, or ("*",) for all.
    on: tuple[str, ...]
    #: Namespace names ("" is the default namespace); () = all. Selects channel events only.
    namespaces: tuple[str, ...] = ()
    #: Seconds per request; 0 = [backend] timeout.
    timeout: float = 0.0
    #: Most events in one POST.
    max_batch: int = 1
    #: Most events waiting for the endpoint (the memory queue, the Redis Stream's MAXLEN ~).
    max_queued: int = 10_000
    #: Attempts per delivery before it is given up.
    max_attempts: int = 10
    #: Seconds after the event happened beyond which it is given up rather than retried.
    retry_for: float = 3600.0
    #: Longest wait between two attempts, seconds (exponential backoff with full jitter below it).
    backoff_max: float = 60.0
    #: Redis engine: seconds a delivery may stay unacknowledged by a node before another node takes it over.
    reclaim_after: float = 60.0

    def selects(self, name: str, namespace: str) -> bool:
        """Whether this rule wants events ``name`` of ``namespace`` ("" for an event of no channel)."""
        if ALL not in self.on and name not in self.on:
            return False
        # Events of no channel (user.*, connection.closed) are selected by ``on`` alone.
        return not self.namespaces or not _is_channel_event(name) or namespace in self.namespaces

    def delivery(self) -> tuple[object, ...]:
        """The delivery options (what two rules of one URL must agree on)."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in _SELECTION)


#: Events about a channel: a rule's ``namespaces`` filters these.
CHANNEL_EVENTS: Final = frozenset(
    {"channel.occupied", "channel.vacated", "presence.join", "presence.leave", "message.published"}
)
_SELECTION: Final = frozenset({"url", "on", "namespaces"})
_OPTIONS: Final = tuple(f.name for f in fields(WebhookRule))
_POSITIVE_FLOATS: Final = ("retry_for", "backoff_max", "reclaim_after")
_POSITIVE_INTS: Final = ("max_batch", "max_queued", "max_attempts")
#: Largest batch: a body stays small enough for any backend's request limit.
MAX_BATCH: Final = 1000


def _is_channel_event(name: str) -> bool:
    return name in CHANNEL_EVENTS


def _hint(word: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _number(label: str, raw: object, *, integer: bool, zero: bool = False) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or (integer and not isinstance(raw, int)):
        raise RuleError(label, "expected an integer" if integer else "expected a number")
    if not math.isfinite(raw) or raw < 0 or (raw == 0 and not zero):
        raise RuleError(label, "must be >= 0" if zero else "must be > 0")
    return raw if integer else float(raw)


def _strings(label: str, raw: object) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
        raise RuleError(label, "expected a list of names")
    return tuple(items)


def _url(label: str, raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise RuleError(label, "expected an http:// or https:// URL")
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise RuleError(label, "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuleError(label, "expected an http:// or https:// URL with a host")
    if any(c.isspace() for c in raw):
        raise RuleError(label, "a URL has no spaces")
    return raw


def _rule(index: int, table: object) -> WebhookRule:
    label = f"webhooks[{index}]"
    if not isinstance(table, dict):
        raise RuleError(label, "expected a [[webhooks]] table")
    for key in table:
        if key not in _OPTIONS:
            raise RuleError(f"{label}.{key}", "unknown setting" + _hint(key, _OPTIONS))
    for required in ("url", "on"):
        if required not in table:
            raise RuleError(label, f"missing {required!r}")
    url = _url(f"{label}.url", table["url"])
    on = _strings(f"{label}.on", table["on"])
    if not on:
        raise RuleError(f"{label}.on", 'name at least one event, or "*" for all')
    for name in on:
        if name != ALL and name not in EVENT_NAMES:
            raise RuleError(f"{label}.on", f"unknown event {name!r}{_hint(name, EVENT_NAMES)}")
    # Stored as the settings store them: the default namespace is "".
    namespaces = tuple("" if n == DEFAULT else n for n in _strings(f"{label}.namespaces", table.get("namespaces", [])))
    options: dict[str, Any] = {}
    for name in _POSITIVE_INTS:
        if name in table:
            options[name] = _number(f"{label}.{name}", table[name], integer=True)
    for name in _POSITIVE_FLOATS:
        if name in table:
            options[name] = _number(f"{label}.{name}", table[name], integer=False)
    if "timeout" in table:
        options["timeout"] = _number(f"{label}.timeout", table["timeout"], integer=False)
    if options.get("max_batch", 1) > MAX_BATCH:
        raise RuleError(f"{label}.max_batch", f"at most {MAX_BATCH}")
    return WebhookRule(url, on, namespaces, **options)


def webhook_rules(raw: object) -> tuple[WebhookRule, ...]:
    """``[[webhooks]]`` tables -> rules; RuleError naming the bad value."""
    if not isinstance(raw, list):
        raise RuleError("webhooks", "expected [[webhooks]] tables")
    rules: list[WebhookRule] = []
    for index, table in enumerate(raw):
        rule = _rule(index, table)
        for other, earlier in enumerate(rules):
            if earlier.url == rule.url and earlier.delivery() != rule.delivery():
                raise RuleError(
                    f"webhooks[{index}]", f"same url as webhooks[{other}] with other delivery options: make them agree"
                )
        rules.append(rule)
    return tuple(rules)


def check_rules(rules: Sequence[WebhookRule], namespaces: Mapping[str, object]) -> None:
    """The rules against the namespaces: RuleError for one that is not configured. (That webhooks
    have a secret to be signed with is checked with the proxies' and the push hook's, in realtime.config.)"""
    for index, rule in enumerate(rules):
        check_namespaces(f"webhooks[{index}].namespaces", rule.namespaces, namespaces)


def check_namespaces(label: str, names: Sequence[str], namespaces: Mapping[str, object]) -> None:
    """RuleError for the first of ``names`` (``""`` or ``"default"``: the default namespace) not configured."""
    for stored in names:
        if (stored if stored != DEFAULT else "") not in namespaces:
            name = stored or DEFAULT
            known = [n or DEFAULT for n in namespaces]
            raise RuleError(label, f"no namespace {name!r}{_hint(name, known)}")


def group_by_url(rules: Sequence[WebhookRule]) -> dict[str, list[WebhookRule]]:
    """The rules of each endpoint, in file order (its first rule's delivery options apply: they all agree)."""
    endpoints: dict[str, list[WebhookRule]] = {}
    for rule in rules:
        endpoints.setdefault(rule.url, []).append(rule)
    return endpoints


__all__ = [
    "FORMATS",
    "MIN_SECRET",
    "BackendSettings",
    "RuleError",
    "WebhookRule",
    "check_namespaces",
    "check_rules",
    "group_by_url",
    "webhook_rules",
]

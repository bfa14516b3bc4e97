"""The settings of the event stream (``[events]``) and the offline push hook (``[push]``).

Pure values, validated by ``realtime.config`` (one-line errors) and used by
``realtime.backend.stream`` and ``realtime.backend.push``; docs/integration.md describes each.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """``[events]``: the events appended to a Redis Stream that backends consume with their own groups."""

    #: Whether the hub appends events to the stream (Redis engine only: refused at start otherwise).
    stream: bool = False
    #: Event names appended ("*": all).
    on: tuple[str, ...] = ("*",)
    #: Namespaces whose channel events are appended; empty: all (events of no channel always are).
    namespaces: tuple[str, ...] = ()
    #: About how many entries the stream keeps (XADD MAXLEN ~): the oldest go first.
    maxlen: int = 100_000
    #: Events this node holds while Redis does not take them; beyond it the oldest are dropped (counted).
    buffer: int = 10_000


@dataclass(frozen=True, slots=True)
class PushOptions:
    """``[push]``: offline members of chat channels, sent to the app's push endpoint."""

    #: The endpoint ("": off); namespaces turn the hook on with ``push = true``.
    url: str = ""
    #: Seconds a user gets at most one push per channel: the first message of a burst wins.
    interval: float = 30.0
    #: Most notifications per request.
    batch: int = 100
    #: Seconds a notification waits for others to share its request.
    delay: float = 0.1
    #: Seconds per request (``[backend] timeout`` when unset).
    timeout: float | None = None
    #: Most members of one channel looked at per message (a larger room's others get no push).
    max_members: int = 1000
    #: Notifications waiting to be sent (those of requests being retried included); beyond it new ones
    #: are dropped (counted and logged).
    queue: int = 10_000
    #: Attempts of one request before it is given up (``realtime.backend.delivery``: 5xx, 408, 429, no
    #: answer or no connection are retried; any other status is final).
    max_attempts: int = 5
    #: Seconds after a request was first sent beyond which it is given up: a push is worth little late.
    retry_for: float = 60.0
    #: Longest wait between two attempts, seconds (exponential backoff with full jitter below it).
    backoff_max: float = 10.0

"""One signed POST to the app's backend, retried: the delivery loop webhooks and the offline push hook share.

:func:`post_signed` POSTs a body until the backend takes it or the policy gives it up. Each attempt
is signed afresh (:mod:`.signing`: a new ``Realtime-Timestamp``, the same ``Realtime-Id``), so a
retry an hour later is not refused as a replay.

Outcomes of one attempt: 2xx delivered; 5xx, 408, 429, no answer within ``timeout`` or no connection:
another attempt after an exponential backoff with full jitter (:func:`protocol.backoff.backoff`: a
random wait below ``0.1 * 2^n`` seconds, at most ``backoff_max``), until ``max_attempts`` attempts
were made or the next one would start more than ``retry_for`` seconds after ``since``; any other
status (4xx; 3xx, as redirects are not followed): given up at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from protocol.backoff import backoff

from .events import now_ms
from .signing import sign

#: Statuses worth another attempt besides 5xx: Request Timeout, Too Many Requests.
RETRY_STATUSES: Final = frozenset({408, 429})
#: First backoff ceiling, seconds.
MIN_BACKOFF: Final = 0.1
CONTENT_TYPES: Final = {"json": "application/json", "msgpack": "application/msgpack"}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one POST is tried: its timeout, and when to stop trying."""

    #: Seconds one attempt may take.
    timeout: float
    #: Attempts before it is given up.
    max_attempts: int
    #: Seconds after ``since`` (when what it carries happened) beyond which no attempt starts.
    retry_for: float
    #: Longest wait between two attempts, seconds.
    backoff_max: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a POST: delivered, or given up after ``attempts`` (the last one failed for ``reason``)."""

    delivered: bool
    attempts: int
    reason: str = ""


async def post_signed(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    request_id: str,
    secrets: Sequence[bytes],
    content_type: str,
    policy: RetryPolicy,
    since: int,
    on_retry: Callable[[str], None] | None = None,
    wait: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Outcome:
    """POST ``body`` to ``url`` until answered 2xx or given up (``since``: ms since the epoch).

    ``on_retry(reason)`` is called before each wait for another attempt; ``wait(seconds)`` waits (a
    caller may do more while it waits, e.g. keep its queue entries claimed).
    """
    delays = backoff(MIN_BACKOFF, max(MIN_BACKOFF, policy.backoff_max))
    attempt = 0
    while True:
        attempt += 1
        headers = {"Content-Type": content_type, **sign(secrets, request_id, int(time.time()), body)}
        failure = await _attempt(session, url, body, headers, policy.timeout)
        if failure is None:
            return Outcome(True, attempt)
        retry, reason = failure
        delay = next(delays)
        out_of_time = now_ms() + delay * 1000 - since > policy.retry_for * 1000
        if not retry or attempt >= policy.max_attempts or out_of_time:
            return Outcome(False, attempt, reason)
        if on_retry is not None:
            on_retry(reason)
        await wait(delay)


async def _attempt(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[bool, str] | None:
    """None when delivered, else (whether to retry, why not)."""
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as response:
            status = response.status  # the body is never read: a huge or endless one costs nothing
    except TimeoutError:
        return True, f"no answer within {timeout}s"
    except aiohttp.ClientError as exc:
        return True, f"{type(exc).__name__}: {exc}"
    if 200 <= status < 300:
        return None
    return status >= 500 or status in RETRY_STATUSES, f"HTTP {status}"


__all__ = ["CONTENT_TYPES", "Outcome", "RetryPolicy", "post_signed"]

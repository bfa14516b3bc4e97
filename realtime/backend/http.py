"""The hub's HTTP client for the app's backend: signed POSTs, typed outcomes, a breaker per endpoint.

One :class:`BackendClient` per hub, built and closed by the composition root (``realtime.server``):
it holds the one aiohttp ``ClientSession`` every call shares. :meth:`BackendClient.post` sends a
body (JSON or MessagePack, ``backend_format``) signed with :func:`realtime.backend.signing.sign`
under ``backend_secrets``, waits at most the call's timeout, and decodes the answer by its
Content-Type. It never raises for the backend's failures: it returns an :class:`Answer` (a 2xx
with a map body) or a :class:`Failure` whose ``reason`` says what went wrong, and the callers
(:mod:`realtime.backend.proxy`) turn either into documented client errors.

A :class:`~realtime.backend.breaker.CircuitBreaker` per URL counts consecutive failures: once
open, calls to that URL fail at once (reason ``"breaker open"``) until its cool-down ends. At most
:data:`MAX_IN_FLIGHT` requests per URL are under way; more fail at once (``"busy"``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets as random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import msgpack  # type: ignore[import-untyped]  # no stubs

from .breaker import CircuitBreaker
from .signing import sign

log = logging.getLogger("realtime.backend")

FORMATS = ("json", "msgpack")
CONTENT_TYPES = {"json": "application/json", "msgpack": "application/msgpack"}
#: Most bytes of an answer read; a larger one is a failure ("bad answer").
MAX_ANSWER_BYTES = 1024 * 1024

#: Most requests in flight to one URL; beyond, a call fails at once (reason ``"busy"``, not counted
#: by the breaker). Each URL has its own: slow rpc calls cannot hold the sockets connects need.
MAX_IN_FLIGHT = 100

Reason = Literal["timeout", "unreachable", "status", "bad answer", "breaker open", "busy"]


@dataclass(frozen=True, slots=True)
class Answer:
    """The backend answered 2xx with a map."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Failure:
    """No usable answer: ``reason``, the HTTP ``status`` (0 without one), and ``retry_after``
    (seconds the breaker stays open; 0 when not known)."""

    reason: Reason
    status: int = 0
    retry_after: float = 0.0


Outcome = Answer | Failure


class BackendClient:
    """Posts to the app's backend. :meth:`start` in the app's startup, :meth:`close` at cleanup."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        format: str = "json",
        timeout: float = 2.0,
        breaker_failures: int = 5,
        breaker_cooldown: float = 10.0,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        self._secrets = [s.encode() for s in secrets]
        self.format = format
        self.timeout = timeout
        self._breaker_failures = breaker_failures
        self._breaker_cooldown = breaker_cooldown
        self._breakers: dict[str, CircuitBreaker] = {}
        self.max_in_flight = max_in_flight
        self._in_flight: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # No cookies kept between calls, no proxy from the environment: requests go where configured.
        # The pool is not limited as a whole (aiohttp's default: 100 sockets shared by every URL);
        # max_in_flight bounds each URL instead.
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def breaker(self, url: str) -> CircuitBreaker:
        found = self._breakers.get(url)
        if found is None:
            found = self._breakers[url] = CircuitBreaker(self._breaker_failures, self._breaker_cooldown)
        return found

    def encode(self, body: Mapping[str, Any]) -> bytes:
        if self.format == "msgpack":
            return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    async def post(self, url: str, body: Mapping[str, Any], *, timeout: float | None = None) -> Outcome:
        """POST ``body`` to ``url``, signed; the typed outcome (never raises for the backend's faults).

        Raises TypeError or ValueError when ``body`` cannot be encoded in :attr:`format`.
        """
        data = self.encode(body)  # before the breaker: a trial it lets through must be recorded
        breaker = self.breaker(url)
        clock = time.monotonic()
        in_flight = self._in_flight.get(url, 0)
        if in_flight >= self.max_in_flight:  # the hub's limit, not the backend failing
            return Failure("busy")
        if not breaker.allow(clock):
            return Failure("breaker open", retry_after=breaker.retry_after(clock))
        self._in_flight[url] = in_flight + 1
        try:
            outcome = await self._post(url, data, self.timeout if timeout is None else timeout)
        except BaseException:  # cancelled (the connection closed, the hub stops): no outcome to count
            breaker.abandon()  # a half-open trial that never ends would keep the breaker from closing
            raise
        finally:
            self._in_flight[url] -= 1
        # A refusal is an answer (4xx): only the backend being unable to answer counts against it.
        failed = isinstance(outcome, Failure) and (outcome.reason != "status" or outcome.status >= 500)
        now = time.monotonic()
        breaker.record(not failed, now)
        if failed and breaker.state == "open":
            log.warning("backend %s failing (%s): calls fail fast for %.1f s", url, outcome, breaker.cooldown)
            assert isinstance(outcome, Failure)
            return Failure(outcome.reason, outcome.status, breaker.retry_after(now))
        return outcome

    async def _post(self, url: str, data: bytes, timeout: float) -> Outcome:
        session = self._session
        if session is None:
            raise RuntimeError("BackendClient.start() was not called")
        headers = sign(self._secrets, random.token_hex(16), int(time.time()), data)
        headers["Content-Type"] = CONTENT_TYPES[self.format]
        headers["Accept"] = f"{CONTENT_TYPES[self.format]}, {CONTENT_TYPES['json']};q=0.9"
        try:
            async with asyncio.timeout(timeout):
                async with session.post(url, data=data, headers=headers, allow_redirects=False) as response:
                    status = response.status
                    if not 200 <= status < 300:
                        return Failure("status", status)
                    raw = await _read(response.content, MAX_ANSWER_BYTES + 1)
                    kind = response.content_type
        except TimeoutError:
            return Failure("timeout")
        except (aiohttp.ClientError, OSError):
            return Failure("unreachable")
        if len(raw) > MAX_ANSWER_BYTES:
            return Failure("bad answer", status)
        try:
            value = msgpack.unpackb(raw, raw=False) if kind == CONTENT_TYPES["msgpack"] else json.loads(raw)
        except (ValueError, RecursionError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return Failure("bad answer", status)
        if not isinstance(value, dict):
            return Failure("bad answer", status)
        return Answer(value)


async def _read(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes when it is longer: a read returns what has arrived
    so far, so an answer sent in pieces takes several."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        part = await content.read(limit - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)

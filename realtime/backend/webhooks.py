"""Webhooks: the ``[[webhooks]]`` trigger rules, each endpoint a sink of the event bus, delivered by POST.

One :class:`Endpoint` per URL (rules of one URL add up their selections). Its events wait in a queue
(:mod:`.queues`: memory, or a Redis Stream with a consumer group shared by the nodes) and one task per
node delivers them in order, up to ``max_batch`` per POST, body ``{"events": [...]}`` (JSON, or
MessagePack with ``[backend] format = "msgpack"``), signed (:mod:`.signing`; ``Realtime-Id`` is the
first event's id, the same on every retry of that POST).

Each POST goes through :func:`.delivery.post_signed` (the retry rules webhooks and the push hook share):
retried, the batch unchanged, until ``max_attempts`` attempts or ``retry_for`` seconds after the
oldest event happened; while it waits, the node keeps the batch's queue entries claimed. Given-up events are counted
(``realtime_webhook_events_total{outcome="failed"}``) and logged. Deliveries are at least once: a
backend deduplicates by each event's ``id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped]
import orjson

from ..metrics import Metrics
from ..tasks import cancel_and_wait
from .delivery import CONTENT_TYPES, RetryPolicy, post_signed
from .events import Event, EventBus
from .queues import MemoryQueue, Queue, Warner
from .rules import BackendSettings, WebhookRule, group_by_url

log = logging.getLogger("realtime.webhooks")


class Endpoint:
    """One webhook URL: a sink of the event bus, and the task that delivers its queue."""

    def __init__(self, rules: Sequence[WebhookRule], backend: BackendSettings, queue: Queue, metrics: Metrics) -> None:
        self.rules = tuple(rules)
        self.rule = rules[0]  # the delivery options (every rule of the URL agrees on them)
        self.url = self.rule.url
        self.queue = queue
        self.metrics = metrics
        self.secrets = backend.secret_bytes
        self.format = backend.format
        rule = self.rule
        self.policy = RetryPolicy(rule.timeout or backend.timeout, rule.max_attempts, rule.retry_for, rule.backoff_max)
        self._warn_failed = Warner(f"webhook {self.url}: gave events up")
        self._warn_retry = Warner(f"webhook {self.url}: delivery failed, retrying")

    # --- the sink ------------------------------------------------------------

    def wants(self, name: str, namespace: str) -> bool:
        return any(rule.selects(name, namespace) for rule in self.rules)

    def put(self, event: Event) -> None:
        self.queue.put(event)

    async def settle(self) -> None:
        """Until the events put so far are in the queue's durable store (at once for memory)."""
        settle = getattr(self.queue, "settle", None)
        if settle is not None:
            await settle()

    # --- delivery ------------------------------------------------------------

    def body(self, events: Sequence[Event]) -> bytes:
        doc = {"events": [event.to_dict() for event in events]}
        return msgpack.packb(doc) if self.format == "msgpack" else orjson.dumps(doc)

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Deliver the queue's events until cancelled."""
        while True:
            taken = await self.queue.take(self.rule.max_batch)
            if not taken:
                continue
            ids = [entry for entry, _ in taken]
            events = [event for _, event in taken]
            try:
                delivered = await self.deliver(session, ids, events)
            except Exception:  # a bug here must not stop the endpoint: give the batch up, loudly
                log.exception("webhook %s: delivery failed", self.url)
                delivered = False
            self.metrics.webhook(self.url, "delivered" if delivered else "failed", len(events))
            await self.queue.done(ids)

    async def deliver(self, session: aiohttp.ClientSession, ids: Sequence[str], events: Sequence[Event]) -> bool:
        """POST ``events`` until delivered (True) or given up (False)."""
        outcome = await post_signed(
            session,
            self.url,
            self.body(events),
            request_id=events[0].id,
            secrets=self.secrets,
            content_type=CONTENT_TYPES[self.format],
            policy=self.policy,
            since=min(event.time for event in events),
            on_retry=partial(self._retrying, len(events)),
            wait=partial(self._wait, ids),
        )
        if not outcome.delivered:
            self._warn_failed(
                f": {len(events)} event(s), first {events[0].id}, after {outcome.attempts} attempt(s): {outcome.reason}"
            )
        return outcome.delivered

    def _retrying(self, events: int, reason: str) -> None:
        self.metrics.webhook(self.url, "retried", events)
        self._warn_retry(f": {reason}")

    async def _wait(self, ids: Sequence[str], delay: float) -> None:
        """Sleep ``delay`` seconds, telling the queue every so often that these are still ours."""
        step = self.rule.reclaim_after / 3
        end = time.monotonic() + delay
        while True:
            await self.queue.keep(ids)
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(step, left))


class Webhooks:
    """Every endpoint of the settings' rules, registered on the bus: :meth:`start`, then :meth:`close`."""

    def __init__(self, endpoints: Sequence[Endpoint], bus: EventBus) -> None:
        self.endpoints = tuple(endpoints)
        self.bus = bus
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def memory(
        cls, rules: Sequence[WebhookRule], backend: BackendSettings, bus: EventBus, metrics: Metrics
    ) -> Webhooks:
        """Endpoints whose queues are in this process (the memory engine)."""
        endpoints = []
        for url, of_url in group_by_url(rules).items():
            queue = MemoryQueue(of_url[0].max_queued, _dropped(metrics, url), url)
            endpoints.append(Endpoint(of_url, backend, queue, metrics))
        return cls(endpoints, bus)

    @classmethod
    def redis(
        cls,
        rules: Sequence[WebhookRule],
        backend: BackendSettings,
        bus: EventBus,
        metrics: Metrics,
        redis: Any,
        prefix: str,
    ) -> Webhooks:
        """Endpoints whose queues are Redis Streams shared by every node (the Redis engine)."""
        from .redis_queue import RedisQueue, consumer_name, stream_key  # redis-py only when used

        consumer = consumer_name(bus.node)
        endpoints = []
        for url, of_url in group_by_url(rules).items():
            queue = RedisQueue(
                redis,
                stream_key(prefix, url),
                consumer,
                limit=of_url[0].max_queued,
                reclaim_after=of_url[0].reclaim_after,
                on_drop=_dropped(metrics, url),
                endpoint=url,
            )
            endpoints.append(Endpoint(of_url, backend, queue, metrics))
        return cls(endpoints, bus)

    async def start(self) -> None:
        if not self.endpoints:
            return
        self._session = aiohttp.ClientSession()
        for endpoint in self.endpoints:
            start = getattr(endpoint.queue, "start", None)
            if start is not None:
                start()
            self.bus.add_sink(endpoint)
            self._tasks.append(asyncio.create_task(endpoint.run(self._session)))

    async def close(self) -> None:
        for endpoint in self.endpoints:
            self.bus.remove_sink(endpoint)
            await endpoint.queue.close()
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _dropped(metrics: Metrics, url: str) -> Callable[[int], None]:
    return lambda n: metrics.webhook(url, "dropped", n)


__all__ = ["Endpoint", "Webhooks"]

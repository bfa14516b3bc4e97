"""This node's Prometheus metrics: what ``GET /metrics`` serves (every metric is listed in docs/deploy.md).

The composition root makes one :class:`Metrics` per app (each with its own
``CollectorRegistry``: tests run many apps in one process) and hands it to the
hub, which counts through it; :meth:`Metrics.watch` gives it the hub's
:meth:`~realtime.hub.Hub.snapshot`, read at scrape time.

Cost on the message path. Counts are plain ints here, bound once per label
value (:class:`Tally`, dicts filled at startup), added to where something
happens once per frame, command or publication (once per codec, with the
number of subscribers, in fan-out), never once per delivery; a collector turns
them into Prometheus counters at scrape time. A ``prometheus_client``
``Counter.inc`` takes a lock (about 1 us against 50 ns for an int). Gauges
(connections, subscriptions, channels, queued bytes) are not kept at all: the
scrape reads them from the hub's own structures. The latency histogram takes
one sample per loop iteration that wrote publications.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from protocol.codes import CloseCode, ErrorCode
from protocol.messages import Error
from protocol.wire import COMMAND_NAMES

from .engines.broker import DeliveryHealth

#: The ``type`` label of sent messages: publications, events (join, leave, typing, read, state),
#: command replies, server unsubscribes and disconnect pushes.
SENT_TYPES: Final = ("pub", "event", "reply", "unsub", "disconnect")
#: The ``type`` label of a received item that is not a valid command.
INVALID: Final = "invalid"
#: What an authentication failure was refusing (the ``kind`` label).
AUTH_KINDS: Final = ("connect", "refresh", "api")
#: The codecs' label values, by WebSocket subprotocol suffix.
CODECS: Final = ("msgpack", "json")
#: Upper bounds (seconds) of the publish -> write latency buckets.
LATENCY_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: What became of webhook events (``realtime_webhook_events_total``): POSTed and answered 2xx; an attempt
#: failed and will be retried; given up (a final refusal, or out of attempts or time); dropped by a full queue.
WEBHOOK_OUTCOMES: Final = ("delivered", "retried", "failed", "dropped")
#: What became of offline push notifications (``realtime_push_notifications_total``): in a request
#: answered 2xx; in an attempt that failed and is tried again; given up; dropped from a full queue.
PUSH_OUTCOMES: Final = ("delivered", "retried", "failed", "dropped")
#: What became of event stream events (``realtime_event_stream_events_total``): appended to the
#: stream; dropped while Redis did not take them (the node's buffer was full).
STREAM_OUTCOMES: Final = ("appended", "dropped")
#: The label value of the namespace of channels without a colon (stored as "").
DEFAULT_NAMESPACE: Final = "default"
#: Close codes counted by their own ``code`` label: the hub's and WebSocket's (RFC 6455, 1000-1015).
KNOWN_CLOSE_CODES: Final = frozenset({*map(int, CloseCode), *range(1000, 1016)})
#: The key of every other close code (a client closes with any code of 3000-65535 it likes):
#: one series labelled ``other``, not one per code a client picks.
OTHER_CLOSE_CODE: Final = 0


def disconnect_key(code: int) -> int:
    """What a connection that ended with ``code`` counts under in ``realtime_disconnects_total``."""
    return code if code in KNOWN_CLOSE_CODES else OTHER_CLOSE_CODE


class Tally:
    """Messages and bytes of one label value: bound once, added to on the message path."""

    __slots__ = ("bytes", "messages")

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def add(self, messages: int, size: int) -> None:
        self.messages += messages
        self.bytes += size


class Latency:
    """A histogram of seconds: a count per bucket and a sum, exported at scrape time.

    Not ``prometheus_client.Histogram``, whose ``observe`` takes a lock for the sum and for
    the bucket: 6,800 instructions per sample under callgrind, 6% of a publication to one subscriber.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # the first bound >= seconds: its "le"
        self.sum += seconds

    def family(self, name: str, doc: str) -> Metric:
        """The Prometheus histogram: cumulative buckets, the sum (the count is the +Inf bucket)."""
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts):
            total += n
            buckets.append((bound, total))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.sum)


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """What a scrape reads of the hub's own structures (``Hub.snapshot``)."""

    #: Open WebSocket connections by codec label (connected or not yet).
    connections: Mapping[str, int] = field(default_factory=dict)
    #: (connection, channel) subscriptions, joining included.
    subscriptions: int = 0
    #: Channels with subscribers on this node.
    channels: int = 0
    #: Users with a connection on this node.
    users: int = 0
    #: Bytes waiting for clients: in the connections' queues and their transports' buffers.
    queued_bytes: int = 0
    #: The most bytes waiting for one connection.
    queued_bytes_max: int = 0
    #: Finished connections by close code.
    disconnects: Mapping[int, int] = field(default_factory=dict)
    #: Whether the engine can serve now (``/readyz``).
    engine_ready: bool = True
    #: The engine's delivery troubles since it started.
    delivery: DeliveryHealth = field(default_factory=DeliveryHealth)


def codec_label(subprotocol: str) -> str:
    """``realtime.v1.msgpack`` -> ``msgpack``."""
    return subprotocol.rpartition(".")[2]


class Metrics:
    """The node's counts and its registry; call the methods where things happen (one line each)."""

    def __init__(self, namespaces: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        #: Sent messages and their bytes, by type (:data:`SENT_TYPES`).
        self.sent = {kind: Tally() for kind in SENT_TYPES}
        self._replies = self.sent["reply"]
        #: Received frames and their bytes, by WebSocket subprotocol (the codec's name).
        self.received: dict[str, Tally] = {}
        self._commands: dict[type | str, int] = {kind: 0 for kind in COMMAND_NAMES}
        self._commands[INVALID] = 0
        self._published: dict[str, int] = {name: 0 for name in namespaces}
        self._errors: dict[tuple[int, str], int] = {(int(code), via): 0 for code in ErrorCode for via in ("ws", "api")}
        self._auth_failures: dict[str, int] = {kind: 0 for kind in AUTH_KINDS}
        self._rate_limited: Counter[str] = Counter()
        self._quota_exceeded: Counter[str] = Counter()
        self._webhooks: Counter[tuple[str, str]] = Counter()
        self._push: Counter[str] = Counter()
        self._stream: Counter[str] = Counter()
        self._snapshot: Callable[[], NodeSnapshot] = NodeSnapshot
        #: Publish -> write seconds: one sample per loop iteration that wrote publications (``Hub._flush``).
        self.latency = Latency(LATENCY_BUCKETS)
        self.registry.register(_Collector(self))

    def watch(self, snapshot: Callable[[], NodeSnapshot]) -> None:
        """Read gauges from ``snapshot`` at every scrape (the hub's own structures)."""
        self._snapshot = snapshot

    # --- counting (one call where it happens) ------------------------------------

    def frame(self, subprotocol: str, size: int) -> None:
        """A WebSocket message of ``size`` bytes was received with the codec of ``subprotocol``."""
        tally = self.received.get(subprotocol)
        if tally is None:
            tally = self.received[subprotocol] = Tally()
        tally.messages += 1  # not tally.add(): a call less per frame
        tally.bytes += size

    def replied(self, size: int, error: Error | None) -> None:
        """A reply of ``size`` bytes was queued; an error reply counts its code too."""
        tally = self._replies
        tally.messages += 1  # not tally.add(): a call less per reply
        tally.bytes += size
        if error is not None:
            self.error(error.code)

    def command(self, kind: type) -> None:
        """A command of type ``kind`` was received (run or refused)."""
        self._commands[kind] = self._commands.get(kind, 0) + 1

    def invalid_command(self) -> None:
        """An item of a frame was not a valid command (it got an error reply, or closed the connection)."""
        self._commands[INVALID] += 1

    def published(self, namespace: str) -> None:
        """A publication was accepted in ``namespace`` (from a client or the server API)."""
        self._published[namespace] = self._published.get(namespace, 0) + 1

    def error(self, code: int, via: str = "ws") -> None:
        """An error ``code`` was answered: to a WebSocket command (``ws``) or an API request (``api``)."""
        key = (int(code), via)
        self._errors[key] = self._errors.get(key, 0) + 1

    def auth_failed(self, kind: str) -> None:
        """A token (``connect``, ``refresh``) or an API key (``api``) was refused as invalid or revoked."""
        self._auth_failures[kind] = self._auth_failures.get(kind, 0) + 1

    def rate_limited(self, kind: str) -> None:
        """A rate limit refused something; ``kind`` names the limit."""
        self._rate_limited[kind] += 1

    def quota_exceeded(self, kind: str) -> None:
        """A quota refused something; ``kind`` names the quota."""
        self._quota_exceeded[kind] += 1

    def webhook(self, endpoint: str, outcome: str, events: int = 1) -> None:
        """``events`` of a webhook ``endpoint`` reached ``outcome`` (:data:`WEBHOOK_OUTCOMES`)."""
        self._webhooks[endpoint, outcome] += events

    def webhook_count(self, endpoint: str, outcome: str) -> int:
        return self._webhooks[endpoint, outcome]

    def push(self, outcome: str, notifications: int = 1) -> None:
        """``notifications`` of the offline push hook reached ``outcome`` (:data:`PUSH_OUTCOMES`)."""
        self._push[outcome] += notifications

    def push_count(self, outcome: str) -> int:
        return self._push[outcome]

    def event_stream(self, outcome: str, events: int = 1) -> None:
        """``events`` of the event stream reached ``outcome`` (:data:`STREAM_OUTCOMES`)."""
        self._stream[outcome] += events

    def event_stream_count(self, outcome: str) -> int:
        return self._stream[outcome]

    # --- the scrape ----------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Every metric of the counts above and of the hub's snapshot, for the registry's collector."""
        node = self._snapshot()
        connections = {codec: node.connections.get(codec, 0) for codec in sorted({*CODECS, *node.connections})}
        yield _gauge("realtime_connections", "Open WebSocket connections, by codec.", "codec", connections)
        yield _gauge("realtime_subscriptions", "Subscriptions of this node's connections.", value=node.subscriptions)
        yield _gauge("realtime_channels", "Channels with subscribers on this node.", value=node.channels)
        yield _gauge("realtime_users", "Users with a connection on this node.", value=node.users)
        yield _gauge(
            "realtime_queued_bytes", "Bytes waiting for clients (queues, socket buffers).", value=node.queued_bytes
        )
        yield _gauge(
            "realtime_queued_bytes_max", "The most bytes waiting for one connection.", value=node.queued_bytes_max
        )
        disconnects = {
            str(code) if code != OTHER_CLOSE_CODE else "other": node.disconnects.get(code, 0)
            for code in sorted({*map(int, CloseCode), *node.disconnects})
        }
        yield _counter("realtime_disconnects", "Connections ended, by close code.", "code", disconnects)
        commands = {k if isinstance(k, str) else COMMAND_NAMES.get(k, k.__name__): n for k, n in self._commands.items()}
        yield _counter("realtime_messages_received", "Commands received, by command type.", "type", commands)
        by_label = {codec_label(name): tally for name, tally in self.received.items()}
        received = {**{codec: Tally() for codec in CODECS}, **by_label}.items()
        yield _counter(
            "realtime_frames_received",
            "WebSocket messages received, by codec.",
            "codec",
            {c: t.messages for c, t in received},
        )
        yield _counter(
            "realtime_received_bytes",
            "Bytes received in WebSocket messages, by codec.",
            "codec",
            {c: t.bytes for c, t in received},
        )
        sent = self.sent.items()
        yield _counter(
            "realtime_messages_sent", "Messages queued to clients, by type.", "type", {k: t.messages for k, t in sent}
        )
        yield _counter(
            "realtime_sent_bytes",
            "Bytes of messages queued to clients, by type.",
            "type",
            {k: t.bytes for k, t in sent},
        )
        published = {name or DEFAULT_NAMESPACE: n for name, n in self._published.items()}
        yield _counter(
            "realtime_publications", "Publications accepted on this node, by namespace.", "namespace", published
        )
        errors = CounterMetricFamily(
            "realtime_errors", "Error answers, by error code and interface.", labels=["code", "via"]
        )
        for (code, via), n in sorted(self._errors.items()):
            errors.add_metric([str(code), via], n)
        yield errors
        yield _counter("realtime_auth_failures", "Tokens and API keys refused, by use.", "kind", self._auth_failures)
        yield _counter(
            "realtime_rate_limited",
            "Refusals by a rate limit, by limit.",
            "kind",
            dict(sorted(self._rate_limited.items())),
        )
        yield _counter(
            "realtime_quota_exceeded",
            "Refusals by a quota, by quota.",
            "kind",
            dict(sorted(self._quota_exceeded.items())),
        )
        webhooks = CounterMetricFamily(
            "realtime_webhook_events",
            "Events of webhook endpoints, by endpoint and outcome.",
            labels=["endpoint", "outcome"],
        )
        for (endpoint, outcome), n in sorted(self._webhooks.items()):
            webhooks.add_metric([endpoint, outcome], n)
        yield webhooks
        yield _counter(
            "realtime_push_notifications",
            "Offline push notifications, by outcome.",
            "outcome",
            dict(sorted(self._push.items())),
        )
        yield _counter(
            "realtime_event_stream_events",
            "Events of the event stream, by outcome.",
            "outcome",
            dict(sorted(self._stream.items())),
        )
        yield self.latency.family(
            "realtime_publication_write_seconds",
            "Seconds from a publication reaching this node's fan-out to its frames being written to every local "
            "subscriber's socket; one sample (the oldest waiting) per loop iteration that wrote publications.",
        )
        yield _gauge(
            "realtime_engine_ready", "1 while the engine can serve (/readyz), else 0.", value=int(node.engine_ready)
        )
        yield _counter(
            "realtime_redis_reconnects", "Redis pub/sub reconnections after a loss.", value=node.delivery.reconnects
        )
        yield _counter(
            "realtime_redis_probe_failures",
            "Redis pub/sub probes not back in time.",
            value=node.delivery.probe_failures,
        )

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics if ``accept`` asks for it) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _family(
    kind: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    doc: str,
    label: str,
    values: Mapping[str, int] | None,
    value: int,
) -> Metric:
    """A ``kind`` family: one series per label value of ``values``, or one ``value`` without a label."""
    if not label:
        return kind(name, doc, value=value)
    family = kind(name, doc, labels=[label])
    for key, n in (values or {}).items():
        family.add_metric([key], n)
    return family


def _counter(name: str, doc: str, label: str = "", values: Mapping[str, int] | None = None, value: int = 0) -> Metric:
    return _family(CounterMetricFamily, name, doc, label, values, value)


def _gauge(name: str, doc: str, label: str = "", values: Mapping[str, int] | None = None, value: int = 0) -> Metric:
    return _family(GaugeMetricFamily, name, doc, label, values, value)


class _Collector:
    """The registry's view of :meth:`Metrics.collect`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()


METRICS = web.AppKey("metrics", Metrics)
PATH: Final = "/metrics"


async def serve_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: the app's :class:`Metrics` in the format the scraper asks for."""
    body, content_type = request.app[METRICS].render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


def metrics_app(metrics: Metrics) -> web.Application:
    """An app serving only ``GET /metrics``, without a key: the ``metrics_port`` listener."""
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get(PATH, serve_metrics)
    return app

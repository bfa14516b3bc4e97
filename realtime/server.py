"""The aiohttp application: the WebSocket endpoint, health, and the process lifecycle.

``create_app(settings)`` builds the application (tests serve it on port 0);
``HubServer`` binds it and stops it gracefully; ``run(settings)`` is what
``realtime serve`` calls: it serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import random
import signal
import ssl
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestHandler

from handlers.chat import Chat
from handlers.live import Live
from handlers.presence import STATUS_KEY, Presence
from protocol import codec_for
from protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from protocol.codes import CloseCode, ErrorCode
from protocol.errors import DisconnectError

from . import __version__, audit
from .admission import Admission, AuthenticatedHook
from .api import HANDLER_ARGS, guarded, setup_api
from .backend.delivery import RetryPolicy
from .backend.events import EventBus
from .backend.http import BackendClient
from .backend.proxy import Proxies
from .backend.push import PushHook, SignedPost
from .backend.stream import EventStream
from .backend.webhooks import Webhooks
from .commands import Commands
from .config import Settings, startup_warnings
from .connection import WS_PATH as WS_PATH  # where callers have imported it from
from .connection import Connection, HubWebSocket, close_timeout
from .demo import PATH as DEMO_PATH
from .demo import setup_demo
from .engines.base import Engine
from .engines.memory import MemoryEngine
from .hosts import effective_allowed_hosts, host_allowed, origin_allowed
from .hub import Hub
from .logs import bind, node_name, unbind
from .metrics import METRICS, Metrics, metrics_app, serve_metrics
from .metrics import PATH as METRICS_PATH
from .revocations import RevocationFileError
from .tasks import cancel_and_wait
from .tls import TlsError, reload_tls, tls_context

log = logging.getLogger("realtime.server")

HUB = web.AppKey("hub", Hub)
ADMISSION = web.AppKey("admission", Admission)
WEBHOOKS = web.AppKey("webhooks", Webhooks)
#: The Host header values upgrades may carry (``allowed_hosts``, resolved).
ALLOWED_HOSTS = web.AppKey("allowed_hosts", tuple[str, ...])
#: The tasks serving handed-over WebSockets (:func:`hand_over`): held here (asyncio keeps only
#: weak references), cancelled when the app stops.
CONNECTION_TASKS = web.AppKey("connection_tasks", set[asyncio.Task[None]])


def create_engine(settings: Settings) -> Engine:
    """The Redis engine when ``settings.redis`` is set, else the memory engine (one process)."""
    if settings.redis:
        from .engines.redis import RedisEngine  # imports redis-py only when it is used

        return RedisEngine(settings.redis, prefix=settings.redis_prefix, cluster=settings.redis_cluster)
    return MemoryEngine()


def create_webhooks(settings: Settings, engine: Engine, events: EventBus, metrics: Metrics) -> Webhooks:
    """The ``[[webhooks]]`` endpoints: queued in Redis with the Redis engine (shared by the nodes), else in memory."""
    if settings.webhooks and settings.redis:
        from .engines.redis import RedisEngine

        if isinstance(engine, RedisEngine):
            return Webhooks.redis(settings.webhooks, settings.backend, events, metrics, engine.redis, engine.prefix)
    return Webhooks.memory(settings.webhooks, settings.backend, events, metrics)


def _refuse_upgrade(request: web.Request, hub: Hub) -> web.StreamResponse | None:
    """What an upgrade gets instead of a WebSocket (None: nothing, go on): 503 while the node
    drains, 421 for a Host not allowed, 403 for an Origin not allowed."""
    if hub.closing:
        return shutting_down()
    agent = request.headers.get("User-Agent")
    origin = request.headers.get("Origin")
    if not host_allowed(host := request.headers.get("Host"), request.app[ALLOWED_HOSTS]):
        audit.upgrade_refused(request.remote or "-", "host not allowed", origin=origin, user_agent=agent, host=host)
        return host_not_allowed()
    if not origin_allowed(origin, request.host, hub.settings.allowed_origins):
        audit.upgrade_refused(request.remote or "-", "origin not allowed", origin=origin, user_agent=agent)
        raise web.HTTPForbidden(text="origin not allowed")
    return None


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """GET /ws. It does the work of the app's middlewares itself (the handshake timer, draining,
    the Host check), which pass this path straight through: their frames would otherwise stay
    alive under this one for the connection's life.

    Once upgraded and admitted, the connection is served by a task of its own
    (:func:`serve_connection`) and this handler returns: aiohttp's request, its parsed head and
    the coroutines of its request loop are then let go (~4 KiB a connection, tracemalloc)."""
    admission = request.app[ADMISSION]
    admission.request_started(request.transport)
    handed_over = False  # serve_connection does what the finally blocks below would
    try:
        hub = request.app[HUB]
        settings = hub.settings
        refused = _refuse_upgrade(request, hub)
        if refused is not None:
            return refused
        ws = HubWebSocket(
            protocols=(MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL),
            # No heartbeat=: the connection pings and drops silent peers itself (4003 with a
            # Disconnect push; aiohttp's would end in 1006), see realtime.connection.
            timeout=close_timeout(settings.ping_interval),  # aiohttp's wait for the client's close frame
            # aiohttp refuses a message of max_msg_size bytes or more: + 1 makes max_frame_size
            # the largest frame a client may send.
            max_msg_size=settings.max_frame_size + 1,
            compress=False,  # frames are shared by all subscribers, see realtime.frames
            decode_text=False,
        )
        remote = admission.proxies.client_address(request.remote or "-", request.headers.getall("X-Forwarded-For", ()))
        refusal = admission.admit_upgrade(remote, request.transport)
        try:
            writer = await ws.prepare(request)
            transport = request.transport
            if transport is None:  # the peer left during the handshake
                return ws
            release_upgrade(request, ws)
            codec = codec_for(ws.ws_protocol)
            conn = Connection(hub, ws, transport, codec, remote, writer=writer, frames=ws.frames)
            for name in settings.proxy_headers:  # for the connect proxy
                if name in request.headers:
                    conn.proxy_headers[name] = request.headers[name]
            if refusal is not None:
                hub.disconnects[refusal.code] += 1  # refused connections end with their code (metrics)
                if refusal.code == CloseCode.TOO_MANY_CONNECTIONS:
                    audit.connection_limit(remote, refusal.reason)
                # Upgraded, then refused with the push and close frame: every client can read the
                # advice (a browser sees no HTTP status of a refused upgrade, only 1006).
                conn.close(refusal)
                await conn.wait_closed()
                return ws
            if hub.closing:
                # The drain began during the handshake, after it listed the connections: this one
                # gets its SHUTDOWN advice too, not the 1006 of a task cancelled as the site stops.
                hub.disconnects[CloseCode.SHUTDOWN] += 1
                conn.close(DisconnectError(CloseCode.SHUTDOWN))
                await conn.wait_closed()
                return ws
            hub.add(conn)
            hand_over(request, ws, conn)
            handed_over = True
            return ws
        finally:
            if refusal is None and not handed_over:
                admission.upgrade_ended(remote)
    finally:
        if not handed_over:
            admission.request_done(request.transport)


def hand_over(request: web.Request, ws: HubWebSocket, conn: Connection) -> None:
    """Serve ``conn`` in a task of its own, so that the handler can return with the socket open.

    aiohttp's request loop (``RequestHandler.start``) closes the transport after the handler
    unless the handler's ``_force_close`` is set, and with it set drops the bytes it reads: the
    transport's protocol becomes :class:`UpgradedProtocol`, which feeds them to the frame
    parser itself. ``ws.detach`` keeps aiohttp's ``write_eof`` after the handler from closing
    the WebSocket.
    """
    handler = request.protocol
    transport = request.transport
    assert transport is not None
    transport.set_protocol(UpgradedProtocol(transport.get_protocol(), handler))
    handler._force_close = True  # its request loop then ends without closing the transport
    loop_task = handler._task_handler
    if loop_task is not None:  # a finished task (and its coroutine) would stay referenced
        loop_task.add_done_callback(partial(_forget_request_loop, handler))
    ws.detach(handler)
    task = asyncio.create_task(serve_connection(request.app[HUB], conn, request.app[ADMISSION], handler))
    tasks = request.app[CONNECTION_TASKS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def _forget_request_loop(handler: RequestHandler, task: asyncio.Task[None]) -> None:
    if handler._task_handler is task:
        handler._task_handler = None


async def serve_connection(hub: Hub, conn: Connection, admission: Admission, handler: RequestHandler) -> None:
    """Run an upgraded, admitted connection until it ends (see :func:`hand_over`)."""
    context = bind(conn)  # what is logged while serving it names it (and tasks it starts)
    try:
        try:
            await conn.run()
        except Exception:
            log.exception("connection %s failed", conn.id)
            conn.close(DisconnectError(CloseCode.INTERNAL))
        finally:
            await hub.remove(conn)
            await conn.wait_closed()
            unbind(context)
    finally:
        admission.upgrade_ended(conn.remote)
        admission.request_done(handler.transport)
        conn.transport.close()  # as aiohttp's request loop did after the handler (a no-op when closing)


class UpgradedProtocol(asyncio.Protocol):
    """A handed-over WebSocket's transport protocol: reads go to its frame parser (what aiohttp's
    ``RequestHandler.data_received`` does once upgraded), every other event to the protocol it
    replaced (the admission's Gate, or aiohttp's handler), which still owns the connection."""

    __slots__ = ("_handler", "_outer")

    def __init__(self, outer: asyncio.BaseProtocol, handler: RequestHandler) -> None:
        self._outer = outer
        self._handler = handler

    def data_received(self, data: bytes) -> None:
        handler = self._handler
        parser = handler._payload_parser
        if parser is None or handler._close or not data:
            return
        eof, _ = parser.feed_data(data)
        if eof:
            handler.close()

    def eof_received(self) -> bool | None:
        return self._outer.eof_received()  # type: ignore[attr-defined, no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._outer.connection_lost(exc)

    def pause_writing(self) -> None:
        self._outer.pause_writing()

    def resume_writing(self) -> None:
        self._outer.resume_writing()

    @property
    def writing_paused(self) -> bool:
        """aiohttp's flag, read by the connection to bound what the transport holds."""
        return self._handler.writing_paused

    def __getattr__(self, name: str) -> object:
        return getattr(self._outer, name)


#: What every upgraded connection's aiohttp objects share instead of holding their own (see
#: :func:`release_upgrade`): an empty request queue and the writer's unused compression tasks.
_NO_MESSAGES: deque[Any] = deque(maxlen=0)
_NO_TASKS: set[asyncio.Task[None]] = set()
_SHARED_RANDOM_BITS = partial(random.Random().getrandbits, 32)


def release_upgrade(request: web.Request, ws: web.WebSocketResponse) -> None:
    """Let go of what aiohttp keeps per connection for HTTP once the WebSocket is up.

    After the upgrade every byte goes to the WebSocket reader, so the HTTP parser and the
    queue of parsed requests (a deque allocates 600 bytes empty) are never used again; the
    writer's masking and compression state serve clients and ``compress=True`` only. One
    shared object instead of one per connection, ~1.5 KiB each (tracemalloc); and the
    handler's cached addresses (~0.3 KiB), which the connection has its own copy of.
    """
    handler = request.protocol
    handler._parser = None  # aiohttp's own state after connection_lost: it checks for None
    handler._cache.clear()  # peername and sockname, read for the request (read again if asked)
    if not handler._messages:
        handler._messages = _NO_MESSAGES  # never appended to once upgraded (maxlen=0: never holds)
    writer = ws._writer
    if writer is not None:
        writer._background_tasks = _NO_TASKS  # only with compression, which the hub turns off
        writer.get_random_bits = _SHARED_RANDOM_BITS  # only a client masks its frames


async def healthz(request: web.Request) -> web.Response:
    """Liveness of the process: answers while the event loop runs."""
    hub = request.app[HUB]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "engine": hub.engine.name,
            "connections": len(hub.connections),
            "channels": hub.channel_count(),
        }
    )


async def readyz(request: web.Request) -> web.Response:
    """Readiness: whether this node can serve clients now (load balancers route by it).

    503 while the engine cannot (Redis unreachable, or its pub/sub not
    delivering the liveness probes) and while the node drains for shutdown;
    /healthz stays 200 meanwhile: the process is fine and recovers by itself.
    """
    hub = request.app[HUB]
    reason = ""
    if hub.closing:
        reason = "shutting down"
    elif not hub.engine.ready:
        reason = f"the {hub.engine.name} engine is not ready (Redis unreachable or its pub/sub not delivering)"
    body = {"status": "not ready" if reason else "ready", "engine": hub.engine.name}
    if reason:
        body["reason"] = reason
    return web.json_response(body, status=503 if reason else 200)


def error_response(code: ErrorCode, message: str, status: int, headers: dict[str, str]) -> web.Response:
    """The JSON error map as the server API writes it: compact, so that its bytes are those protocol.md shows."""
    body = json.dumps({"code": int(code), "message": message}, separators=(",", ":"))
    return web.Response(text=body, status=status, content_type="application/json", headers=headers)


def shutting_down() -> web.Response:
    """What an upgrade gets while the node drains: 503 with the JSON error map (NOT_AVAILABLE, retry)."""
    return error_response(ErrorCode.NOT_AVAILABLE, "shutting down", 503, {"Connection": "close", "Retry-After": "1"})


def host_not_allowed() -> web.Response:
    """What a WebSocket upgrade or an API request gets when its Host is not in ``allowed_hosts``:
    421 Misdirected Request with the JSON error map (BAD_REQUEST), the one answer of both."""
    return error_response(ErrorCode.BAD_REQUEST, "host not allowed", 421, {"Connection": "close"})


def host_middleware(allowed: tuple[str, ...]) -> Middleware:
    """Refuses upgrades (/ws), API requests (/api), scrapes (/metrics) and the demo page (/demo,
    whose token endpoint signs tokens) whose Host header ``allowed`` does not allow: a
    DNS-rebinding page names its own host. /healthz and /readyz answer any Host (load balancers probe by address); they tell nothing a client could use.
    (Upgrades: :func:`websocket_handler` checks them itself.)"""

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        path = request.path
        if path == WS_PATH:
            return handler(request)  # no frame held for the connection's life
        guarded = path == METRICS_PATH or path in ("/api", DEMO_PATH) or path.startswith(("/api/", DEMO_PATH + "/"))
        if guarded and not host_allowed(host := request.headers.get("Host"), allowed):
            audit.host_refused(request.remote or "-", request.method, path, host)
            return _answer(host_not_allowed())
        return handler(request)

    return middleware


async def _answer(response: web.StreamResponse) -> web.StreamResponse:
    return response


def admission_middleware(admission: Admission, hub: Hub) -> Middleware:
    """Each request head stops its socket's handshake timer; each answered request releases its
    pending place. (Upgrades: :func:`websocket_handler` does both itself.)"""

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if request.path == WS_PATH:
            return handler(request)  # no frame held for the connection's life
        return _admitted(request, handler, admission)

    return middleware


async def _admitted(request: web.Request, handler: Handler, admission: Admission) -> web.StreamResponse:
    admission.request_started(request.transport)
    try:
        return await handler(request)
    finally:
        admission.request_done(request.transport)


def create_app(settings: Settings, engine: Engine | None = None) -> web.Application:
    """The composition root: the engine, the hub, the features plugged into it, and the routes.

    Nothing below builds its own collaborators: the hub knows its features only as
    :class:`~realtime.feature.Feature`, and the features know the hub only as
    :class:`~realtime.feature.HubServices`. Features plug in in hook order.
    """
    metrics = Metrics(settings.namespaces)  # this app's own registry (GET /metrics)
    events = EventBus(node_name(settings.node_name))  # sinks (webhooks, stream, push) register on it
    hub = Hub(settings, engine or create_engine(settings), metrics, events)  # memory, Redis or Redis Cluster
    metrics.watch(hub.snapshot)  # gauges: read from the hub's structures at scrape time
    webhooks = create_webhooks(settings, hub.engine, events, metrics)  # sinks of hub.events
    admission = Admission(settings)  # pending sockets; HubServer's site puts each socket through it
    allowed_hosts = effective_allowed_hosts(settings.host, settings.allowed_hosts)
    app = web.Application(
        middlewares=[admission_middleware(admission, hub), host_middleware(allowed_hosts)],
        handler_args=HANDLER_ARGS,
    )
    presence, live = Presence(hub), Live(hub)
    # The app's backend: one HTTP client (one session) for every request the hub makes to it.
    backend = (
        BackendClient(
            settings.backend_secrets,
            format=settings.backend_format,
            timeout=settings.backend_timeout,
            breaker_failures=settings.backend_breaker_failures,
            breaker_cooldown=settings.backend_breaker_cooldown,
        )
        if settings.backend_secrets
        else None
    )
    proxies = Proxies(hub, backend, node_name(settings.node_name)) if backend is not None else None
    hub.use(Commands(hub, proxy=proxies), Chat(hub), presence, live)
    if proxies is not None:
        hub.use(proxies)  # the rpc command, and refreshes of proxied connections
    hub.use(AuthenticatedHook(admission))  # a connect succeeded: the socket is no longer pending
    _plug_backend_sinks(hub, settings)
    app[HUB] = hub
    app[ADMISSION] = admission
    app[ALLOWED_HOSTS] = allowed_hosts
    app[METRICS] = metrics
    app[WEBHOOKS] = webhooks

    tasks: set[asyncio.Task[None]] = set()
    app[CONNECTION_TASKS] = tasks

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        if backend is not None:
            await backend.start()
        await hub.start()
        await webhooks.start()
        yield
        # aiohttp's shutdown closed their sockets; a connection still running is cancelled, as
        # aiohttp cancels a handler still running.
        await cancel_and_wait(*tasks)
        await webhooks.close()  # before the engine: the Redis queues flush through its client
        await hub.close()
        if backend is not None:
            await backend.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get(WS_PATH, websocket_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    setup_api(app, hub, presence=presence, live=live)
    app.router.add_get(METRICS_PATH, guarded("metrics", serve_metrics))  # main port: an API key's scope
    if settings.demo:
        setup_demo(app, settings)
    return app


def _plug_backend_sinks(hub: Hub, settings: Settings) -> None:
    """The event stream (Redis engine) and the offline push hook, when configured: sinks of
    ``hub.events``, and features for their shutdown."""
    if settings.events.stream:
        from .engines.redis import RedisEngine  # the setting is refused without redis

        engine = hub.engine
        if not isinstance(engine, RedisEngine):
            raise ValueError("the event stream needs the Redis engine")
        stream = EventStream(engine.redis, engine.prefix, settings.events, hub.metrics)
        hub.events.add_sink(stream)
        hub.use(stream)
    if settings.push.url and any(ns.push for ns in settings.namespaces.values()):
        engine = hub.engine

        async def online(user: str) -> bool:
            return (await engine.presence_stats(STATUS_KEY + user)).clients > 0

        options = settings.push
        policy = RetryPolicy(
            options.timeout or settings.backend.timeout, options.max_attempts, options.retry_for, options.backoff_max
        )
        post = SignedPost(options.url, settings.backend.secret_bytes, policy)
        push = PushHook(hub, settings.push, post, online)
        hub.events.add_sink(push)
        hub.use(push)


class _GatedSite(web.TCPSite):
    """A TCPSite whose accepted sockets pass through the app's :class:`Admission` before aiohttp sees them."""

    def __init__(
        self,
        runner: web.AppRunner,
        admission: Admission,
        settings: Settings,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            runner, settings.host, port, backlog=settings.backlog, reuse_address=True, ssl_context=ssl_context
        )
        self._admission = admission
        # A TLS handshake comes before the Gate sees the socket: the same timeout bounds it.
        self._ssl_handshake_timeout = settings.handshake_timeout if ssl_context is not None else None

    async def start(self) -> None:
        # TCPSite.start, with the protocol factory wrapped; the attributes are TCPSite's own.
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._admission.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._ssl_handshake_timeout,
        )


def _open_file_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> None:
    """Raise the process's soft open-file limit to its hard limit, as Go programs do by themselves
    (Go 1.19+): every connection is a descriptor, and the usual soft limit of 1,024 would hold a
    node to about a thousand phones whatever the machine could take. The hard limit is the
    operator's to set (``LimitNOFILE=``, ``ulimit -Hn``). For ``realtime serve`` only: a library
    embedding the hub leaves its process's limits to its owner."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # an unlimited hard limit above the kernel's nr_open: keep the soft one
        return
    log.info("open-file limit raised from %d to %d (the hard limit)", soft, hard)


class HubServer:
    """A hub bound to a port; :meth:`start`, then :meth:`stop` for a graceful stop."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self._engine = engine
        self.port = settings.port
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._close_audit: Callable[[], None] | None = None
        #: The listener's TLS context when tls_cert and tls_key are set (see :meth:`reload_tls`).
        self.tls: ssl.SSLContext | None = None
        #: The metrics_port listener's port (the one picked when metrics_port is 0), None without one.
        self.metrics_port = settings.metrics_port
        self._metrics_runner: web.AppRunner | None = None

    @property
    def hub(self) -> Hub:
        assert self.app is not None
        return self.app[HUB]

    async def start(self) -> None:
        settings = self.settings
        # Before anything can be refused; raises ConfigError when the file cannot be opened.
        self._close_audit = audit.configure(settings.audit_log, node_name(settings.node_name))
        self.app = create_app(self.settings, self._engine)
        # aiohttp's keep-alive timeout closes an HTTP connection idle between requests; a
        # WebSocket turns it off. Before the first request, handshake_timeout (the Gate) applies.
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, keepalive_timeout=settings.http_idle_timeout
        )
        await self._runner.setup()
        if settings.tls_cert and settings.tls_key:
            self.tls = tls_context(settings.tls_cert, settings.tls_key)
        self._site = _GatedSite(self._runner, self.app[ADMISSION], settings, self.port, self.tls)
        await self._site.start()
        if self.port == 0:  # learn the port the OS picked
            self.port = self._runner.addresses[0][1]
        if settings.metrics_port is not None:
            # Its own app: GET /metrics without a key, and nothing else, for a private network.
            # Keyless, so a DNS-rebinding page must not read it: loopback names only when it
            # listens on loopback (a private network's scraper names the address it dials).
            metrics = metrics_app(self.app[METRICS])
            metrics.middlewares.append(host_middleware(effective_allowed_hosts(settings.metrics_host, ())))
            self._metrics_runner = web.AppRunner(metrics, handle_signals=False, access_log=None)
            await self._metrics_runner.setup()
            await web.TCPSite(self._metrics_runner, settings.metrics_host, settings.metrics_port).start()
            self.metrics_port = self._metrics_runner.addresses[0][1]
            log.info("metrics on http://%s:%s%s", settings.metrics_host, self.metrics_port, METRICS_PATH)
        limit = _open_file_limit()
        if limit is not None and settings.max_pending and settings.max_pending > limit // 2:
            log.warning(
                "max_pending (%d) is above half the open-file limit (%d): unauthenticated sockets can take "
                "every descriptor; raise the limit (ulimit -n) or lower max_pending",
                settings.max_pending,
                limit,
            )
        if limit is not None and settings.max_connections and settings.max_connections + settings.max_pending > limit:
            # Past the limit a new socket fails in accept(): the phone waits unanswered in the listen
            # queue instead of getting the 4008 refusal and its retry advice.
            log.warning(
                "max_connections (%d) plus max_pending (%d) is above the open-file limit (%d): connections past "
                "it are not accepted, and get no 4008 advice; raise the limit (LimitNOFILE=, ulimit -n) or lower "
                "max_connections",
                settings.max_connections,
                settings.max_pending,
                limit,
            )
        for warning in startup_warnings(settings):
            log.warning("%s", warning)
        # A connect proxy signs connections in without a token key.
        if not (
            settings.allow_anonymous or settings.token_secret or settings.token_public_key or settings.proxy_connect
        ):
            log.warning(
                "no token_secret, token_public_key or [proxy] connect is set and allow_anonymous is off: every "
                "connection will be refused (to try the hub: realtime serve --config quickstart.toml)"
            )
        log.info(
            "realtime %s listening on %s://%s:%s%s (engine %s)",
            __version__,
            "wss" if self.tls else "ws",
            self.settings.host,
            self.port,
            WS_PATH,
            self.hub.engine.name,
        )
        if settings.demo:
            scheme = "https" if self.tls else "http"
            log.info(
                "demo chat page at %s://%s:%s%s (for trying the hub only)", scheme, settings.host, self.port, DEMO_PATH
            )

    def reload_tls(self) -> bool:
        """Load tls_cert and tls_key again (SIGHUP): new handshakes use them, open connections
        keep theirs. On failure the old certificate stays and the error is logged."""
        settings = self.settings
        if self.tls is None or not (settings.tls_cert and settings.tls_key):
            log.info("SIGHUP: TLS is not configured, nothing to reload")
            return False
        try:
            reload_tls(self.tls, settings.tls_cert, settings.tls_key)
        except TlsError as exc:
            log.error("TLS reload failed, keeping the previous certificate: %s", exc)
            return False
        log.info("TLS certificate reloaded from %s", settings.tls_cert)
        return True

    async def stop(self, drain_window: float | None = None) -> None:
        """Drain, then stop listening and close.

        The drain turns the node unready at once (/readyz 503, upgrades 503) while the
        listener stays open, so load balancers read "not ready" rather than a refused
        connection; clients are disconnected spread over the drain window; then the site
        stops and the remaining HTTP connections are closed.
        """
        if self._runner is None:
            return
        window = self.settings.drain_window if drain_window is None else drain_window
        await self.hub.drain(window)
        await self._runner.cleanup()  # stops the site first
        self._runner = self._site = None
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        log.info("stopped")
        if self._close_audit is not None:
            self._close_audit()
            self._close_audit = None


#: Allocations (net of frees) between two young-generation collections of the cyclic garbage
#: collector in ``realtime serve`` (CPython's default is 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect cyclic garbage less often, and never rescan what startup built.

    Every connection keeps ~150 container objects alive (aiohttp's request, tasks and
    coroutine frames, the connection) that the collector traverses at each young
    collection they are part of; with the default threshold, half of a connect's CPU
    went to the collector (py-spy, 6,000 JWT connects: 0.44 ms with the threshold
    below vs 0.87 ms). The garbage that does form cycles (exceptions and their
    tracebacks, mostly) is short-lived and small, so waiting for 50,000 allocations
    holds a few MiB at most. ``gc.freeze`` moves the modules, the app and the
    settings to the permanent generation: full collections no longer walk them.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = HubServer(settings)
    await server.start()
    tune_gc()
    if hasattr(signal, "SIGHUP"):  # not on Windows
        loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
    try:
        await stop.wait()
        log.info(
            "shutting down: draining %d connections over %.1fs", len(server.hub.connections), settings.drain_window
        )
    finally:
        await server.stop()


def run(settings: Settings) -> None:
    """Blocking entry point of ``realtime serve``; uses uvloop where installed."""
    raise_open_file_limit()
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # uvloop is optional (not on Windows)
        pass
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(settings))
    except OSError as exc:
        print(f"realtime: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(1) from None
    except RevocationFileError as exc:  # read at start: the hub does not serve without its revocations
        print(f"realtime: {exc}", file=sys.stderr)
        raise SystemExit(1) from None

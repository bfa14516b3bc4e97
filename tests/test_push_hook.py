"""The offline push hook against a real aiohttp backend on a free port, on the memory and Redis engines."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from aiohttp import web

from protocol.messages import Publish, PublishResult, Read, ReadResult
from realtime.backend.options import PushOptions
from realtime.backend.push import PushHook
from realtime.backend.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from realtime.config import ConfigError, load_settings
from realtime.namespaces import Namespace

from .helpers import HubFactory, RunningHub, namespaces, result, unique_prefix, until, user
from .redis_server import RedisServer, free_port
from .wsclient import RawClient

SECRET = b"push-secret-for-tests-0123456789"
CHAT = Namespace(name="chat", kind="chat", subscribe="anyone", publish="clients", presence=True, push=True)
ROOM = "chat:#alice,bob,carol,dave"


class Backend:
    """The app's push endpoint: records each request's notifications after checking its signature;
    answers the statuses of :attr:`answers` first (then 204), and can be stopped and started again."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        #: Every attempt: (its Realtime-Id, the status answered).
        self.attempts: list[tuple[str, int]] = []
        self.answers: list[int] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert verify(
            [SECRET], request.headers[TIMESTAMP_HEADER], request.headers[SIGNATURE_HEADER], body, now=time.time()
        )
        assert request.content_type == "application/json"  # whatever [backend] format says
        payload = json.loads(body)
        assert payload["id"] == request.headers[ID_HEADER]
        status = self.answers.pop(0) if self.answers else 204
        self.attempts.append((payload["id"], status))
        if status == 204:
            self.requests.append(payload)
        return web.Response(status=status)

    @property
    def notifications(self) -> list[dict[str, Any]]:
        return [n for r in self.requests for n in r["notifications"]]

    def users(self) -> list[str]:
        return sorted(n["user"] for n in self.notifications)


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.start()
    yield b
    await b.stop()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def engine_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"redis": server.url, "redis_prefix": unique_prefix()}


async def push_hub(
    hub_factory: HubFactory, backend: Backend, engine: dict[str, Any], ns: Namespace = CHAT, **push: Any
) -> RunningHub:
    options = PushOptions(url=backend.url, **{"delay": 0.01, **push})
    return await hub_factory(namespaces=namespaces(ns), push=options, backend_secrets=(SECRET.decode(),), **engine)


def idle(hub: RunningHub) -> bool:
    """Every message's decision taken and every request answered."""
    hook = hub.hub.feature(PushHook)
    return hook._deciding == 0 and not hook._pending and not hook._sending


async def send(hub: RunningHub, client: RawClient, data: Any, channel: str = ROOM) -> PublishResult:
    """Publish as ``client``; the hub emits message.published, and the push hook decides before the
    publish is answered or soon after."""
    sent = result(await client.command(Publish(0, channel, msgpack.packb(data))), PublishResult)
    await until(lambda: idle(hub), what="the push hook's decisions")
    return sent


async def test_only_offline_members_get_a_push_never_the_sender(
    hub_factory: HubFactory, backend: Backend, engine_settings: dict[str, Any]
) -> None:
    hub = await push_hub(hub_factory, backend, engine_settings, interval=0.0)
    alice = await user(hub, "alice", ROOM)
    await send(hub, alice, {"text": "first"})
    await until(lambda: idle(hub), what="the first message's pushes")
    backend.requests.clear()
    # erin is a member by her read receipt (she opened the room before); frank never did.
    erin = await user(hub, "erin", ROOM)
    result(await erin.command(Read(0, ROOM, 1)), ReadResult)
    await erin.close()
    bob = await user(hub, "bob", ROOM)  # reading the room: no push
    dave = await user(hub, "dave", "chat:elsewhere")  # online, in another room: a push
    frank = await user(hub, "frank")
    try:
        sent = await send(hub, alice, {"text": "hello"})
        await until(lambda: len(backend.notifications) == 3, what="three notifications")
        assert backend.users() == ["carol", "dave", "erin"]
        first = backend.notifications[0]
        assert first["channel"] == ROOM and first["sender"] == "alice"
        assert (first["mid"], first["offset"], first["time"]) == (sent.mid, sent.offset, sent.time)
        assert first["preview"] == ""  # push_preview = "none"
        # Unread: carol and dave have read nothing (2 messages), erin read the first.
        assert {n["user"]: n["unread"] for n in backend.notifications} == {"carol": 2, "dave": 2, "erin": 1}
    finally:
        for client in (alice, bob, dave, frank):
            await client.close()


async def test_one_push_per_user_and_channel_per_interval(
    hub_factory: HubFactory, backend: Backend, engine_settings: dict[str, Any]
) -> None:
    hub = await push_hub(hub_factory, backend, engine_settings, interval=3600.0)
    alice = await user(hub, "alice", ROOM)
    try:
        await send(hub, alice, {"text": "one"})
        await send(hub, alice, {"text": "two"})  # within the window: collapsed
        await send(hub, alice, {"text": "x"}, channel="chat:#alice,carol")  # another channel: its own window
        await until(lambda: idle(hub), what="the requests")
        assert sorted((n["user"], n["channel"], n["offset"]) for n in backend.notifications) == [
            ("bob", ROOM, 1),
            ("carol", ROOM, 1),
            ("carol", "chat:#alice,carol", 1),
            ("dave", ROOM, 1),
        ]
    finally:
        await alice.close()


async def test_unread_counts_what_the_window_held_back(
    hub_factory: HubFactory, backend: Backend, engine_settings: dict[str, Any]
) -> None:
    hub = await push_hub(hub_factory, backend, engine_settings, interval=0.0)  # no window: every message
    alice = await user(hub, "alice", "chat:#alice,bob")
    try:
        for text in ("a", "b", "c"):
            await send(hub, alice, {"text": text}, channel="chat:#alice,bob")
        await until(lambda: len(backend.notifications) == 3, what="three notifications")
        assert sorted(n["unread"] for n in backend.notifications) == [1, 2, 3]  # bob has read nothing
    finally:
        await alice.close()


async def test_the_body_is_json_whatever_the_backend_format(hub_factory: HubFactory, backend: Backend) -> None:
    hub = await push_hub(hub_factory, backend, {"backend_format": "msgpack"})
    alice = await user(hub, "alice", "chat:#alice,bob")
    try:
        await send(hub, alice, {"text": "hi"}, channel="chat:#alice,bob")
        await until(lambda: len(backend.notifications) == 1, what="bob's notification")
        assert backend.users() == ["bob"]  # the backend decoded it as JSON, with a JSON Content-Type
    finally:
        await alice.close()


async def test_notifications_are_batched(
    hub_factory: HubFactory, backend: Backend, engine_settings: dict[str, Any]
) -> None:
    hub = await push_hub(hub_factory, backend, engine_settings, batch=2, delay=0.05)
    alice = await user(hub, "alice", ROOM)
    try:
        await send(hub, alice, {"text": "hi"})
        await until(lambda: len(backend.notifications) == 3, what="three notifications")
        assert sorted(len(r["notifications"]) for r in backend.requests) == [1, 2]
        assert len({r["id"] for r in backend.requests}) == 2
    finally:
        await alice.close()


@pytest.mark.parametrize(
    ("options", "data", "preview"),
    [
        ({"push_preview": "text", "push_preview_length": 5}, {"text": "hello world"}, "hello"),
        ({"push_preview": "text", "push_text_field": "body"}, {"body": "hi", "text": "no"}, "hi"),
        ({"push_preview": "text"}, {"other": "x"}, ""),
        ({"push_preview": "text"}, "just a string", ""),
        ({"push_preview": "none"}, {"text": "secret"}, ""),
    ],
)
async def test_preview_rules(
    hub_factory: HubFactory, backend: Backend, options: dict[str, Any], data: Any, preview: str
) -> None:
    ns = dataclasses.replace(CHAT, **options)
    hub = await push_hub(hub_factory, backend, {}, ns)
    alice = await user(hub, "alice", "chat:#alice,bob")
    try:
        await send(hub, alice, data, channel="chat:#alice,bob")
        await until(lambda: len(backend.notifications) == 1, what="a notification")
        assert backend.notifications[0]["preview"] == preview
    finally:
        await alice.close()


async def test_without_presence_online_anywhere_means_no_push(hub_factory: HubFactory, backend: Backend) -> None:
    ns = dataclasses.replace(CHAT, presence=False)
    hub = await push_hub(hub_factory, backend, {}, ns)
    alice = await user(hub, "alice", "chat:#alice,bob,carol")
    bob = await user(hub, "bob", "chat:other")  # connected: the hub cannot tell he is not reading
    try:
        await send(hub, alice, {"text": "hi"}, channel="chat:#alice,bob,carol")
        await until(lambda: len(backend.notifications) == 1, what="a notification")
        assert backend.users() == ["carol"]
    finally:
        await alice.close()
        await bob.close()


async def test_two_nodes_push_once_per_user(
    hub_factory: HubFactory, backend: Backend, redis_server: RedisServer
) -> None:
    engine = {"redis": redis_server.url, "redis_prefix": unique_prefix()}
    one = await push_hub(hub_factory, backend, engine, interval=0.0)
    two = await push_hub(hub_factory, backend, engine, interval=0.0)
    alice = await user(one, "alice", ROOM)
    watcher = await user(two, "bob", ROOM)
    try:
        await send(one, alice, {"text": "hi"})
        await until(lambda: idle(two), what="the other node")
        await until(lambda: len(backend.notifications) >= 2, what="the notifications")
        assert backend.users() == ["carol", "dave"]  # from one node only; bob reads the room on the other
        assert two.hub.feature(PushHook).sent == 0
    finally:
        await alice.close()
        await watcher.close()


# --- retries, give-ups, drops: the delivery rules of webhooks (realtime.backend.delivery) ----------


async def test_a_push_is_retried_after_a_500_with_the_same_id(hub_factory: HubFactory, backend: Backend) -> None:
    backend.answers.extend([500, 503])
    hub = await push_hub(hub_factory, backend, {}, backoff_max=0.05)
    alice = await user(hub, "alice", ROOM)
    try:
        await send(hub, alice, {"text": "hi"})
        await until(lambda: len(backend.notifications) == 3, what="the retried request")
        assert [status for _, status in backend.attempts] == [500, 503, 204]
        assert len({request_id for request_id, _ in backend.attempts}) == 1  # one request, tried three times
        metrics = hub.hub.metrics
        # The backend records a request as it reads it; the hub counts it once the answer is back.
        await until(lambda: metrics.push_count("delivered") == 3, what="the answer counted")
        assert (metrics.push_count("retried"), metrics.push_count("delivered")) == (6, 3)  # by notification
        assert metrics.push_count("failed") == 0
    finally:
        await alice.close()


async def test_a_push_waits_out_a_backend_that_is_down(hub_factory: HubFactory, backend: Backend) -> None:
    await backend.stop()  # connections refused
    hub = await push_hub(hub_factory, backend, {}, backoff_max=0.05, max_attempts=10_000)
    alice = await user(hub, "alice", ROOM)
    try:
        assert (await alice.publish(ROOM, {"text": "are you there"})).error is None  # (not send: no idle hub)
        metrics = hub.hub.metrics
        await until(lambda: metrics.push_count("retried") >= 6, what="two failed attempts")
        assert backend.notifications == []
        await backend.start()
        await until(lambda: len(backend.notifications) == 3, what="the request, once the backend is back")
        assert backend.users() == ["bob", "carol", "dave"]
        # The backend records a request as it reads it; the hub counts it once the answer is back.
        await until(lambda: metrics.push_count("delivered") == 3, what="the answer counted")
        assert (metrics.push_count("delivered"), metrics.push_count("failed")) == (3, 0)
    finally:
        await alice.close()


@pytest.mark.parametrize(("answers", "options", "attempts"), [([400], {}, 1), ([500, 500], {"max_attempts": 2}, 2)])
async def test_a_push_is_given_up_on_a_4xx_or_out_of_attempts(
    hub_factory: HubFactory, backend: Backend, answers: list[int], options: dict[str, Any], attempts: int
) -> None:
    backend.answers.extend(answers)
    hub = await push_hub(hub_factory, backend, {}, backoff_max=0.05, **options)
    alice = await user(hub, "alice", "chat:#alice,bob")
    try:
        await send(hub, alice, {"text": "x"}, channel="chat:#alice,bob")
        await until(lambda: hub.hub.metrics.push_count("failed") == 1, what="the request given up")
        assert [status for _, status in backend.attempts] == answers[:attempts]
        assert hub.hub.feature(PushHook).failed == 1 and backend.notifications == []
    finally:
        await alice.close()


async def test_notifications_beyond_the_queue_are_dropped_and_counted(
    hub_factory: HubFactory, backend: Backend
) -> None:
    hub = await push_hub(hub_factory, backend, {}, queue=1)
    alice = await user(hub, "alice", ROOM)
    try:
        await send(hub, alice, {"text": "hi"})  # three members away, room for one
        await until(lambda: len(backend.notifications) == 1, what="the one kept")
        await until(lambda: hub.hub.metrics.push_count("delivered") == 1, what="its answer counted")
        assert hub.hub.metrics.push_count("dropped") == 2
        text = hub.hub.metrics.render(None)[0].decode()
        assert 'realtime_push_notifications_total{outcome="dropped"} 2.0' in text
        assert 'realtime_push_notifications_total{outcome="delivered"} 1.0' in text
    finally:
        await alice.close()


def test_push_is_for_chat_namespaces() -> None:
    with pytest.raises(ValueError, match="push"):
        Namespace(name="news", push=True)


def test_push_needs_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('[push]\nurl = "http://127.0.0.1:9/push"\n')
    with pytest.raises(ConfigError, match="set \\[backend\\] secrets"):
        load_settings(env={}, config_file=config)


def test_push_retry_settings_are_read_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    head = '[backend]\nsecrets = ["0123456789abcdef0123"]\n[push]\nurl = "http://127.0.0.1:9/push"\n'
    config.write_text(head + "max_attempts = 3\nretry_for = 20\nbackoff_max = 2\n")
    push = load_settings(env={}, config_file=config).push
    assert (push.max_attempts, push.retry_for, push.backoff_max) == (3, 20.0, 2.0)
    config.write_text(head + "max_attempts = 0\n")
    with pytest.raises(ConfigError, match=r"invalid setting push\.max_attempts=0"):
        load_settings(env={}, config_file=config)

"""docs/backend-openapi.json against the hub: a valid OpenAPI 3.1 document, and the requests a real hub
sends to a real aiohttp backend (webhooks of every event, JSON and MessagePack, offline push, the event
stream's entries) validate against its schemas, headers included, as do the examples of
docs/integration.md."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # stubs are a separate package
from openapi_spec_validator import validate as validate_openapi
from redis.asyncio import Redis

from protocol.codes import CloseCode
from protocol.errors import DisconnectError
from protocol.messages import Connect, ConnectResult, Publish, Rpc, Subscribe, Unsubscribe
from realtime.backend.events import EVENT_NAMES
from realtime.backend.options import PushOptions, StreamOptions
from realtime.backend.rules import WebhookRule
from realtime.backend.signing import verify
from realtime.backend.stream import stream_key
from realtime.namespaces import Namespace

from .backend_app import BACKEND_SECRET, catalogue
from .helpers import HubFactory, namespaces, unique_prefix, until, user
from .redis_server import RedisServer, free_port
from .wsclient import RawClient

ROOT = Path(__file__).resolve().parent.parent
DOC: dict[str, Any] = json.loads((ROOT / "docs" / "backend-openapi.json").read_text())
INTEGRATION = (ROOT / "docs" / "integration.md").read_text()
CHAT = Namespace(
    name="chat", kind="chat", subscribe="anyone", publish="clients", presence=True, presence_grace=0.1, push=True
)
STATUS = Namespace(name="status", kind="status", subscribe="anyone", presence_grace=0.1)
#: Each operation of the document's ``webhooks`` map answers on its own path: ``/<operation>``.
OPERATIONS = tuple(DOC["webhooks"])


def schema(pointer: str) -> Draft202012Validator:
    """A validator of the document's schema at ``pointer`` (``#/components/...`` references resolve in the document)."""
    return Draft202012Validator({"$ref": pointer, "components": DOC["components"]})


def node_ref(ref: str) -> list[str]:
    return ref.removeprefix("#/").split("/")


def deref(node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or what its ``$ref`` names in the document."""
    if "$ref" not in node:
        return node
    found: Any = DOC
    for part in node_ref(node["$ref"]):
        found = found[part]
    return dict(found)


def errors(validator: Draft202012Validator, value: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)]


@dataclass
class Request:
    """One request the backend received: the operation (its path), its headers and raw body."""

    operation: str
    headers: dict[str, str]
    content_type: str
    body: bytes

    def value(self) -> Any:
        return msgpack.unpackb(self.body) if self.content_type == "application/msgpack" else json.loads(self.body)


def check_request(request: Request) -> list[str]:
    """Every way ``request`` departs from its operation in the document: content type, body, headers."""
    op = DOC["webhooks"][request.operation]["post"]
    content = op["requestBody"]["content"]
    if request.content_type not in content:
        return [f"content type {request.content_type} not among {sorted(content)}"]
    pointer = content[request.content_type]["schema"]["$ref"]
    problems = errors(schema(pointer), request.value())
    for parameter in map(deref, op["parameters"]):
        assert parameter["in"] == "header"
        given = request.headers.get(parameter["name"])
        if given is None:
            if parameter["required"]:
                problems.append(f"header {parameter['name']} missing")
            continue
        problems += [
            f"header {parameter['name']}: {e}" for e in errors(Draft202012Validator(parameter["schema"]), given)
        ]
    return problems


class Recorder:
    """The app's backend: answers every operation of the document on ``/<operation>`` and records
    what it received. Webhooks and push get 200; proxies get ``answers[operation]``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Request] = []
        self.answers: dict[str, dict[str, Any]] = {}
        self.runner: web.AppRunner | None = None

    def url(self, operation: str) -> str:
        assert operation in OPERATIONS
        return f"http://127.0.0.1:{self.port}/{operation}"

    def of(self, operation: str) -> list[Request]:
        return [r for r in self.requests if r.operation == operation]

    async def receive(self, request: web.Request) -> web.Response:
        operation = request.match_info["operation"]
        body = await request.read()
        self.requests.append(Request(operation, dict(request.headers), request.content_type, body))
        answer = self.answers.get(operation)
        return web.Response(status=200) if answer is None else web.json_response(answer)

    async def start(self) -> Recorder:
        app = web.Application()
        app.router.add_post("/{operation}", self.receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def backend() -> AsyncIterator[Recorder]:
    recorder = await Recorder().start()
    yield recorder
    await recorder.stop()


def events_of(backend: Recorder) -> list[dict[str, Any]]:
    return [e for r in backend.of("events") for e in r.value()["events"]]


def names_of(backend: Recorder) -> set[str]:
    return {e["name"] for e in events_of(backend)}


# --- the document ---------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    validate_openapi(DOC)  # raises on the first problem
    assert DOC["openapi"].startswith("3.1.")
    for operation in DOC["webhooks"].values():
        for pointer in {m["schema"]["$ref"] for m in operation["post"]["requestBody"]["content"].values()}:
            Draft202012Validator.check_schema(deref({"$ref": pointer}))


def test_every_event_name_has_its_schema() -> None:
    event = DOC["components"]["schemas"]["Event"]
    assert set(event["discriminator"]["mapping"]) == set(EVENT_NAMES)
    assert len(event["oneOf"]) == len(EVENT_NAMES)


def test_integration_md_links_the_document() -> None:
    assert "(backend-openapi.json)" in INTEGRATION
    assert "docs/backend-openapi.json" in (ROOT / "README.md").read_text()


# --- the documented examples ----------------------------------------------------------------


def test_the_event_catalogue_matches_the_event_schema() -> None:
    documented = catalogue()
    assert set(documented) == set(EVENT_NAMES)
    for name, example in documented.items():
        assert errors(schema("#/components/schemas/Event"), example) == [], name
    body = {"events": list(documented.values())}
    assert errors(schema("#/components/schemas/WebhookBody"), body) == []


def test_the_push_example_matches_the_push_schema() -> None:
    [block] = [b for b in re.findall(r"```json\n(.*?)```", INTEGRATION, re.S) if '"notifications"' in b]
    assert errors(schema("#/components/schemas/PushBody"), json.loads(block)) == []


def test_the_schemas_refuse_what_the_hub_never_sends() -> None:
    example = catalogue()["user.offline"]
    validator = schema("#/components/schemas/Event")
    assert errors(validator, {**example, "name": "user.away"})  # no such event
    assert errors(validator, {**example, "data": {}})  # seen is required
    assert errors(validator, {**example, "extra": 1})  # no other field
    assert errors(validator, {**example, "channel": "chat:room"})  # user events have no channel


# --- real requests --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_real_webhooks_of_every_event_match_the_document(
    hub_factory: HubFactory, backend: Recorder, fmt: str
) -> None:
    rule = WebhookRule(backend.url("events"), ("*",), backoff_max=0.2)
    hub = await hub_factory(
        namespaces=namespaces(CHAT, STATUS),
        backend_secrets=(BACKEND_SECRET, "an-older-secret-still-accepted"),
        backend_format=fmt,
        webhooks=(rule,),
    )
    alice = await user(hub, "alice", "chat:room")
    await alice.publish("chat:room", {"text": "hi", "bytes": b"\x00\x01"})
    await alice.publish("news", [1, 2.5, None])  # the default namespace: not a chat one
    await alice.command(Unsubscribe(alice.next_id(), "chat:room"))
    await until(lambda: {"channel.vacated", "presence.leave"} <= names_of(backend), what="vacated and leave")
    hub.hub.connections[alice.client_id].close(DisconnectError(CloseCode.STALE, "no pong"))
    await until(lambda: names_of(backend) == set(EVENT_NAMES), what="every event")
    await alice.close()

    for request in backend.of("events"):
        assert request.content_type == f"application/{fmt}"
        assert check_request(request) == [], request.value()
        assert verify([BACKEND_SECRET.encode()], request.headers["Realtime-Timestamp"],
                      request.headers["Realtime-Signature"], request.body, now=time.time())  # fmt: skip
    published = [e for e in events_of(backend) if e["name"] == "message.published"]
    assert {e["namespace"] for e in published} == {"chat", ""}  # "" is the default namespace


async def test_a_real_push_request_matches_the_document(hub_factory: HubFactory, backend: Recorder) -> None:
    hub = await hub_factory(
        namespaces=namespaces(CHAT),
        backend_secrets=(BACKEND_SECRET,),
        push=PushOptions(url=backend.url("push"), delay=0.01, interval=0.0),
    )
    alice = await user(hub, "alice", "chat:#alice,bob")
    reply = await alice.command(Publish(alice.next_id(), "chat:#alice,bob", msgpack.packb({"text": "hi"})))
    assert reply.error is None
    await until(lambda: len(backend.of("push")) == 1, what="the push request")
    await alice.close()
    (request,) = backend.of("push")
    assert check_request(request) == [], request.value()
    assert [n["user"] for n in request.value()["notifications"]] == ["bob"]


@pytest.mark.redis
async def test_real_event_stream_entries_match_the_document(hub_factory: HubFactory, redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    hub = await hub_factory(
        namespaces=namespaces(CHAT), redis=redis_server.url, redis_prefix=prefix, events=StreamOptions(stream=True)
    )
    alice = await user(hub, "alice", "chat:room")
    await alice.publish("chat:room", {"text": "hi"})
    await alice.close()
    redis: Any = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        entries: list[Any] = []

        async def published() -> bool:
            entries[:] = await redis.xrange(stream_key(prefix))
            return any('"message.published"' in fields["event"] for _, fields in entries)

        await until(published, what="a message.published entry")
    finally:
        await redis.aclose()
    entry_schema, event_schema = schema("#/components/schemas/EventStreamEntry"), schema("#/components/schemas/Event")
    for _, fields in entries:
        assert errors(entry_schema, fields) == []
        assert errors(event_schema, json.loads(fields["event"])) == []  # contentSchema is not asserted by validators


# --- proxies and rpc ------------------------------------------------------------------------


def answer_schema(operation: str) -> Draft202012Validator:
    """A validator of what the backend may answer ``operation`` (its 2XX body)."""
    inline = DOC["webhooks"][operation]["post"]["responses"]["2XX"]["content"]["application/json"]["schema"]
    return Draft202012Validator({**inline, "components": DOC["components"]})


#: docs/integration.md's proxy example names -> the document's operation.
EXAMPLES = {"connect": "connectProxy", "refresh": "refreshProxy", "subscribe": "subscribeProxy"}
EXAMPLES |= {"publish": "publishProxy", "rpc": "rpc"}


def test_the_proxy_examples_match_the_document() -> None:
    examples = re.findall(r"<!-- proxy-example: (\w+) (request|answer) -->\n```json\n(.*?)```", INTEGRATION, re.S)
    assert {(name, kind) for name, kind, _ in examples} == {(n, k) for n in EXAMPLES for k in ("request", "answer")}
    for name, kind, block in examples:
        operation = EXAMPLES[name]
        if kind == "request":
            request = Request(operation, {}, "application/json", block.encode())
            assert errors(schema(pointer_of(request)), request.value()) == [], name
        else:
            assert errors(answer_schema(operation), json.loads(block)) == [], name


def pointer_of(request: Request) -> str:
    content = DOC["webhooks"][request.operation]["post"]["requestBody"]["content"]
    return str(content[request.content_type]["schema"]["$ref"])


def test_the_answer_schemas_refuse_what_the_hub_refuses() -> None:
    validator = answer_schema("connectProxy")
    assert errors(validator, {"disconnect": {"code": 1000, "reason": "x"}})  # not a close code the backend may use
    assert errors(validator, {"error": {"code": "1403"}})  # an integer code
    assert errors(validator, {"result": {"user": 7}})
    assert errors(validator, {"nothing": {}})
    assert errors(validator, {"result": {}, "error": {"code": 1}}) and not errors(validator, {"result": {}})


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_real_proxy_and_rpc_requests_match_the_document(
    hub_factory: HubFactory, backend: Recorder, fmt: str
) -> None:
    backend.answers = {
        "connectProxy": {"result": {"user": "alice", "info": {"name": "Alice"}, "expires": int(time.time()) + 2}},
        "refreshProxy": {"result": {"expires": int(time.time()) + 3600, "channels": ["room:granted"]}},
        "subscribeProxy": {"result": {"info": {"role": "host"}}},
        "publishProxy": {"result": {"data": {"text": "hi", "checked": True}}},
        "rpc": {"result": {"data": {"name": "Bob"}}},
    }
    room = Namespace(
        name="room",
        subscribe="anyone",
        publish="clients",
        subscribe_proxy=backend.url("subscribeProxy"),
        publish_proxy=backend.url("publishProxy"),
    )
    hub = await hub_factory(
        namespaces=namespaces(room),
        backend_secrets=(BACKEND_SECRET,),
        backend_format=fmt,
        proxy_connect=backend.url("connectProxy"),
        proxy_refresh=backend.url("refreshProxy"),
        proxy_rpc=backend.url("rpc"),
        proxy_headers=("Cookie",),
    )
    client = await RawClient.open(hub.url, connect_first=False, additional_headers={"Cookie": "sid=s3cr3t"})
    async with client:
        data = msgpack.packb({"session": "s1"})
        assert isinstance((await client.command(Connect(0, name="t", version="1", data=data))).result, ConnectResult)
        assert (await client.command(Subscribe(0, "room:1", token="app-subscription-token"))).error is None
        assert (await client.command(Subscribe(0, "room:2"))).error is None
        assert (await client.command(Publish(0, "room:1", msgpack.packb({"text": "hi"}), key="k1"))).error is None
        assert (await client.command(Publish(0, "room:2", msgpack.packb([1, None])))).error is None
        assert (await client.command(Rpc(0, "profile", msgpack.packb({"id": 7})))).error is None
        assert (await client.command(Rpc(0, "ping"))).error is None  # no data: null
        await until(lambda: backend.of("refreshProxy") != [], timeout=10.0, what="the refresh at expires")

    operations = {r.operation for r in backend.requests}
    assert operations == {"connectProxy", "refreshProxy", "subscribeProxy", "publishProxy", "rpc"}
    for request in backend.requests:
        assert request.content_type == f"application/{fmt}"
        assert check_request(request) == [], (request.operation, request.value())
    for operation, answer in backend.answers.items():
        assert errors(answer_schema(operation), answer) == [], operation
    connect = backend.of("connectProxy")[0].value()
    assert connect["headers"] == {"Cookie": "sid=s3cr3t"} and connect["data"] == {"session": "s1"}
    assert [r.value().get("token") for r in backend.of("subscribeProxy")] == ["app-subscription-token", None]
    assert [r.value()["key"] for r in backend.of("publishProxy")] == ["k1", None]

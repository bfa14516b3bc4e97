"""Logs and the audit log, read from real output of real hubs with real clients.

The main log is what ``setup_logging`` writes (captured from its stream, in both formats); the
audit log is the file the ``audit_log`` setting names, or the main stream with ``"-"``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped]
import orjson
import pytest

from protocol.codes import CloseCode, ErrorCode
from protocol.messages import Connect, Ping, Publish, Refresh, Subscribe
from realtime import audit
from realtime.config import ConfigError, load_settings
from realtime.logs import (
    CLIENT_NAME_LIMIT,
    MAX_MESSAGE,
    MAX_VALUE,
    JsonFormatter,
    OneLineFormatter,
    safe,
    setup_logging,
)
from realtime.namespaces import Namespace

from .helpers import ROOT, HubFactory, RunningHub, closed_code, error, make_token, namespaces, until
from .test_api import ALL, PUBLISH_ONLY, auth
from .test_limits import refusal
from .wsclient import RawClient

NODE = "node-a"
#: A user-limited namespace (dm:#alice is alice's), and one where only the server publishes.
NAMESPACES = namespaces(
    Namespace(name="dm", subscribe="user"), Namespace(name="news", subscribe="anyone", publish="clients")
)
#: A client name that tries everything: a terminal title and screen clear, a forged line after
#: U+2028, a bidi override, and 60 kB more.
EVIL_NAME = "\x1b]0;pwned\x07\x1b[2J\u2028INFO realtime.hub: forged\u202egnp.exe" + "x" * 60_000
RAW = ("\x1b", "\x07", "\u2028", "\u202e")


# --- safe(): every case --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "logged"),
    [
        ("ios-app 1.2", "ios-app 1.2"),
        ("café 🚀 東京", "café 🚀 東京"),  # printable non-ASCII is kept
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),  # terminal escape sequences
        ("a\nb\rc\td", "a\\nb\\rc\\td"),  # line breaks: no forged lines
        ("\x00\x07\x7f", "\\x00\\x07\\x7f"),  # C0 and DEL
        ("\x85\x9b", "\\x85\\x9b"),  # C1: NEL (a line break to some readers), CSI
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),  # line and paragraph separators
        ("\u202egnp.exe", "\\u202egnp.exe"),  # a right-to-left override
        (
            "\u2066\u2067\u2068\u2069\u202a\u202b\u202c\u202d",
            "\\u2066\\u2067\\u2068\\u2069\\u202a\\u202b\\u202c\\u202d",
        ),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),  # bidi marks
        ("ad\u200bmin\ufeff", "ad\\u200bmin\\ufeff"),  # zero-width characters hide a difference
        ("a\u00a0b", "a\\xa0b"),  # a space that is not one
        ("\ud800", "\\ud800"),  # a lone surrogate (could not even be written as UTF-8)
        ("\U000e0041", "\\U000e0041"),  # a tag character (invisible)
        ("C:\\x1b", "C:\\\\x1b"),  # a backslash is doubled: an escape cannot be faked
    ],
)
def test_safe_escapes(raw: str, logged: str) -> None:
    assert safe(raw) == logged


def test_safe_caps_the_length_with_a_marker() -> None:
    assert safe("a" * 60_000) == "a" * MAX_VALUE + f"...[{60_000 - MAX_VALUE} more characters]"
    assert safe("éééééé", limit=4) == "éééé...[2 more characters]"
    assert safe("a" * MAX_VALUE) == "a" * MAX_VALUE  # exactly the limit: nothing cut
    # Cut first, then escaped: each of the first 256 characters becomes a 4-character escape.
    assert safe("\x1b" * 1000) == "\\x1b" * MAX_VALUE + f"...[{1000 - MAX_VALUE} more characters]"


def test_safe_takes_any_value() -> None:
    assert safe(42) == "42"
    assert safe(b"\x1b") == "b'\\\\x1b'"  # repr's own backslash, doubled


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\u2028value")
        except ValueError as e:
            exc_info = (type(e), e, e.__traceback__)
    return logging.LogRecord("realtime.test", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_text_lines_escape_and_cap_a_message_whatever_it_holds() -> None:
    """A value logged without safe() still cannot forge or hide a line, nor fill the disk."""
    line = OneLineFormatter().format(_record("name=%s", "a\u2028INFO forged\x1b[2J" + "x" * 10_000))
    assert "\n" not in line and not any(c in line for c in RAW)
    assert "name=a\\u2028INFO forged\\x1b[2J" in line
    assert len(line) < MAX_MESSAGE + 200 and line.endswith(" more characters]")


def test_json_lines_escape_what_json_keeps() -> None:
    """orjson escapes C0 controls but keeps U+2028, bidi overrides and C1 as they are."""
    line = JsonFormatter(NODE).format(_record("name=%s", "\u2028\u202e\x85\x1b", exc=True))
    assert "\n" not in line and not any(c in line for c in (*RAW, "\x85"))
    entry = orjson.loads(line)
    assert entry["message"] == "name=\\u2028\\u202e\\x85\\x1b"
    assert (entry["level"], entry["logger"], entry["node"]) == ("WARNING", "realtime.test", NODE)
    assert entry["time"].endswith("Z") and "conn" not in entry  # no connection here
    assert "ValueError: bad\\u2028value" in entry["exc"]
    long = orjson.loads(JsonFormatter(NODE).format(_record("%s", "x" * 10_000)))["message"]
    assert long == "x" * MAX_MESSAGE + f"...[{10_000 - MAX_MESSAGE} more characters]"


# --- the main log of a running hub ---------------------------------------------------------------


@pytest.fixture
def main_log() -> Iterator[Callable[[str], io.StringIO]]:
    """``main_log(fmt)``: the hub's main log, set up as ``realtime serve`` does (level debug), into
    a buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def start(fmt: str) -> io.StringIO:
        buffer = io.StringIO()
        setup_logging("debug", fmt, NODE, stream=buffer)
        return buffer

    yield start
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def lines_with(buffer: io.StringIO, text: str) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if text in line]


async def connect_named(hub: RunningHub, name: str, version: str, token: str | None = None) -> RawClient:
    client = await RawClient.open(hub.url, connect_first=False)
    reply = await client.command(Connect(0, token=token, name=name, version=version))
    assert reply.error is None, reply.error
    return client


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_the_client_name_is_logged_escaped_and_capped(
    hub_factory: HubFactory, main_log: Callable[[str], io.StringIO], fmt: str
) -> None:
    out = main_log(fmt)
    hub = await hub_factory()
    async with await connect_named(hub, EVIL_NAME, "1.0\u2028\x1b[A"):
        pass
    await until(lambda: bool(lines_with(out, "connection closed")), what="the close line")
    log = out.getvalue()
    assert not any(c in log for c in RAW)  # nothing of it reaches a terminal or a line splitter raw
    [line] = lines_with(out, "connection open")  # one line, not two
    assert len(line) < 1000  # not 60 kB
    message = orjson.loads(line)["message"] if fmt == "json" else line
    assert "client=\\x1b]0;pwned\\x07\\x1b[2J\\u2028INFO realtime.hub: forged\\u202egnp.exe" in message
    assert f"...[{len(EVIL_NAME) - CLIENT_NAME_LIMIT} more characters]/1.0\\u2028\\x1b[A" in message


async def test_json_records_of_a_connection_carry_its_id_user_and_node(
    hub_factory: HubFactory, main_log: Callable[[str], io.StringIO]
) -> None:
    out = main_log("json")
    hub = await hub_factory()
    async with await RawClient.open(hub.url, token=make_token("alice")) as client:
        client_id = client.client_id
    await until(lambda: bool(lines_with(out, "connection closed")), what="the close line")
    entries = [orjson.loads(line) for line in out.getvalue().splitlines()]
    mine = [e for e in entries if e["message"].startswith("connection ")]
    assert len(mine) == 2
    for entry in mine:
        assert entry["conn"] == client_id and entry["user"] == "alice"
        assert (entry["remote"], entry["node"], entry["logger"]) == ("127.0.0.1", NODE, "realtime.hub")
    [listening] = [e for e in entries if "listening" in e["message"]]
    assert "conn" not in listening and listening["node"] == NODE


async def test_json_records_of_an_api_request_name_its_key(
    hub_factory: HubFactory, main_log: Callable[[str], io.StringIO]
) -> None:
    out = main_log("json")
    hub = await hub_factory(api_keys=(ALL,))
    async with aiohttp.ClientSession() as session:
        body = {"channel": "x", "data": 1}
        async with session.post(f"{hub.http_url}/api/publish", json=body, headers=auth(ALL)) as response:
            assert response.status == 200
    [entry] = [orjson.loads(line) for line in lines_with(out, "api POST /api/publish key=")]
    assert (entry["key"], entry["remote"], entry["level"]) == ("backend", "127.0.0.1", "DEBUG")


# --- the audit log ---------------------------------------------------------------------------------


def audit_records(path: Path, event: str | None = None) -> list[dict[str, Any]]:
    records = [orjson.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in records if event is None or r["event"] == event]


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


@pytest.fixture
async def audited(hub_factory: HubFactory, audit_file: Path) -> RunningHub:
    return await hub_factory(
        audit_log=str(audit_file), node_name=NODE, api_keys=(ALL, PUBLISH_ONLY), namespaces=NAMESPACES
    )


async def api(hub: RunningHub, path: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{hub.http_url}{path}", json=body, headers=headers) as response:
            await response.read()
            return response.status


async def test_refused_connects_are_audited(audited: RunningHub, audit_file: Path) -> None:
    forged = make_token("mallory", secret="another-secret-that-is-long-enough-too!!")
    client = await RawClient.open(audited.url, connect_first=False)
    await client.send(Connect(client.next_id(), token=forged))
    assert await closed_code(client) == CloseCode.UNAUTHORIZED

    client = await RawClient.open(audited.url, connect_first=False)
    reply = await client.command(Connect(0, token=make_token("bob", ttl=-10)))
    assert error(reply) == ErrorCode.TOKEN_EXPIRED
    await client.close()

    assert await api(audited, "/api/revoke", {"user": "carol", "before": time.time() + 60}, auth(ALL)) == 200
    client = await RawClient.open(audited.url, connect_first=False)
    await client.send(Connect(client.next_id(), token=make_token("carol")))
    assert await closed_code(client) == CloseCode.UNAUTHORIZED

    failed = audit_records(audit_file, "auth_failed")
    assert [(r["reason"], r["code"]) for r in failed] == [
        ("bad signature", 4501),
        ("token expired", 109),
        ("token revoked", 4501),
    ]
    for record in failed:
        assert (record["level"], record["logger"], record["node"]) == ("INFO", "realtime.audit", NODE)
        assert record["remote"] == "127.0.0.1" and record["conn"] and "user" not in record


async def test_refusals_of_rights_are_audited(audited: RunningHub, audit_file: Path) -> None:
    async with await RawClient.open(audited.url, token=make_token("alice")) as alice:
        assert error(await alice.command(Subscribe(0, "dm:#bob"))) == ErrorCode.PERMISSION_DENIED
        reply = await alice.command(Refresh(0, token=make_token("bob")))
        assert error(reply) == ErrorCode.PERMISSION_DENIED
    async with await RawClient.open(audited.url) as anonymous:
        assert error(await anonymous.command(Subscribe(0, "dm:#alice"))) == ErrorCode.PERMISSION_DENIED

    [by_alice, by_anonymous] = audit_records(audit_file, "forbidden")
    assert by_alice["user"] == "alice" and by_alice["conn"] == alice.client_id
    assert (by_alice["command"], by_alice["channel"], by_alice["reason"], by_alice["code"]) == (
        "subscribe",
        "dm:#bob",
        "channel of other users",
        103,
    )
    assert "user" not in by_anonymous and by_anonymous["conn"] == anonymous.client_id
    assert by_anonymous["channel"] == "dm:#alice"
    [refresh] = audit_records(audit_file, "refresh_refused")
    assert (refresh["user"], refresh["reason"], refresh["code"]) == ("alice", "token is for another user", 103)


async def test_refusal_records_are_capped_per_connection(audited: RunningHub, audit_file: Path) -> None:
    """A client repeating refusals on one connection (connects with an expired token, then
    forbidden subscribes, a frame of each) gets MAX_PER_CONNECTION records, then one more saying so."""
    client = await RawClient.open(audited.url, connect_first=False)
    expired = make_token("alice", ttl=-10)
    connects = [Connect(client.next_id(), token=expired) for _ in range(60)]
    await client.send(*connects)
    for connect in connects:
        assert error(await client.reply(connect.id)) == ErrorCode.TOKEN_EXPIRED
    assert (await client.command(Connect(0, token=make_token("alice")))).error is None
    subscribes = [Subscribe(client.next_id(), "dm:#bob") for _ in range(90)]
    await client.send(*subscribes)
    for subscribe in subscribes:
        assert error(await client.reply(subscribe.id)) == ErrorCode.PERMISSION_DENIED
    await client.close()
    assert len(audit_records(audit_file, "auth_failed")) == 60
    assert len(audit_records(audit_file, "forbidden")) == audit.MAX_PER_CONNECTION - 60
    [suppressed] = audit_records(audit_file, "audit_suppressed")
    assert suppressed["conn"] == audit_records(audit_file, "auth_failed")[0]["conn"]
    assert suppressed["user"] == "alice"


async def test_api_calls_and_refusals_are_audited(audited: RunningHub, audit_file: Path) -> None:
    publish = {"channel": "news:x", "data": 1}
    assert await api(audited, "/api/publish", publish, {}) == 401
    assert await api(audited, "/api/publish", publish, {"Authorization": "apikey not-a-key"}) == 401
    assert await api(audited, "/api/revoke", {"user": "bob"}, auth(PUBLISH_ONLY)) == 403
    assert await api(audited, "/api/publish", publish, auth(PUBLISH_ONLY)) == 200
    assert await api(audited, "/api/revoke", {"user": "bob", "before": 1000.5}, auth(ALL)) == 200

    refused = audit_records(audit_file, "api_refused")
    assert [(r["status"], r["reason"], r.get("key")) for r in refused] == [
        (401, "API key required", None),
        (401, "invalid API key", None),
        (403, "the API key does not allow users", "publisher"),
    ]
    assert all(r["remote"] == "127.0.0.1" and r["path"] in ("/api/publish", "/api/revoke") for r in refused)
    calls = audit_records(audit_file, "api_call")
    assert [(r["key"], r["method"], r["path"], r["status"], r.get("user")) for r in calls] == [
        ("publisher", "POST", "/api/publish", 200, None),
        ("backend", "POST", "/api/revoke", 200, "bob"),
    ]
    [revoke] = audit_records(audit_file, "revoke")
    assert (revoke["key"], revoke["user"], revoke["before"], revoke["remote"]) == (
        "backend",
        "bob",
        1000.5,
        "127.0.0.1",
    )


async def test_server_side_disconnects_are_audited(hub_factory: HubFactory, audit_file: Path) -> None:
    hub = await hub_factory(
        audit_log=str(audit_file), api_keys=(ALL,), max_queue_bytes=2000, command_rate=1.0, command_burst=10
    )
    alice = await RawClient.open(hub.url, token=make_token("alice"))
    assert await api(hub, "/api/disconnect", {"user": "alice"}, auth(ALL)) == 200
    assert await closed_code(alice) == CloseCode.FORCE_DISCONNECT
    bob = await RawClient.open(hub.url, token=make_token("bob"))
    assert await api(hub, "/api/disconnect", {"user": "bob", "reconnect": True}, auth(ALL)) == 200
    assert await closed_code(bob) == CloseCode.FORCE_RECONNECT
    slow = await RawClient.open(hub.url, token=make_token("carol"))
    await slow.subscribe("c")
    await slow.send(Publish(slow.next_id(), "c", msgpack.packb("x" * 5000)))  # its own echo overflows the queue
    assert await closed_code(slow) == CloseCode.SLOW
    flood = await RawClient.open(hub.url, token=make_token("dave"))
    for _ in range(3):
        await flood.send(*(Ping(flood.next_id()) for _ in range(10)))
    assert await closed_code(flood) == CloseCode.TOO_MANY_REQUESTS

    records = audit_records(audit_file, "disconnect")
    assert [(r["conn"], r["user"], r["code"]) for r in records] == [
        (alice.client_id, "alice", 4502),
        (bob.client_id, "bob", 4006),
        (slow.client_id, "carol", 4002),
        (flood.client_id, "dave", 4010),
    ]
    calls = audit_records(audit_file, "api_call")
    assert [(r["path"], r["user"], r["reconnect"]) for r in calls] == [
        ("/api/disconnect", "alice", False),
        ("/api/disconnect", "bob", True),
    ]


async def test_routine_ends_are_not_audited(hub_factory: HubFactory, audit_file: Path) -> None:
    """A client closing, an expired token and a shutdown are in the main log only."""
    hub = await hub_factory(audit_log=str(audit_file), token_grace=0.0)
    async with await RawClient.open(hub.url, token=make_token("alice")):
        pass
    expiring = await RawClient.open(hub.url, token=make_token("bob", ttl=2))
    assert await closed_code(expiring) == CloseCode.TOKEN_EXPIRED
    staying = await RawClient.open(hub.url, token=make_token("carol"))
    await hub.stop()
    assert await closed_code(staying) == CloseCode.SHUTDOWN
    assert audit_records(audit_file) == []


async def test_an_audit_file_moved_away_is_reopened(audited: RunningHub, audit_file: Path) -> None:
    """logrotate moves the file and the node goes on in a new one at the same path."""
    for expected in (1, 1):
        client = await RawClient.open(audited.url, connect_first=False)
        await client.send(Connect(client.next_id(), token="not-a-token"))
        assert await closed_code(client) == CloseCode.UNAUTHORIZED
        assert len(audit_records(audit_file, "auth_failed")) == expected
        audit_file.rename(audit_file.with_suffix(".1"))
    assert len(audit_records(audit_file.with_suffix(".1"), "auth_failed")) == 1


async def test_a_refused_origin_is_audited_escaped(hub_factory: HubFactory, audit_file: Path) -> None:
    hub = await hub_factory(audit_log=str(audit_file), allowed_origins=("https://app.example",))
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    agent = "evil\u2028agent\u202e" + "y" * 5000
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Origin: https://evil.example\r\nUser-Agent: " + agent.encode() + b"\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403")
    writer.close()
    [record] = audit_records(audit_file, "upgrade_refused")
    assert (record["reason"], record["origin"], record["remote"]) == (
        "origin not allowed",
        "https://evil.example",
        "127.0.0.1",
    )
    assert record["user_agent"].startswith("evil\\u2028agent\\u202eyyy")
    assert record["user_agent"].endswith(f"...[{len(agent) - MAX_VALUE} more characters]")


async def test_a_refused_host_is_audited(hub_factory: HubFactory, audit_file: Path) -> None:
    """allowed_hosts refusals (421): an upgrade is upgrade_refused, an API request api_refused, each
    naming the Host."""
    hub = await hub_factory(audit_log=str(audit_file), api_keys=(ALL,))
    for request in (
        b"GET /ws HTTP/1.1\r\nHost: evil.example:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Origin: http://evil.example\r\n\r\n",
        b"GET /api/presence?channel=x HTTP/1.1\r\nHost: evil.example\r\nAuthorization: apikey "
        + ALL.key.encode()
        + b"\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 421"), head
        writer.close()
    await until(lambda: len(audit_records(audit_file, "api_refused")) == 1)
    [upgrade] = audit_records(audit_file, "upgrade_refused")
    assert (upgrade["reason"], upgrade["host"], upgrade["origin"]) == (
        "host not allowed",
        "evil.example:8000",
        "http://evil.example",
    )
    [api] = audit_records(audit_file, "api_refused")
    assert (api["status"], api["host"], api["path"], api["method"]) == (421, "evil.example", "/api/presence", "GET")
    assert ALL.key not in audit_file.read_text()


async def test_no_token_key_or_payload_reaches_any_log(
    hub_factory: HubFactory, audit_file: Path, main_log: Callable[[str], io.StringIO]
) -> None:
    out = main_log("json")
    hub = await hub_factory(audit_log=str(audit_file), api_keys=(ALL, PUBLISH_ONLY), namespaces=NAMESPACES)
    marker = "PAYLOAD-MARKER-5e1f"
    forged = make_token("mallory", secret="another-secret-that-is-long-enough-too!!")
    good, other = make_token("alice"), make_token("bob")
    client = await RawClient.open(hub.url, connect_first=False)
    await client.send(Connect(client.next_id(), token=forged))
    assert await closed_code(client) == CloseCode.UNAUTHORIZED
    async with await RawClient.open(hub.url, token=good) as alice:
        await alice.subscribe("news:x")
        await alice.publish("news:x", {"text": marker})
        assert error(await alice.command(Refresh(0, token=other))) == ErrorCode.PERMISSION_DENIED
        reply = await alice.command(Subscribe(0, "dm:#bob", token=other))
        assert error(reply) == ErrorCode.PERMISSION_DENIED
        await alice.publication()
        body = {"channel": "news:x", "data": {"text": marker}}
        assert await api(hub, "/api/publish", body, auth(ALL)) == 200
        assert await api(hub, "/api/revoke", {"user": "bob"}, auth(PUBLISH_ONLY)) == 403
        await alice.publication()
    await until(lambda: bool(lines_with(out, "connection closed id=" + alice.client_id)), what="the close line")

    written = out.getvalue() + audit_file.read_text()
    assert len(audit_records(audit_file)) >= 5  # the run was audited
    assert marker not in written
    for secret in (forged, good, other, ALL.key, PUBLISH_ONLY.key):
        for part in secret.split("."):  # not even one part of a token
            assert part not in written


async def test_audit_into_the_main_log(hub_factory: HubFactory, main_log: Callable[[str], io.StringIO]) -> None:
    """With "-", audit records are in the main log, in its format, even above their level."""
    out = main_log("text")
    logging.getLogger().setLevel(logging.WARNING)  # log_level = "warning": audit records still pass
    hub = await hub_factory(audit_log="-")
    client = await RawClient.open(hub.url, connect_first=False)
    await client.send(Connect(client.next_id(), token="not-a-token"))
    assert await closed_code(client) == CloseCode.UNAUTHORIZED
    [line] = lines_with(out, "realtime.audit")
    assert line.endswith(
        f"INFO realtime.audit: auth_failed conn={client_id_of(line)} remote=127.0.0.1 "
        'reason="malformed token" code=4501'
    )


def client_id_of(line: str) -> str:
    return line.split("conn=")[1].split(" ")[0]


async def test_an_audit_file_is_not_in_the_main_log(
    audited: RunningHub, audit_file: Path, main_log: Callable[[str], io.StringIO]
) -> None:
    out = main_log("json")
    client = await RawClient.open(audited.url, connect_first=False)
    await client.send(Connect(client.next_id(), token="not-a-token"))
    assert await closed_code(client) == CloseCode.UNAUTHORIZED
    await until(lambda: bool(lines_with(out, "connection closed")), what="the close line")
    assert len(audit_records(audit_file, "auth_failed")) == 1
    assert not lines_with(out, "realtime.audit")


async def test_audit_off_writes_nothing(hub_factory: HubFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hub = await hub_factory(audit_log="")
    client = await RawClient.open(hub.url, connect_first=False)
    await client.send(Connect(client.next_id(), token="not-a-token"))
    assert await closed_code(client) == CloseCode.UNAUTHORIZED
    await until(lambda: any("connection closed" in r.getMessage() for r in caplog.records), what="the close line")
    assert not [r for r in caplog.records if r.name == "realtime.audit"]


# --- docs/deploy.md ---------------------------------------------------------------------------------


def deploy_section() -> str:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    start = doc.index("## Logs and audit\n")
    return doc[start : doc.index("\n## ", start + 1)]


def test_the_documented_events_are_the_code_s() -> None:
    documented = re.findall(r"^\| `(\w+)` \| ", deploy_section().split("### The audit log")[1], re.M)
    assert documented == ["event", *audit.EVENTS]  # the header, then one row per event


def test_the_documented_example_lines_are_records() -> None:
    lines = [line for line in deploy_section().splitlines() if line.startswith('{"time"')]
    events = set()
    for line in lines:
        entry = orjson.loads(line)
        assert list(entry)[:5] == ["time", "level", "logger", "message", "node"]
        if entry["logger"] == "realtime.audit":
            assert entry["message"].startswith(entry["event"] + " ")
            events.add(entry["event"])
    assert len(events) >= 6


# --- settings ------------------------------------------------------------------------------------


def test_audit_log_must_be_a_writable_file(tmp_path: Path) -> None:
    assert load_settings(env={"REALTIME_AUDIT_LOG": str(tmp_path / "a.log")}).audit_log == str(tmp_path / "a.log")
    with pytest.raises(ConfigError, match=r"audit_log=.* \(from REALTIME_AUDIT_LOG\): no directory"):
        load_settings(env={"REALTIME_AUDIT_LOG": str(tmp_path / "missing" / "a.log")})
    with pytest.raises(ConfigError, match="this is a directory"):
        load_settings(env={"REALTIME_AUDIT_LOG": str(tmp_path)})


def test_log_format_is_text_or_json() -> None:
    assert load_settings(env={}).log_format == "text"
    with pytest.raises(ConfigError, match=r"log_format=xml .*expected one of text, json"):
        load_settings(env={"REALTIME_LOG_FORMAT": "xml"})


async def test_connection_limits_are_audited(hub_factory: HubFactory, audit_file: Path) -> None:
    """4009 refusals (an address or a user at its limit) are connection_limit records; the user's
    names the user. Connections admitted are not."""
    hub = await hub_factory(audit_log=str(audit_file), max_connections_per_address=3, max_connections_per_user=1)
    alice = make_token("alice")
    held = [await RawClient.open(hub.url, token=alice)]
    assert (await refusal(hub, token=alice))[1] == CloseCode.TOO_MANY_CONNECTIONS
    held.append(await RawClient.open(hub.url))
    held.append(await RawClient.open(hub.url))
    assert (await refusal(hub))[1] == CloseCode.TOO_MANY_CONNECTIONS
    records = audit_records(audit_file, "connection_limit")
    assert [(r["reason"], r.get("user"), r["code"], r["remote"]) for r in records] == [
        ("too many connections for this user", "alice", 4009, "127.0.0.1"),
        ("too many connections from this address", None, 4009, "127.0.0.1"),
    ]
    for client in held:
        await client.close()

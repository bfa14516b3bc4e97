"""docs/protocol.md, read as an outside client developer reads it: raw frames, no code of this repository.

The client here is the ``websockets`` library with ``msgpack`` and ``json``; the hub is a real one with the
quick-start settings. Each test names the statement of the doc it checks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime.config import load_settings

from .helpers import HubFactory, RunningHub, make_token

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART_SECRET = "quickstart-demo-secret-for-trying-the-hub-only"
WAIT = 5.0


@pytest.fixture
async def hub(hub_factory: HubFactory, tmp_path: Path) -> RunningHub:
    """quickstart.toml, with a presence grace short enough to see leaves."""
    toml = (
        (ROOT / "quickstart.toml").read_text().replace("join_leave = true", "join_leave = true\npresence_grace = 0.1")
    )
    (tmp_path / "hub.toml").write_text(toml)
    quick = load_settings(env={}, config_file=tmp_path / "hub.toml")
    fields = {f: getattr(quick, f) for f in quick.__dataclass_fields__ if f not in ("host", "port")}
    return await hub_factory(**fields)


def token(user: str) -> str:
    return make_token(user, secret=QUICKSTART_SECRET)


class Raw:
    """A client written from the doc: one map per message, several per frame, replies matched by id."""

    def __init__(self, ws: ClientConnection, js: bool) -> None:
        self.ws, self.js = ws, js
        self.inbox: list[dict[str, Any]] = []
        self.next_id = 100

    def frame(self, *messages: dict[str, Any]) -> str | bytes:
        if self.js:
            return "\n".join(json.dumps(m) for m in messages)
        return b"".join(msgpack.packb(m) for m in messages)

    async def send(self, *messages: dict[str, Any]) -> None:
        await self.ws.send(self.frame(*messages))

    async def message(self, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for i, m in enumerate(self.inbox):
                    if match(m):
                        return self.inbox.pop(i)
                frame = await self.ws.recv()
                if isinstance(frame, str):
                    self.inbox += [json.loads(line) for line in frame.split("\n") if line.strip()]
                else:
                    unpacker = msgpack.Unpacker(raw=False)
                    unpacker.feed(frame)
                    self.inbox += list(unpacker)

    async def reply(self, id: int) -> dict[str, Any]:
        return await self.message(lambda m: m.get("id") == id and "push" not in m)

    async def push(self, kind: str, **fields: Any) -> dict[str, Any]:
        return await self.message(lambda m: m.get("push") == kind and all(m.get(k) == v for k, v in fields.items()))

    async def cmd(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.send({"id": self.next_id, "cmd": cmd, **fields})
        return await self.reply(self.next_id)

    async def closed(self) -> tuple[dict[str, Any] | None, int]:
        """The Disconnect push (if one came) and the close code the hub sent."""
        with pytest.raises(ConnectionClosed):
            await self.message(lambda m: False)
        pushes = [m for m in self.inbox if m.get("push") == "disconnect"]
        rcvd = self.ws.protocol.close_rcvd
        return (pushes[0] if pushes else None), (rcvd.code if rcvd else 1006)


@pytest.fixture
async def client(hub: RunningHub) -> AsyncIterator[Callable[..., Any]]:
    sockets: list[ClientConnection] = []

    async def open_client(user: str | None = None, *, js: bool = False, connected: bool = True) -> Raw:
        ws = await connect(hub.url, subprotocols=["realtime.v1.json" if js else "realtime.v1.msgpack"])  # type: ignore[list-item]
        sockets.append(ws)
        raw = Raw(ws, js)
        if connected:
            reply = await raw.cmd("connect", **({"token": token(user)} if user else {}))
            assert "result" in reply, reply
        return raw

    yield open_client
    for ws in sockets:
        await ws.close()


async def test_a_command_before_connect_is_4500_with_the_push(client: Callable[..., Any]) -> None:
    """Connecting, 3: any other command before a successful connect closes with 4500."""
    raw = await client(connected=False)
    await raw.send({"id": 1, "cmd": "ping"})
    push, code = await raw.closed()
    assert code == 4500 and push is not None and (push["code"], push["reconnect"]) == (4500, False)


@pytest.mark.parametrize("js", [False, True], ids=["msgpack", "json"])
async def test_frame_rules(client: Callable[..., Any], js: bool) -> None:
    """Frames and batching; Limits: 100 messages a frame, ids, duplicate ids, unknown keys, null optionals."""
    raw = await client(js=js)
    await raw.send(*({"id": i, "cmd": "ping"} for i in range(1, 102)))
    assert (await raw.reply(0))["error"]["code"] == 107
    assert raw.inbox == []  # the whole frame ran nothing
    await raw.send({"id": 2**32, "cmd": "ping"})
    assert (await raw.reply(0))["error"]["code"] == 107
    await raw.send({"id": 7, "cmd": "ping"}, {"id": 7, "cmd": "ping"})
    assert (await raw.reply(7)) == {"id": 7, "result": {}}
    assert (await raw.reply(7))["error"]["code"] == 113
    reply = await raw.cmd("subscribe", channel="news", later={"x": 1}, offset=None, epoch=None)
    assert reply["result"] == {"offset": 0, "epoch": "", "recoverable": True, "recovered": False}
    assert (await raw.cmd("frobnicate"))["error"]["code"] == 104


async def test_the_frame_type_does_not_choose_the_codec(client: Callable[..., Any]) -> None:
    """Frames and batching: a frame is read in the connection's codec, whatever its opcode."""
    mp = await client()
    await mp.ws.send('{"id":1,"cmd":"ping"}')  # a text frame on a MessagePack connection: read as MessagePack
    assert (await mp.reply(0))["error"]["code"] == 107
    js = await client(js=True)
    await js.ws.send(b'{"id":3,"cmd":"ping"}')  # a binary frame on a JSON connection: read as JSON
    assert await js.reply(3) == {"id": 3, "result": {}}


async def test_frame_size_is_inclusive_then_1009_alone(client: Callable[..., Any]) -> None:
    """Frames: a frame of exactly max_frame_size is fine; one byte more closes with 1009, no Disconnect push."""
    raw = await client()
    size = 65536  # quickstart.toml keeps the default max_frame_size
    empty = len(msgpack.packb({"id": 5, "cmd": "publish", "channel": "news", "data": ""}))
    frame = msgpack.packb({"id": 5, "cmd": "publish", "channel": "news", "data": "x" * (size - empty - 2)})
    assert len(frame) == size  # a str 16 header is 2 bytes longer than an empty fixstr's
    await raw.ws.send(frame)
    assert "result" in await raw.reply(5)
    await raw.ws.send(frame + b"\x00")
    assert await raw.closed() == (None, 1009)


async def test_msgpack_data_rules_reject_the_whole_frame(client: Callable[..., Any]) -> None:
    """data values: a non-string map key or an ext type rejects the whole frame (id 0); depth 32 is the limit."""
    raw = await client()
    ping = msgpack.packb({"id": 1, "cmd": "ping"})
    for data in ({1: "a"}, msgpack.ExtType(1, b"x")):
        await raw.ws.send(ping + msgpack.packb({"id": 2, "cmd": "publish", "channel": "news", "data": data}))
        assert (await raw.reply(0))["error"]["code"] == 107
    deep: Any = 1
    for _ in range(32):
        deep = [deep]
    assert "result" in await raw.cmd("publish", channel="news", data=deep)
    assert (await raw.cmd("publish", channel="news", data=[deep]))["error"]["code"] == 107
    assert not any(m.get("id") == 1 for m in raw.inbox)  # the pings of the rejected frames never ran


async def test_json_integers_beyond_64_bits_reject_the_frame(client: Callable[..., Any]) -> None:
    raw = await client(js=True)
    await raw.ws.send('{"id":1,"cmd":"publish","channel":"news","data":18446744073709551616}')
    assert (await raw.reply(0))["error"]["code"] == 107
    await raw.ws.send('{"id":2,"cmd":"publish","channel":"news","data":18446744073709551615}')
    assert "result" in await raw.reply(2)


async def test_chat_publish_result_and_publication_agree(client: Callable[..., Any]) -> None:
    """Replies (publish): chat channels answer mid and time, as in the publication; a repeated key posts nothing."""
    alice = await client("alice")
    await alice.cmd("subscribe", channel="chat:doc")
    reply = await alice.cmd("publish", channel="chat:doc", data={"text": "hi"}, key="k1")
    pub = await alice.push("pub", channel="chat:doc")
    assert set(reply["result"]) == {"offset", "epoch", "mid", "time"}
    assert {k: pub[k] for k in reply["result"]} == reply["result"]
    assert pub["info"]["user"] == "alice"
    assert (await alice.cmd("publish", channel="chat:doc", data="other", key="k1")) == {
        "id": alice.next_id,
        "result": reply["result"],
    }
    assert (await alice.cmd("publish", channel="chat:doc", data=1, key="k" * 65))["error"]["code"] == 107
    await alice.cmd("ping")
    assert not [m for m in alice.inbox if m.get("push") == "pub"]


async def test_anonymous_connections_make_no_join_or_leave(client: Callable[..., Any]) -> None:
    """Join, Leave, presence_stats: anonymous connections are listed, counted as one user "", never announced."""
    alice = await client("alice")
    await alice.cmd("subscribe", channel="chat:anon")
    guests = [await client(), await client()]
    for guest in guests:
        assert "result" in await guest.cmd("subscribe", channel="chat:anon")
    bob = await client("bob")
    await bob.cmd("subscribe", channel="chat:anon")
    # the first join after alice's own is bob's: the guests made none
    assert (await alice.message(lambda m: m.get("push") == "join" and m["user"] != "alice"))["user"] == "bob"
    members = (await alice.cmd("presence", channel="chat:anon"))["result"]["presence"]
    assert sorted(m["user"] for m in members.values()) == ["", "", "alice", "bob"]
    assert (await alice.cmd("presence_stats", channel="chat:anon"))["result"] == {"clients": 4, "users": 3}
    for guest in guests:
        await guest.ws.close()
    await bob.ws.close()
    assert (await alice.push("leave"))["user"] == "bob"  # the guests left first, without a leave


async def test_what_needs_a_subscription_and_what_does_not(client: Callable[..., Any]) -> None:
    """history and presence need the right to subscribe, not a subscription; typing, read, receipts need one."""
    alice = await client("alice")
    assert (await alice.cmd("history", channel="chat:free"))["result"]["publications"] == []
    assert (await alice.cmd("presence", channel="chat:free"))["result"] == {"presence": {}}
    assert (await alice.cmd("history", channel="user:#bob"))["error"]["code"] == 103
    for cmd, fields in (("typing", {}), ("read", {"offset": 0}), ("receipts", {})):
        assert (await alice.cmd(cmd, channel="chat:free", **fields))["error"]["code"] == 112


async def test_anonymous_connections_cannot_ask_status_or_refresh(client: Callable[..., Any]) -> None:
    """status and refresh: for signed-in connections (PERMISSION_DENIED for an anonymous one)."""
    guest = await client()
    assert (await guest.cmd("status", users=["alice"]))["error"]["code"] == 103
    assert (await guest.cmd("refresh", token=token("alice")))["error"]["code"] == 103
    alice = await client("alice")
    assert (await alice.cmd("status", users=["alice"]))["result"]["users"][0]["online"] is True


async def test_typing_and_read_rules(client: Callable[..., Any]) -> None:
    """typing: true at most once per typing_interval (110 with retry_after); read: bounds, CONFLICT, no repeat push."""
    alice = await client("alice")
    await alice.cmd("subscribe", channel="chat:tr")
    for i in range(3):
        await alice.cmd("publish", channel="chat:tr", data=i)
    assert (await alice.cmd("typing", channel="chat:tr"))["result"] == {}
    assert (await alice.push("typing"))["typing"] is True
    refused = await alice.cmd("typing", channel="chat:tr")
    assert refused["error"]["code"] == 110 and refused["error"]["retry_after"] > 0
    assert (await alice.cmd("read", channel="chat:tr", offset=4))["error"]["code"] == 107
    assert (await alice.cmd("read", channel="chat:tr", offset=3))["result"] == {"read": 3}
    assert (await alice.push("read"))["offset"] == 3
    assert (await alice.cmd("read", channel="chat:tr", offset=2))["error"]["code"] == 115
    assert (await alice.cmd("read", channel="chat:tr", offset=3))["result"] == {"read": 3}
    assert (await alice.cmd("receipts", channel="chat:tr"))["result"] == {"receipts": {"alice": 3}}


async def test_live_state_as_documented(client: Callable[..., Any]) -> None:
    """state_set / state_patch / state push, and the subscribe result of a live channel."""
    alice = await client("alice")
    await alice.cmd("subscribe", channel="live:doc")
    assert (await alice.cmd("state_set", channel="live:doc", key="k"))["error"]["code"] == 107  # value required
    value = {"a": 1, "text": "long enough that a patch of a is smaller"}
    assert (await alice.cmd("state_set", channel="live:doc", key="k", value=value))["result"] == {"version": 1}
    assert (await alice.push("state"))["value"] == value
    assert (await alice.cmd("state_patch", channel="live:doc", key="k", patch={"a": 2}))["result"] == {"version": 2}
    assert (await alice.push("state"))["patch"] == {"a": 2}  # smaller than the value: sent as a patch
    assert (await alice.cmd("state_set", channel="live:doc", key="k", value=1, version=1))["error"]["code"] == 115
    bob = await client("bob")
    result = (await bob.cmd("subscribe", channel="live:doc"))["result"]
    assert (result["version"], result["state"]) == (2, [{"key": "k", "value": {**value, "a": 2}, "version": 2}])

"""Data of the server side keeps every map key as sent (docs/protocol.md, "data values").

MessagePack maps may have keys Python holds equal (``1``, ``1.0`` and ``true``;
``0`` and ``false``). Decoded into a dict they would merge, so
``{1: "a", true: "b"}`` reached subscribers as ``{1: "b"}``: the hub relays such
data as sent, and a JSON client gets each key as a string, the last of two keys
that become one string winning.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped]
import orjson
import pytest

from protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from protocol.fields import Pairs, keep_pairs, pack_data, too_deep
from protocol.json_codec import msgpack_to_json
from realtime.auth import ApiKey
from realtime.namespaces import Namespace

from .helpers import HubFactory, RunningHub, namespaces
from .wsclient import TIMEOUT, RawClient

API = ApiKey("backend", "data-keys-secret", frozenset({"*"}))
#: ``{1: "a", true: "b"}``, which no Python dict can hold: written byte by byte.
ONE_AND_TRUE = b"\x82\x01\xa1a\xc3\xa1b"
#: ``{"n": {1: "a", true: "b"}, "list": [{0: "x", false: "y", 1.0: "z"}]}``
NESTED = b"\x82\xa1n" + ONE_AND_TRUE + b"\xa4list\x91\x83\x00\xa1x\xc2\xa1y\xcb" + msgpack.packb(1.0)[1:] + b"\xa1z"
AS_JSON = {"1": "a", "true": "b"}
NESTED_AS_JSON = {"n": AS_JSON, "list": [{"0": "x", "false": "y", "1.0": "z"}]}


def body(fields: dict[str, Any], data_name: str, data: bytes) -> bytes:
    """A msgpack body whose ``data_name`` field is ``data``, spliced in as is."""
    head: bytes = msgpack.packb(fields)
    assert head[0] & 0xF0 == 0x80  # a fixmap: one more field is one more in its header
    name: bytes = msgpack.packb(data_name)
    return bytes((head[0] + 1,)) + head[1:] + name + data


@pytest.fixture
async def api(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(
        api_keys=(API,),
        namespaces=namespaces(Namespace(name="live", kind="live", subscribe="anyone")),
    )


async def frame(client: RawClient) -> bytes:
    """The next frame as sent: the test client's decoder would merge such keys itself."""
    got = await asyncio.wait_for(client.ws.recv(), TIMEOUT)
    return got if isinstance(got, bytes) else got.encode()


async def post(hub: RunningHub, path: str, raw: bytes) -> Any:
    headers = {"Authorization": f"apikey {API.key}", "Content-Type": "application/msgpack"}
    async with aiohttp.ClientSession() as s, s.post(hub.http_url + path, data=raw, headers=headers) as r:
        assert r.status == 200, await r.read()
        return msgpack.unpackb(await r.read())


async def get(hub: RunningHub, path: str, params: dict[str, str], fmt: str) -> bytes:
    headers = {"Authorization": f"apikey {API.key}", "Accept": f"application/{fmt}"}
    async with aiohttp.ClientSession() as s, s.get(hub.http_url + path, params=params, headers=headers) as r:
        assert r.status == 200, await r.read()
        return await r.read()


@pytest.mark.parametrize("data", [ONE_AND_TRUE, NESTED], ids=["top", "nested"])
async def test_an_api_publication_keeps_every_key(api: RunningHub, data: bytes) -> None:
    want_json = AS_JSON if data == ONE_AND_TRUE else NESTED_AS_JSON
    async with (
        await RawClient.open(api.url, subprotocol=MSGPACK_SUBPROTOCOL) as mp,
        await RawClient.open(api.url, subprotocol=JSON_SUBPROTOCOL) as js,
    ):
        await mp.subscribe("news")
        await js.subscribe("news")
        await post(api, "/api/publish", body({"channel": "news"}, "data", data))
        assert data in await frame(mp)  # byte for byte
        assert orjson.loads(await frame(js))["data"] == want_json
    # History keeps them too, in both response formats.
    raw = await get(api, "/api/history", {"channel": "news"}, "msgpack")
    assert data in raw
    page = orjson.loads(await get(api, "/api/history", {"channel": "news"}, "json"))
    assert page["publications"][0]["data"] == want_json


async def test_broadcast_and_state_keep_every_key(api: RunningHub) -> None:
    async with await RawClient.open(api.url, subprotocol=MSGPACK_SUBPROTOCOL) as mp:
        await mp.subscribe("a")
        await mp.subscribe("live:s")
        await post(api, "/api/broadcast", body({"channels": ["a", "b"]}, "data", ONE_AND_TRUE))
        assert ONE_AND_TRUE in await frame(mp)
        await post(api, "/api/state/set", body({"channel": "live:s", "key": "k"}, "value", ONE_AND_TRUE))
        assert ONE_AND_TRUE in await frame(mp)
        await post(api, "/api/state/set", body({"channel": "live:s", "key": "k2"}, "value", NESTED))
        assert NESTED in await frame(mp)
        # The change pushed may be a merge patch: such a map is in it whole (a merge goes by string keys).
        await post(api, "/api/state/set", body({"channel": "live:s", "key": "k2"}, "value", NESTED[:-2] + b"\xa1w"))
        assert NESTED[NESTED.index(b"\x91\x83") : -2] + b"\xa1w" in await frame(mp)  # all three keys
    raw = await get(api, "/api/state", {"channel": "live:s"}, "msgpack")
    assert ONE_AND_TRUE in raw and NESTED[:-2] + b"\xa1w" in raw
    state = orjson.loads(await get(api, "/api/state", {"channel": "live:s"}, "json"))
    last = {"n": AS_JSON, "list": [{"0": "x", "false": "y", "1.0": "w"}]}
    assert {e["key"]: e["value"] for e in state["state"]} == {"k": AS_JSON, "k2": last}


def test_json_keys_are_strings_and_the_last_of_two_equal_ones_wins() -> None:
    """The conversion table of docs/protocol.md, on bytes."""
    assert orjson.loads(msgpack_to_json(ONE_AND_TRUE)) == AS_JSON
    assert orjson.loads(msgpack_to_json(NESTED)) == NESTED_AS_JSON
    one_then_string = b"\x82\x01\xa1a\xa11\xa1b"  # {1: "a", "1": "b"}
    string_then_one = b"\x82\xa11\xa1b\x01\xa1a"  # {"1": "b", 1: "a"}
    assert msgpack_to_json(one_then_string) == b'{"1":"b"}'
    assert msgpack_to_json(string_then_one) == b'{"1":"a"}'
    assert msgpack_to_json(b"\x81\xc0\xc4\x01x") == b'{"null":"eA=="}'


def test_pairs_round_trip_byte_for_byte() -> None:
    value = msgpack.unpackb(NESTED, strict_map_key=False, object_pairs_hook=keep_pairs)
    assert isinstance(value["n"], Pairs)
    assert pack_data(value, "data", 0) == NESTED
    assert keep_pairs([("a", 1), (b"b", 2)]) == {"a": 1, b"b": 2}  # str and bin keys: a dict


#: ``{[1, b"x"]: "a", {"k": 1}: "b"}``: an array key and a map key, which no dict can hold.
CONTAINER_KEYS = b"\x82\x92\x01\xc4\x01x\xa1a\x81\xa1k\x01\xa1b"
CONTAINER_KEYS_AS_JSON = {'[1,"eA=="]': "a", '{"k":1}': "b"}


def test_array_and_map_keys_become_their_json_text() -> None:
    """An array or a map as a key (any MessagePack type may be one) becomes its JSON text: the
    conversion raised ValueError, which took the publication from every subscriber."""
    assert msgpack_to_json(b"\x81\x92\x01\x02\x01") == b'{"[1,2]":1}'  # docs/protocol.md's example
    assert orjson.loads(msgpack_to_json(CONTAINER_KEYS)) == CONTAINER_KEYS_AS_JSON
    nested = b"\x81\xa1n" + CONTAINER_KEYS  # {"n": ...}: the same one level down
    assert orjson.loads(msgpack_to_json(nested)) == {"n": CONTAINER_KEYS_AS_JSON}
    key_of_key = b"\x81\x81\x92\x01\x02\xa1v\xa1w"  # {{[1, 2]: "v"}: "w"}
    assert orjson.loads(msgpack_to_json(key_of_key)) == {'{"[1,2]":"v"}': "w"}


async def test_array_and_map_keys_reach_every_subscriber_and_every_reader(api: RunningHub) -> None:
    """Published through the API, such a map reached nobody (500 after it was stored), and
    the JSON reads of history and state, and a JSON client's subscribe to the live channel,
    failed with an internal error from then on."""
    async with (
        await RawClient.open(api.url, subprotocol=MSGPACK_SUBPROTOCOL) as mp,
        await RawClient.open(api.url, subprotocol=JSON_SUBPROTOCOL) as js,
    ):
        await mp.subscribe("news")
        await js.subscribe("news")
        await post(api, "/api/publish", body({"channel": "news"}, "data", CONTAINER_KEYS))
        assert CONTAINER_KEYS in await frame(mp)
        assert orjson.loads(await frame(js))["data"] == CONTAINER_KEYS_AS_JSON
        await post(api, "/api/state/set", body({"channel": "live:c", "key": "k"}, "value", CONTAINER_KEYS))
        reply = await js.subscribe("live:c")
        assert reply.error is None, reply.error
    page = orjson.loads(await get(api, "/api/history", {"channel": "news"}, "json"))
    assert page["publications"][0]["data"] == CONTAINER_KEYS_AS_JSON
    state = orjson.loads(await get(api, "/api/state", {"channel": "live:c"}, "json"))
    assert state["state"][0]["value"] == CONTAINER_KEYS_AS_JSON


async def test_a_key_counts_in_the_nesting_depth(api: RunningHub) -> None:
    """The depth limit (32) went by values only: a map whose key nested 300 arrays was stored,
    and no JSON client or JSON read could have it (JSON is written 254 levels deep at most)."""
    deep_key = b"\x81" + b"\x91" * 300 + b"\x01\x01"  # {[[[...[1]...]]]: 1}
    value = msgpack.unpackb(deep_key, strict_map_key=False, object_pairs_hook=keep_pairs)
    assert too_deep(value)
    limit_key = b"\x81" + b"\x91" * 31 + b"\x01\x01"  # the map and its key's 31 arrays: 32 levels
    assert not too_deep(msgpack.unpackb(limit_key, strict_map_key=False, object_pairs_hook=keep_pairs))
    headers = {"Authorization": f"apikey {API.key}", "Content-Type": "application/msgpack"}
    async with aiohttp.ClientSession() as s:
        for path, fields, name in [
            ("/api/publish", {"channel": "news"}, "data"),
            ("/api/state/set", {"channel": "live:d", "key": "k"}, "value"),
        ]:
            async with s.post(api.http_url + path, data=body(fields, name, deep_key), headers=headers) as r:
                assert r.status == 400, path
                assert msgpack.unpackb(await r.read())["message"] == f"{name} is nested too deeply"
    await post(api, "/api/publish", body({"channel": "news"}, "data", limit_key))
    page = orjson.loads(await get(api, "/api/history", {"channel": "news"}, "json"))
    assert page["publications"][0]["data"] == {"[" * 31 + "1" + "]" * 31: 1}

"""Auth edges end to end: durable and monotonic revocations, token types, literal grants, user ids
that channels can name, allowed Host headers, and the startup warnings about demo credentials."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.codes import CloseCode, ErrorCode
from protocol.messages import Connect, Subscribe
from realtime.auth import ApiKey
from realtime.config import DEMO_API_KEY, DEMO_TOKEN_SECRET, ConfigError, Settings, load_settings
from realtime.hosts import LOOPBACK_HOSTS, effective_allowed_hosts, host_allowed, host_name
from realtime.namespaces import Namespace
from realtime.publisher import ApiError, Publisher
from realtime.revocations import RevocationFile, RevocationFileError
from realtime.server import HubServer

from .helpers import HubFactory, RunningHub, closed_code, make_token, namespaces, unique_prefix
from .redis_server import RedisServer
from .wsclient import RawClient

ROOT = Path(__file__).resolve().parent.parent
KEY = ApiKey("backend", "edges-api-key", frozenset({"*"}))
NAMESPACES = namespaces(
    Namespace(name="user", subscribe="user", publish="server"),
    Namespace(name="vip", subscribe="token", publish="clients"),
    Namespace(name="files", subscribe="user", publish="server"),
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def refused_at_connect(hub: RunningHub, token: str) -> int:
    """The close code of a connection whose connect carries ``token`` (the hub must close it)."""
    async with await RawClient.open(hub.url, connect_first=False) as c:
        await c.send(Connect(c.next_id(), token=token))
        return await closed_code(c)


async def revoke(hub: RunningHub, user: str, before: float | None = None) -> None:
    async with Publisher(hub.http_url, KEY.key) as pub:
        await pub.revoke(user, before=before)


# --- revocations ---------------------------------------------------------------------------


async def test_a_revocation_survives_a_restart_with_revocations_file(hub_factory: HubFactory, tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    hub = await hub_factory(api_keys=(KEY,), revocations_file=str(path), allow_anonymous=False)
    old = make_token("alice", iat=int(time.time()) - 100)
    await revoke(hub, "alice", before=time.time() - 10)
    assert json.loads(path.read_text())["revoked"]["alice"] == pytest.approx(time.time() - 10, abs=5)
    await hub.stop()
    await hub.start()  # a new app and a fresh memory engine, on the same file
    assert await refused_at_connect(hub, old) == CloseCode.UNAUTHORIZED
    async with await RawClient.open(hub.url, token=make_token("alice")):  # issued after: accepted
        pass
    async with await RawClient.open(hub.url, token=make_token("bob", iat=int(time.time()) - 100)):  # not revoked
        pass


async def test_concurrent_revocations_all_reach_the_file(hub_factory: HubFactory, tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    hub = await hub_factory(api_keys=(KEY,), revocations_file=str(path))
    users = [f"user{i}" for i in range(30)]
    await asyncio.gather(*(hub.hub.revoke(user, 1000.0 + i) for i, user in enumerate(users)))
    assert json.loads(path.read_text())["revoked"] == {user: 1000.0 + i for i, user in enumerate(users)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["revoked.json"]  # no temporary file left


async def test_a_revocation_the_file_cannot_keep_is_503_and_still_in_force(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    path = tmp_path / "revoked.json"
    hub = await hub_factory(api_keys=(KEY,), revocations_file=str(path))
    path.unlink()
    path.mkdir()  # the file cannot be replaced now
    with pytest.raises(ApiError) as info:
        await revoke(hub, "alice")
    assert (info.value.status, info.value.code) == (503, ErrorCode.NOT_AVAILABLE)
    assert ErrorCode(info.value.code).temporary
    assert await refused_at_connect(hub, make_token("alice", iat=int(time.time()) - 10)) == CloseCode.UNAUTHORIZED


async def test_an_unreadable_revocations_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    path.write_text('{"revoked": {"alice": "yesterday"}}')
    server = HubServer(Settings(port=0, revocations_file=str(path)))
    with pytest.raises(RevocationFileError, match=r"invalid revocations_file .*revoked.json: expected"):
        await server.start()
    await server.stop()
    path.write_text("not json")
    with pytest.raises(RevocationFileError, match="not JSON"):
        await RevocationFile(path).load()


async def test_a_missing_revocations_file_is_created_at_start(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    assert await RevocationFile(path).load() == {}
    assert json.loads(path.read_text()) == {"revoked": {}}
    with pytest.raises(RevocationFileError, match="cannot write revocations_file"):
        await RevocationFile(tmp_path / "missing-directory" / "revoked.json").load()


def test_revocations_file_is_for_the_memory_engine() -> None:
    env = {"REALTIME_REDIS": "redis://localhost:6379/0", "REALTIME_REVOCATIONS_FILE": "/tmp/revoked.json"}
    with pytest.raises(ConfigError, match=r"revocations_file .* for the memory engine; Redis keeps revocations"):
        load_settings(env=env)


@pytest.mark.parametrize("engine", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_later_revoke_with_an_earlier_before_never_lowers_it(
    hub_factory: HubFactory, request: pytest.FixtureRequest, engine: str
) -> None:
    options: dict[str, Any] = {}
    if engine == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        options = {"redis": server.url, "redis_prefix": unique_prefix()}
    hub = await hub_factory(api_keys=(KEY,), **options)
    now = time.time()
    token = make_token("alice", iat=int(now) - 50)
    await revoke(hub, "alice", before=now)
    await revoke(hub, "alice", before=now - 100)  # earlier than the token: must not re-admit it
    assert await refused_at_connect(hub, token) == CloseCode.UNAUTHORIZED
    assert float(await hub.hub.engine.kv_get("revoked:alice") or b"0") == now


# --- token types ---------------------------------------------------------------------------


async def test_a_subscription_token_cannot_connect(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=NAMESPACES, allow_anonymous=False)
    sub_token = make_token("alice", channel="vip:lounge")
    assert await refused_at_connect(hub, sub_token) == CloseCode.UNAUTHORIZED
    async with await RawClient.open(hub.url, token=make_token("alice")) as alice:
        await alice.subscribe("vip:lounge", token=sub_token)  # where it belongs, it works


async def test_a_connection_token_cannot_subscribe(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=NAMESPACES, allow_anonymous=False)
    token = make_token("alice")
    async with await RawClient.open(hub.url, token=token) as alice:
        reply = await alice.command(Subscribe(0, "vip:lounge", token=token))
        assert reply.error is not None and reply.error.code == ErrorCode.PERMISSION_DENIED


# --- grants --------------------------------------------------------------------------------


async def test_grants_are_names_or_a_trailing_star_end_to_end(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=NAMESPACES, allow_anonymous=False)
    token = make_token("carol", channels=["files:q?", "files:report[1]", "files:[!a]", "user:*"])
    async with await RawClient.open(hub.url, token=token) as carol:
        for channel in ("files:qX", "files:report1", "files:b"):  # what fnmatch would have admitted
            reply = await carol.command(Subscribe(0, channel))
            assert reply.error is not None and reply.error.code == ErrorCode.PERMISSION_DENIED, channel
        for channel in ("files:q?", "files:report[1]", "files:[!a]", "user:#dave"):
            await carol.subscribe(channel)


# --- user ids ------------------------------------------------------------------------------


async def test_a_user_id_no_channel_can_name_is_refused_at_connect(hub_factory: HubFactory) -> None:
    """carol,eve would be refused her own user:#carol,eve while eve got it: such an id never connects."""
    hub = await hub_factory(namespaces=NAMESPACES, allow_anonymous=False)
    for user in ("carol,eve", "carol eve", "x" * 255):
        assert await refused_at_connect(hub, make_token(user)) == CloseCode.UNAUTHORIZED, user
    async with await RawClient.open(hub.url, token=make_token("carol#1")) as carol:
        await carol.subscribe("user:#carol#1")


# --- allowed hosts -------------------------------------------------------------------------


async def test_a_dns_rebinding_upgrade_is_refused(hub: RunningHub, session: aiohttp.ClientSession) -> None:
    """Host and Origin both the attacker's name: the Origin matches the Host, the Host is not allowed."""
    headers = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(hub.url, headers=headers)
    assert info.value.status == 421
    async with session.get(hub.url, headers={**headers, "Upgrade": "websocket", "Connection": "Upgrade"}) as response:
        assert response.status == 421
        assert response.content_type == "application/json"
        body = await response.read()
    # Byte for byte what protocol.md shows, as compact as every other error map of the hub.
    assert body == b'{"code":107,"message":"host not allowed"}'
    assert f"`{body.decode()}` (JSON)" in (ROOT / "docs" / "protocol.md").read_text()
    for host in ("localhost", f"127.0.0.1:{hub.port}", "[::1]:1", "LOCALHOST."):
        async with session.ws_connect(hub.url, headers={"Host": host, "Origin": f"http://{host}"}) as ws:
            assert not ws.closed


async def test_api_requests_check_the_host(hub_factory: HubFactory, session: aiohttp.ClientSession) -> None:
    hub = await hub_factory(api_keys=(KEY,))
    url = f"{hub.http_url}/api/publish"
    body = {"channel": "news", "data": 1}
    auth = {"Authorization": f"apikey {KEY.key}"}
    async with session.post(url, json=body, headers={**auth, "Host": "evil.example"}) as response:
        assert response.status == 421
        assert await response.json() == {"code": ErrorCode.BAD_REQUEST, "message": "host not allowed"}
    async with session.post(url, json=body, headers=auth) as response:  # Host 127.0.0.1:<port>
        assert response.status == 200
    async with session.get(f"{hub.http_url}/healthz", headers={"Host": "10.0.0.7:8000"}) as response:
        assert response.status == 200  # load balancers probe by address


async def test_allowed_hosts_names_the_hosts(hub_factory: HubFactory, session: aiohttp.ClientSession) -> None:
    hub = await hub_factory(api_keys=(KEY,), allowed_hosts=("hub.example.com", "*.apps.example"))
    auth = {"Authorization": f"apikey {KEY.key}"}
    url = f"{hub.http_url}/api/status?user=a"
    for host, status in [
        ("hub.example.com", 200),
        ("Hub.Example.Com:443", 200),
        ("eu.apps.example", 200),
        ("apps.example", 421),
        ("evilhub.example.com", 421),
        (f"127.0.0.1:{hub.port}", 421),  # the setting replaces the loopback default
    ]:
        async with session.get(url, headers={**auth, "Host": host}) as response:
            assert response.status == status, host


async def test_bound_to_all_interfaces_any_host_is_answered_with_a_warning(
    hub_factory: HubFactory, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime.server"):
        hub = await hub_factory(host="0.0.0.0")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("allowed_hosts is not set and host 0.0.0.0 is not a loopback address") for w in warnings)
    async with session.ws_connect(hub.url, headers={"Host": "phone-lan-name.local"}) as ws:
        assert not ws.closed


def test_host_rules() -> None:
    assert effective_allowed_hosts("127.0.0.1", ()) == LOOPBACK_HOSTS
    assert effective_allowed_hosts("::1", ()) == LOOPBACK_HOSTS
    assert effective_allowed_hosts("localhost", ()) == LOOPBACK_HOSTS
    assert effective_allowed_hosts("0.0.0.0", ()) == ("*",)
    assert effective_allowed_hosts("0.0.0.0", ("a.example",)) == ("a.example",)
    assert host_name("[::1]:8000") == "[::1]" and host_name("A.Example.:80") == "a.example"
    assert not host_allowed(None, LOOPBACK_HOSTS) and not host_allowed("", LOOPBACK_HOSTS)
    assert host_allowed(None, ("*",))
    assert not host_allowed("::1", LOOPBACK_HOSTS)  # an IPv6 Host must be in brackets
    assert not host_allowed("localhost.evil.example", LOOPBACK_HOSTS)


@pytest.mark.parametrize("value", ["hub.example.com:443", "https://hub.example.com", "::1", "a b", "*.", "a*"])
def test_bad_allowed_hosts_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid setting allowed_hosts=.*expected '\*', '\*.example.com'"):
        load_settings(env={"REALTIME_ALLOWED_HOSTS": value})


def test_allowed_hosts_from_a_repeated_flag() -> None:
    settings = load_settings({"allowed_hosts": ["Hub.Example.com", "[::1],*.b.example"]}, env={})
    assert settings.allowed_hosts == ("hub.example.com", "[::1]", "*.b.example")


# --- demo credentials ----------------------------------------------------------------------


def test_the_demo_credentials_are_those_of_quickstart_toml() -> None:
    quick = load_settings(env={}, config_file=ROOT / "quickstart.toml")
    assert quick.token_secret == DEMO_TOKEN_SECRET
    assert [key.key for key in quick.api_keys] == [DEMO_API_KEY]


async def test_startup_warns_of_the_demo_secret_and_key(
    hub_factory: HubFactory, caplog: pytest.LogCaptureFixture
) -> None:
    quick = load_settings(env={}, config_file=ROOT / "quickstart.toml")
    with caplog.at_level(logging.WARNING, logger="realtime.server"):
        await hub_factory(token_secret=quick.token_secret, api_keys=quick.api_keys)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("token_secret is the demo secret published in quickstart.toml") for w in warnings)
    assert any(w.startswith("API key 'quickstart' is the demo key published in quickstart.toml") for w in warnings)
    assert all("\n" not in w for w in warnings)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="realtime.server"):
        await hub_factory(api_keys=(KEY,))  # the test secret, a key of its own
    assert not any("quickstart" in r.getMessage() for r in caplog.records)


async def test_startup_warns_when_revocations_live_in_memory_only(
    hub_factory: HubFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime.server"):
        await hub_factory(api_keys=(KEY,))
    assert any(
        r.getMessage().startswith("revocations (POST /api/revoke) are kept in memory only") for r in caplog.records
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="realtime.server"):
        await hub_factory(api_keys=(KEY,), revocations_file=str(tmp_path / "r.json"))
    assert not any("revocations" in r.getMessage() for r in caplog.records)

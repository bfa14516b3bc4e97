"""The demo chat page (``demo = true``): off by default, its files and headers, its token endpoint.

The page itself, two browsers talking through it, is tested in headless Chromium by
clients/js/test/browser/demo.test.mjs.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from pathlib import Path

import aiohttp
import jwt
import pytest

from protocol.codes import ErrorCode
from protocol.messages import Connect, ConnectResult, Subscribe, Typing
from realtime.auth import TokenVerifier
from realtime.cli import build_parser
from realtime.config import Settings, load_settings
from realtime.demo import CONTENT_TYPES, DIRECTORY, TOKEN_TTL, signing_refused
from realtime.namespaces import Namespace

from .helpers import TEST_SECRET, HubFactory, RunningHub, namespaces
from .wsclient import RawClient

ROOT = Path(__file__).resolve().parent.parent
#: What reverse proxies add to a request they forward (the client's address, the name it asked for).
PROXY_HEADERS = (
    "X-Forwarded-For",
    "Forwarded",
    "X-Real-IP",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "Via",
    "True-Client-IP",
    "CF-Connecting-IP",
    "X-Client-IP",
)
#: The files the page is made of, as index.html names them.
PAGE_FILES = ("demo.css", "demo.js", "realtime.iife.js")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def demo(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(demo=True, namespaces=namespaces(Namespace(name="chat", kind="chat", publish="clients")))


def test_the_demo_is_off_by_default_and_on_with_a_flag_or_variable() -> None:
    assert Settings().demo is False
    assert load_settings(env={}).demo is False
    assert load_settings(env={"REALTIME_DEMO": "true"}).demo is True
    args = build_parser().parse_args(["serve", "--demo"])
    assert args.demo is True


def test_the_readme_command_serves_the_demo_with_the_namespaces_it_needs() -> None:
    """The README's command turns the demo on, and quickstart.toml declares what the page uses."""
    readme = (ROOT / "README.md").read_text()
    command = "realtime serve --config quickstart.toml --demo"
    assert f"```sh\n{command}\n```" in readme
    args = build_parser().parse_args(command.split()[1:])
    settings = load_settings({"demo": args.demo}, env={}, config_file=ROOT / args.config)
    assert settings.demo and settings.token_secret
    chat, live = settings.namespaces.get("chat"), settings.namespaces.get("live")
    assert chat is not None and chat.kind == "chat" and chat.presence and chat.join_leave
    assert chat.publish == "clients"
    assert live is not None and live.kind == "live" and live.client_write
    assert (ROOT / "docs" / "images" / "demo.png").stat().st_size < 150_000


async def test_off_nothing_is_served(hub: RunningHub, session: aiohttp.ClientSession) -> None:
    for path in ("/demo", "/demo/", "/demo/demo.js", "/demo/realtime.iife.js", "/demo/token?user=alice"):
        async with session.get(hub.http_url + path) as response:
            assert response.status == 404, path


async def test_on_the_page_and_its_files_are_served_with_safe_headers(
    demo: RunningHub, session: aiohttp.ClientSession
) -> None:
    for path, content_type in [
        ("/demo", "text/html"),
        ("/demo/", "text/html"),
        ("/demo/demo.js", "text/javascript"),
        ("/demo/demo.css", "text/css"),
        ("/demo/realtime.iife.js", "text/javascript"),
    ]:
        async with session.get(demo.http_url + path) as response:
            assert response.status == 200, path
            assert response.content_type == content_type, path
            assert response.charset == "utf-8"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert response.headers["Cache-Control"] == "no-store"
            policy = response.headers["Content-Security-Policy"]
            body = await response.read()
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"  # no inline script, no other host
        assert directives["connect-src"] == f"'self' ws://127.0.0.1:{demo.port}"
        assert directives["frame-ancestors"] == "'none'"
        name = path.removeprefix("/demo").strip("/") or "index.html"
        assert body == (DIRECTORY / name).read_bytes()


async def test_only_the_page_files_are_served(demo: RunningHub, session: aiohttp.ClientSession) -> None:
    for path in ("/demo/__init__.py", "/demo/missing.js", "/demo/..%2F__init__.py", "/demo/%2E%2E/config.py"):
        async with session.get(demo.http_url + path) as response:
            assert response.status == 404, path


def test_the_page_names_only_files_it_has_and_pip_installs_them() -> None:
    """index.html's scripts and style are in the directory, and pyproject.toml ships every file served."""
    html = (DIRECTORY / "index.html").read_text()
    named = set(re.findall(r'(?:src|href)="/demo/([^"]+)"', html))
    assert named == set(PAGE_FILES)
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    served = [p.name for p in DIRECTORY.iterdir() if p.suffix in CONTENT_TYPES]
    assert {"index.html", *PAGE_FILES} <= set(served)
    for name in served:
        assert any(fnmatch(name, pattern) for pattern in patterns["realtime.demo"]), name


async def test_the_host_check_covers_the_demo(demo: RunningHub, session: aiohttp.ClientSession) -> None:
    """A DNS-rebinding page must not read the demo, nor get a token from it."""
    for path in ("/demo", "/demo/demo.js", "/demo/token?user=alice"):
        async with session.get(demo.http_url + path, headers={"Host": "evil.example"}) as response:
            assert response.status == 421, path


async def test_a_demo_token_signs_a_user_in(demo: RunningHub, session: aiohttp.ClientSession) -> None:
    async with session.get(demo.http_url + "/demo/token?user=alice") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    claims = jwt.decode(body["token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["exp"] == body["expires"]
    assert 0 < claims["exp"] - time.time() <= TOKEN_TTL
    # A signed-in user: the hub lets it type, which an anonymous connection may not.
    async with await RawClient.open(demo.url, connect_first=False) as client:
        reply = await client.command(Connect(0, token=body["token"]))
        assert isinstance(reply.result, ConnectResult)
        assert reply.result.user == "alice"
        assert (await client.command(Subscribe(0, channel="chat:lobby"))).error is None
        assert (await client.command(Typing(0, channel="chat:lobby"))).error is None


async def test_demo_tokens_carry_the_audience_and_issuer_the_hub_checks(
    hub_factory: HubFactory, session: aiohttp.ClientSession
) -> None:
    hub = await hub_factory(demo=True, token_audience="app", token_issuer="https://id.example")
    async with session.get(hub.http_url + "/demo/token?user=bob") as response:
        token = (await response.json())["token"]
    assert TokenVerifier.from_settings(hub.server.settings).verify_connection(token).user == "bob"


async def test_bad_user_names_are_refused(demo: RunningHub, session: aiohttp.ClientSession) -> None:
    for query in ("", "?user=", "?user=a,b", "?user=" + "x" * 33, "?user=al%20ice", "?user=%E2%80%8Balice"):
        async with session.get(demo.http_url + "/demo/token" + query) as response:
            assert response.status == 400, query
            assert (await response.json())["code"] == ErrorCode.BAD_REQUEST


async def test_no_token_without_a_secret_or_through_a_proxy(
    hub_factory: HubFactory, session: aiohttp.ClientSession
) -> None:
    hub = await hub_factory(demo=True, token_secret=None)
    async with session.get(hub.http_url + "/demo/token?user=alice") as response:
        assert response.status == 403
        assert await response.json() == {
            "code": ErrorCode.PERMISSION_DENIED,
            "message": "no token_secret is set: the demo cannot sign users in",
        }
    hub = await hub_factory(demo=True)
    # Every header a reverse proxy adds, alone: nginx, for one, adds none unless told, and
    # a common setup tells it X-Real-IP only (such a request was signed for).
    for header in PROXY_HEADERS:
        async with session.get(hub.http_url + "/demo/token?user=alice", headers={header: "for=203.0.113.7"}) as r:
            assert r.status == 403, header
            assert "proxy" in (await r.json())["message"]
    guide = (ROOT / "docs" / "guide.md").read_text()
    assert all(f"`{header}`" in guide for header in PROXY_HEADERS)  # the guide lists them all


def test_tokens_are_signed_only_on_loopback_for_this_machine() -> None:
    local = Settings(host="127.0.0.1", token_secret=TEST_SECRET)
    assert signing_refused(local, "127.0.0.1", {}) == ""
    assert signing_refused(local, "::1", {}) == ""
    assert signing_refused(Settings(host="localhost", token_secret=TEST_SECRET), "127.0.0.1", {}) == ""
    assert "this machine" in signing_refused(local, "192.168.1.20", {})
    assert "this machine" in signing_refused(local, None, {})
    public = Settings(host="0.0.0.0", token_secret=TEST_SECRET)
    assert signing_refused(public, "127.0.0.1", {}) == (
        "the hub listens on 0.0.0.0: demo tokens are signed only on a loopback address"
    )
    assert "proxy" in signing_refused(local, "127.0.0.1", {"X-Forwarded-For": "198.51.100.1"})

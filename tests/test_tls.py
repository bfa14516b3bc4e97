"""TLS without a proxy: wss:// and https:// with a certificate the test makes, and SIGHUP reloads.

A private CA (``tests/tls.py``) signs the hub's certificate; clients trust that CA only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from pathlib import Path

import aiohttp
import pytest

from realtime.auth import ApiKey
from realtime.client import Client
from realtime.config import ConfigError, load_settings
from realtime.publisher import Publisher
from realtime.server import WS_PATH

from .helpers import WAIT, HubFactory, make_token, start_serve
from .tls import CertAuthority, make_ca, peer_common_name
from .wsclient import RawClient

HOST = "127.0.0.1"
KEY = ApiKey("backend", "tls-test-api-key", frozenset({"*"}))


@pytest.fixture
def ca() -> CertAuthority:
    return make_ca()


async def served_common_name(port: int, context: ssl.SSLContext) -> str:
    """The common name of the certificate a new TLS handshake with the hub gets."""
    _, writer = await asyncio.open_connection(HOST, port, ssl=context, server_hostname=HOST)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return peer_common_name(ssl_object.getpeercert(binary_form=True))
    finally:
        writer.close()


# --- settings ------------------------------------------------------------------------


def test_tls_cert_without_tls_key_is_a_one_line_config_error(ca: CertAuthority, tmp_path: Path) -> None:
    cert, _ = ca.issue(tmp_path, "hub")
    with pytest.raises(ConfigError) as info:
        load_settings(env={"REALTIME_TLS_CERT": str(cert)})
    message = str(info.value)
    assert "\n" not in message
    assert message == f"invalid setting tls_cert={cert} (from REALTIME_TLS_CERT): set tls_cert and tls_key together"


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(ca: CertAuthority, tmp_path: Path) -> None:
    cert, _ = ca.issue(tmp_path, "one")
    _, other_key = ca.issue(tmp_path, "two")
    with pytest.raises(ConfigError, match=r"^invalid setting tls_cert=.* cannot load the certificate and key: "):
        load_settings(env={"REALTIME_TLS_CERT": str(cert), "REALTIME_TLS_KEY": str(other_key)})


def test_a_missing_or_garbled_file_is_a_config_error(ca: CertAuthority, tmp_path: Path) -> None:
    cert, key = ca.issue(tmp_path, "hub")
    with pytest.raises(ConfigError, match=r"^invalid setting tls_key=.* cannot read the file: "):
        load_settings(env={"REALTIME_TLS_CERT": str(cert), "REALTIME_TLS_KEY": str(tmp_path / "missing.key")})
    garbled = tmp_path / "garbled.crt"
    garbled.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^invalid setting tls_cert=.*garbled.crt .*: cannot load"):
        load_settings(env={"REALTIME_TLS_CERT": str(garbled), "REALTIME_TLS_KEY": str(key)})
    assert load_settings(env={"REALTIME_TLS_CERT": str(cert), "REALTIME_TLS_KEY": str(key)}).tls_cert == str(cert)


# --- wss:// and https:// ---------------------------------------------------------


async def test_the_client_connects_over_wss_and_the_api_answers_over_https(
    hub_factory: HubFactory, ca: CertAuthority, tmp_path: Path
) -> None:
    cert, key = ca.issue(tmp_path, "hub")
    hub = await hub_factory(tls_cert=str(cert), tls_key=str(key), api_keys=(KEY,))
    trust = ca.client_context()
    url = f"wss://{HOST}:{hub.port}{WS_PATH}"
    async with Client(url, make_token("alice"), ssl=trust) as client:
        sub = await client.subscribe("news")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as session:
            async with session.get(f"https://{HOST}:{hub.port}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["connections"] == 1
            async with Publisher(f"https://{HOST}:{hub.port}", KEY.key, session=session) as publisher:
                sent = await publisher.publish("news", {"over": "https"})
        async with asyncio.timeout(WAIT):
            message = await anext(aiter(sub))
        assert message.data == {"over": "https"} and message.offset == sent.offset
        assert client.user == "alice"


async def test_a_client_that_does_not_trust_the_certificate_is_refused(
    hub_factory: HubFactory, ca: CertAuthority, tmp_path: Path
) -> None:
    cert, key = ca.issue(tmp_path, "hub")
    hub = await hub_factory(tls_cert=str(cert), tls_key=str(key))
    other = make_ca("another CA").client_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        await RawClient.open(f"wss://{HOST}:{hub.port}{WS_PATH}", ssl=other)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):  # plain HTTP to the TLS port: not served
            async with session.get(f"http://{HOST}:{hub.port}/healthz"):
                pass
    assert hub.server.tls is not None


async def test_reload_serves_the_new_certificate_to_new_handshakes(
    hub_factory: HubFactory, ca: CertAuthority, tmp_path: Path
) -> None:
    cert, key = ca.issue(tmp_path, "hub", common_name="first")
    hub = await hub_factory(tls_cert=str(cert), tls_key=str(key))
    trust = ca.client_context()
    url = f"wss://{HOST}:{hub.port}{WS_PATH}"
    assert await served_common_name(hub.port, trust) == "first"
    async with await RawClient.open(url, ssl=trust) as before:
        new_cert, new_key = ca.issue(tmp_path, "next", common_name="second")
        os.replace(new_cert, cert)
        os.replace(new_key, key)
        assert hub.server.reload_tls()
        assert await served_common_name(hub.port, trust) == "second"
        assert (await before.subscribe("c")).error is None  # open connections keep going

        cert.write_text("broken\n")  # a bad reload keeps the certificate in use
        assert not hub.server.reload_tls()
        assert await served_common_name(hub.port, trust) == "second"


async def test_serve_process_reloads_its_certificate_on_sighup(ca: CertAuthority, tmp_path: Path) -> None:
    cert, key = ca.issue(tmp_path, "hub", common_name="before sighup")
    env = {"REALTIME_ALLOW_ANONYMOUS": "true", "REALTIME_TLS_CERT": str(cert), "REALTIME_TLS_KEY": str(key)}
    proc, port = await start_serve(env=env)
    assert proc.stderr is not None
    try:
        trust = ca.client_context()
        assert await served_common_name(port, trust) == "before sighup"

        new_cert, new_key = ca.issue(tmp_path, "next", common_name="after sighup")
        os.replace(new_cert, cert)
        os.replace(new_key, key)
        proc.send_signal(signal.SIGHUP)
        async with asyncio.timeout(15):
            while b"TLS certificate reloaded" not in await proc.stderr.readline():
                pass
        assert await served_common_name(port, trust) == "after sighup"
        async with await RawClient.open(f"wss://{HOST}:{port}{WS_PATH}", ssl=trust) as client:
            assert client.client_id  # connected over wss:// (uvloop's TLS, in the process)
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await proc.wait()

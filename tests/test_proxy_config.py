"""The [backend] and [proxy] settings and the namespaces' proxy options: read, and refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime.config import ConfigError, Settings, load_settings

SECRET = "backend-secret-0123456789"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "realtime.toml"
    path.write_text(text)
    return load_settings(env=env or {}, config_file=path)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_tables_become_settings(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        f"""
[backend]
secrets = ["{SECRET}"]
timeout = 1.5
format = "msgpack"
breaker_failures = 3
breaker_cooldown = 2

[proxy]
connect = "http://127.0.0.1:9000/realtime/connect"
refresh = "http://127.0.0.1:9000/realtime/refresh"
rpc = "https://backend.example.com/realtime/rpc"
headers = ["Cookie", "Authorization"]

[namespaces.chat]
kind = "chat"
subscribe_proxy = "http://127.0.0.1:9000/realtime/subscribe"
publish_proxy = "http://127.0.0.1:9000/realtime/publish"
proxy_timeout = 0.5
""",
    )
    assert settings.backend_secrets == (SECRET,)
    assert settings.backend_format == "msgpack" and settings.backend_timeout == 1.5
    assert settings.backend_breaker_failures == 3 and settings.backend_breaker_cooldown == 2.0
    assert settings.proxy_connect.endswith("/connect") and settings.proxy_rpc.startswith("https://")
    assert settings.proxy_headers == ("Cookie", "Authorization")
    chat = settings.namespaces["chat"]
    assert chat.publish_proxy.endswith("/publish") and chat.proxy_timeout == 0.5


def test_environment_sets_them_too(tmp_path: Path) -> None:
    settings = load(tmp_path, "", {"REALTIME_BACKEND_SECRETS": SECRET, "REALTIME_PROXY_RPC": "http://127.0.0.1:9/rpc"})
    assert settings.proxy_rpc == "http://127.0.0.1:9/rpc" and settings.backend_secrets == (SECRET,)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[proxy]\nconnect = "http://127.0.0.1:9/c"\n', "proxy_connect (from"),
        ('[namespaces.chat]\npublish_proxy = "http://127.0.0.1:9/p"\n', "namespaces.chat.publish_proxy (from"),
        (f'[backend]\nsecrets = ["{SECRET}"]\n[proxy]\nconect = "x"\n', "did you mean 'proxy_connect'"),
        (f'[backend]\nsecrets = ["{SECRET}"]\n[proxy]\nrpc = "ftp://x"\n', "expected an http:// or https:// URL"),
        ('[backend]\nsecrets = ["short"]\n', "invalid setting backend_secrets=***"),
        ('[backend]\nformat = "xml"\n', "expected one of json, msgpack"),
        ('[namespaces.chat]\nsubscribe_proxy = "nope"\n', "namespaces.chat.subscribe_proxy=nope"),
    ],
)
def test_bad_settings_are_refused_in_one_line(tmp_path: Path, text: str, words: str) -> None:
    message = error(tmp_path, text)
    assert words in message
    assert "short" not in message  # secrets are never shown


def test_a_proxy_without_secrets_names_what_is_missing(tmp_path: Path) -> None:
    assert "backend.secrets is required" in error(tmp_path, '[proxy]\nrpc = "http://127.0.0.1:9/rpc"\n')

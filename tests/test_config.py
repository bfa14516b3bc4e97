"""Settings: precedence of the sources, casts, and one-line errors naming setting and source."""

from __future__ import annotations

import atexit
import dataclasses
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocol.errors import RealtimeError
from realtime.auth import ApiKey, TokenVerifier
from realtime.config import ConfigError, Settings, env_name, flag_name, load_settings
from realtime.namespaces import Namespace, Namespaces

from .helpers import ROOT
from .tls import make_ca

REPO = Path(__file__).resolve().parent.parent
SECRET = "0123456789abcdef0123456789abcdef"
EC_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "realtime.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(**kwargs: Any) -> str:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# Precedence


def test_defaults_without_any_source() -> None:
    assert load_settings(env={}) == Settings()


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALTIME_PORT", "9001")
    assert load_settings().port == 9001


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected"),
    [
        ("4", "3", "2", 4),
        (None, "3", "2", 3),
        (None, None, "2", 2),
        (None, None, None, 8000),
    ],
)
def test_flag_beats_env_beats_file_beats_default(
    tmp_path: Path, flag: str | None, env: str | None, file: str | None, expected: int
) -> None:
    path = write_toml(tmp_path, f"port = {file}\n" if file else "")
    settings = load_settings({"port": flag}, env={"REALTIME_PORT": env} if env else {}, config_file=path)
    assert settings.port == expected


def test_sources_merge_per_setting(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'host = "0.0.0.0"\nport = 1\nhistory_size = 7\n')
    settings = load_settings({"port": "3"}, env={"REALTIME_HISTORY_SIZE": "8"}, config_file=path)
    assert (settings.host, settings.port, settings.history_size) == ("0.0.0.0", 3, 8)


def test_realtime_config_names_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 1234\n")
    assert load_settings(env={"REALTIME_CONFIG": str(path)}).port == 1234


def test_config_argument_beats_realtime_config(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 1234\n")
    assert load_settings(env={"REALTIME_CONFIG": "/nonexistent.toml"}, config_file=path).port == 1234


def test_none_override_counts_as_not_given() -> None:
    assert load_settings({"port": None}, env={"REALTIME_PORT": "7"}).port == 7


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="'prot'"):
        load_settings({"prot": "1"}, env={})


# Casts, one environment variable per field

#: A valid, non-default text value per field, and what it becomes.
_TLS_DIR = Path(tempfile.mkdtemp(prefix="realtime-config-tls-"))
atexit.register(shutil.rmtree, _TLS_DIR, True)
TLS_CERT, TLS_KEY = make_ca().issue(_TLS_DIR, "hub")

TEXT_VALUES: dict[str, tuple[str, object]] = {
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": (" 9000 ", 9000),
    "log_level": ("DEBUG", "debug"),
    "log_format": (" JSON", "json"),
    "audit_log": ("-", "-"),
    "node_name": (" node-1 ", "node-1"),
    "redis": ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    "redis_cluster": (" Yes ", True),
    "redis_prefix": (" app1 ", "app1"),
    "ping_interval": ("2.5", 2.5),
    "connect_timeout": ("3", 3.0),
    "max_frame_size": ("1024", 1024),
    "max_queue_bytes": ("2048", 2048),
    "history_reply_bytes": ("4096", 4096),
    "max_subscriptions": ("5", 5),
    "command_rate": ("2.5", 2.5),
    "command_burst": ("7", 7),
    "receive_rate": ("1000", 1000),
    "receive_burst": ("5000", 5000),
    "allowed_origins": ("https://a.example, https://*.b.example,,*", ("https://a.example", "https://*.b.example", "*")),
    "allowed_hosts": ("Hub.example, *.b.example,,[::1]", ("hub.example", "*.b.example", "[::1]")),
    "drain_window": ("0", 0.0),
    "handshake_timeout": ("2.5", 2.5),
    "http_idle_timeout": ("30", 30.0),
    "http_body_timeout": ("5", 5.0),
    "max_pending_per_address": ("0", 0),
    "max_pending": ("100", 100),
    "backlog": ("512", 512),
    "metrics_port": (" 9100 ", 9100),
    "metrics_host": ("10.0.0.5", "10.0.0.5"),
    "history_size": ("0", 0),
    "history_ttl": ("1e3", 1000.0),
    "publish_id_window": ("0", 0.0),
    "allow_anonymous": (" Yes ", True),
    "demo": ("on", True),
    "token_secret": (SECRET, SECRET),
    "token_public_key": (EC_PEM, EC_PEM),
    "token_audience": ("hub", "hub"),
    "token_issuer": ("https://auth.example", "https://auth.example"),
    "revocations_file": (" /var/lib/realtime/revoked.json ", "/var/lib/realtime/revoked.json"),
    "token_grace": ("0", 0.0),
    "presence_ttl": ("2.5", 2.5),
    "max_connections": ("1000", 1000),
    "max_connections_per_address": ("0", 0),
    "max_connections_per_user": ("5", 5),
    "max_connects_per_second": ("50.5", 50.5),
    "max_connecting": ("200", 200),
    "trusted_proxies": ("10.0.0.1, 192.168.0.0/16,fd00::/8", ("10.0.0.1/32", "192.168.0.0/16", "fd00::/8")),
    "tls_cert": (str(TLS_CERT), str(TLS_CERT)),
    "tls_key": (str(TLS_KEY), str(TLS_KEY)),
    "backend_secrets": (f"{SECRET}, other-secret-0123456789", (SECRET, "other-secret-0123456789")),
    "backend_timeout": ("0.5", 0.5),
    "backend_format": (" MsgPack", "msgpack"),
    "backend_breaker_failures": ("3", 3),
    "backend_breaker_cooldown": ("0", 0.0),
    "proxy_connect": (" http://127.0.0.1:9000/connect ", "http://127.0.0.1:9000/connect"),
    "proxy_refresh": ("https://api.example/refresh", "https://api.example/refresh"),
    "proxy_rpc": ("http://[::1]:9000/rpc", "http://[::1]:9000/rpc"),
    "proxy_headers": ("Cookie, Authorization", ("Cookie", "Authorization")),
}
#: Settings that must be given together, with the partner's value.
PARTNERS: dict[str, tuple[str, str]] = {
    "tls_cert": ("tls_key", str(TLS_KEY)),
    "tls_key": ("tls_cert", str(TLS_CERT)),
    **{proxy: ("backend_secrets", SECRET) for proxy in ("proxy_connect", "proxy_refresh", "proxy_rpc")},
}
#: Settings only the config file sets.
FILE_ONLY = {"namespaces", "api_keys", "events", "push", "backend", "webhooks"}


def test_every_field_has_a_text_value_in_this_test() -> None:
    assert set(TEXT_VALUES) == {f.name for f in dataclasses.fields(Settings)} - FILE_ONLY


@pytest.mark.parametrize("name", TEXT_VALUES)
def test_each_field_from_its_environment_variable(name: str) -> None:
    text, expected = TEXT_VALUES[name]
    partner = {env_name(PARTNERS[name][0]): PARTNERS[name][1]} if name in PARTNERS else {}
    settings = load_settings(env={env_name(name): text, **partner})
    assert getattr(settings, name) == expected
    assert type(getattr(settings, name)) is type(expected)


@pytest.mark.parametrize("name", TEXT_VALUES)
def test_each_field_from_a_flag_as_text(name: str) -> None:
    text, expected = TEXT_VALUES[name]
    partner = {PARTNERS[name][0]: PARTNERS[name][1]} if name in PARTNERS else {}
    assert getattr(load_settings({name: text, **partner}, env={}), name) == expected


def test_names_of_variables_and_flags() -> None:
    assert env_name("ping_interval") == "REALTIME_PING_INTERVAL"
    assert flag_name("ping_interval") == "--ping-interval"
    assert flag_name("allowed_origins") == "--allowed-origin"
    assert flag_name("allowed_hosts") == "--allowed-host"


def test_typed_values_from_toml(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'host = "::1"\nport = 0\nping_interval = 5\nhistory_ttl = 1.5\n'
        'redis = "rediss://cache:6380"\nallowed_origins = ["https://A.example", "*"]\n',
    )
    settings = load_settings(env={}, config_file=path)
    assert settings.host == "::1"
    assert settings.port == 0
    assert settings.ping_interval == 5.0 and isinstance(settings.ping_interval, float)
    assert settings.history_ttl == 1.5
    assert settings.redis == "rediss://cache:6380"
    assert settings.allowed_origins == ("https://a.example", "*")


def test_repeated_flag_list_and_commas_inside_items() -> None:
    origins = ["https://a.example", "https://b.example,https://c.example"]
    settings = load_settings({"allowed_origins": origins}, env={})
    assert settings.allowed_origins == ("https://a.example", "https://b.example", "https://c.example")


def test_empty_list_and_empty_optional() -> None:
    settings = load_settings(env={"REALTIME_ALLOWED_ORIGINS": "", "REALTIME_REDIS": ""})
    assert settings.allowed_origins == ()
    assert settings.redis is None


def test_env_beats_file_even_when_it_clears_a_value(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'redis = "redis://x"\n')
    assert load_settings(env={"REALTIME_REDIS": ""}, config_file=path).redis is None


# Errors: one line, naming the setting, its value and its source


def test_error_is_a_value_error_and_a_realtime_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, RealtimeError)


def test_message_format() -> None:
    message = error_of(env={"REALTIME_PORT": "abc"})
    assert message == "invalid setting port=abc (from REALTIME_PORT): expected an integer"


#: (field, bad text, bad TOML literal, reason)
BAD_VALUES = [
    ("port", "abc", '"abc"', "expected an integer"),
    ("port", "80.5", "80.5", "expected an integer"),
    ("port", "65536", "65536", "expected a port number 0..65535"),
    ("port", "-1", "-1", "expected a port number 0..65535"),
    ("host", " ", '" "', "expected a host name or address"),
    ("log_level", "verbose", '"verbose"', "expected one of debug, info, warning, error"),
    ("redis", "http://localhost", '"http://localhost"', "expected a URL starting with redis://, rediss://, unix://"),
    ("redis_cluster", "2", "2", "expected true or false"),
    ("redis_prefix", "", '""', "expected a non-empty name without braces or spaces"),
    ("redis_prefix", "a{b}", '"a{b}"', "expected a non-empty name without braces or spaces"),
    ("redis_prefix", "a b", '"a b"', "expected a non-empty name without braces or spaces"),
    ("ping_interval", "soon", '"soon"', "expected a number"),
    ("ping_interval", "nan", "nan", "expected a number"),
    ("ping_interval", "inf", "inf", "expected a number"),
    ("ping_interval", "0", "0", "expected a number > 0"),
    ("connect_timeout", "-1", "-1.0", "expected a number > 0"),
    ("max_frame_size", "0", "0", "expected a number > 0"),
    ("max_queue_bytes", "-5", "-5", "expected a number > 0"),
    ("max_subscriptions", "0", "0", "expected a number > 0"),
    ("drain_window", "-0.5", "-0.5", "expected a number >= 0"),
    ("handshake_timeout", "0", "0", "expected a number > 0"),
    ("http_idle_timeout", "-1", "-1.0", "expected a number > 0"),
    ("max_pending_per_address", "-1", "-1", "expected a number >= 0"),
    ("max_pending", "1.5", "1.5", "expected an integer"),
    ("backlog", "0", "0", "expected a number > 0"),
    ("history_size", "-1", "-1", "expected a number >= 0"),
    ("history_ttl", "0", "0", "expected a number > 0"),
    (
        "allowed_origins",
        "example.com",
        '["example.com"]',
        "expected '*' or scheme://host[:port] (no path), got 'example.com'",
    ),
    ("allowed_origins", "https://a.example/", '"https://a.example/"', "got 'https://a.example/'"),
    ("allow_anonymous", "maybe", '"maybe"', "expected true or false"),
    ("token_secret", "short", '"short"', "expected a secret of at least 32 bytes"),
    (
        "token_public_key",
        "/nonexistent/key.pem",
        '"/nonexistent/key.pem"',
        "cannot read the file: No such file or directory",
    ),
    (
        "token_public_key",
        "-----BEGIN PUBLIC KEY-----",
        '"-----BEGIN PUBLIC KEY-----"',
        "expected a PEM public key (RSA or EC)",
    ),
    ("token_grace", "-1", "-1", "expected a number >= 0"),
]


@pytest.mark.parametrize(("name", "text", "literal", "reason"), BAD_VALUES)
def test_bad_value_from_environment(name: str, text: str, literal: str, reason: str) -> None:
    message = error_of(env={env_name(name): text})
    assert message.startswith(f"invalid setting {name}=")
    assert f" (from {env_name(name)}): " in message
    assert message.endswith(reason)


@pytest.mark.parametrize(("name", "text", "literal", "reason"), BAD_VALUES)
def test_bad_value_from_flag(name: str, text: str, literal: str, reason: str) -> None:
    message = error_of(argv_overrides={name: text})
    assert message.startswith(f"invalid setting {name}=")
    assert f" (from {flag_name(name)}): " in message
    assert message.endswith(reason)


@pytest.mark.parametrize(("name", "text", "literal", "reason"), BAD_VALUES)
def test_bad_value_from_file(tmp_path: Path, name: str, text: str, literal: str, reason: str) -> None:
    path = write_toml(tmp_path, f"{name} = {literal}\n")
    message = error_of(config_file=path)
    assert message.startswith(f"invalid setting {name}=")
    assert f" (from {path}): " in message
    assert message.endswith(reason)


@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        ("port = true", "expected an integer"),
        ('port = "8000"', None),  # text is cast as from the environment
        ("host = 1", "expected a string"),
        ("ping_interval = false", "expected a number"),
        ("allowed_origins = [1]", "expected a comma-separated list of strings"),
        ("allowed_origins = 1", "expected a comma-separated list of strings"),
        ("ping_interval = 1e400", "expected a number"),
        ("allow_anonymous = 1", "expected true or false"),
        ("token_secret = 1", "expected a string"),
    ],
)
def test_toml_types(tmp_path: Path, literal: str, reason: str | None) -> None:
    path = write_toml(tmp_path, literal + "\n")
    if reason is None:
        load_settings(env={}, config_file=path)
    else:
        assert error_of(config_file=path).endswith(f"(from {path}): {reason}")


def test_huge_integer_for_a_float_field(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "ping_interval = " + "9" * 400 + "\n")
    message = error_of(config_file=path)
    assert message.endswith("expected a number")
    assert "ping_interval=" + "9" * 77 + "... (from" in message  # the value is cut short


def test_redis_password_is_not_echoed() -> None:
    message = error_of(env={"REALTIME_REDIS": "http://user:s3cret@cache:6379"})
    assert "s3cret" not in message
    assert "redis=http://user:***@cache:6379 (from REALTIME_REDIS)" in message


def test_value_with_line_break_stays_on_one_line() -> None:
    message = error_of(env={"REALTIME_LOG_LEVEL": "info\nforged line"})
    assert message.startswith("invalid setting log_level='info\\nforged line' (from REALTIME_LOG_LEVEL)")


# The config file itself


def test_unknown_key_names_the_key_and_suggests(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "prot = 1\n")
    assert error_of(config_file=path) == f"unknown setting 'prot' in config file {path} (did you mean 'port'?)"


def test_table_is_an_unknown_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nport = 1\n")
    assert error_of(config_file=path) == f"unknown setting 'server' in config file {path}"


def test_missing_file_from_flag(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    message = error_of(config_file=path)
    assert message == f"cannot read config file {path} (from --config): No such file or directory"


def test_missing_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    message = error_of(env={"REALTIME_CONFIG": str(path)})
    assert message == f"cannot read config file {path} (from REALTIME_CONFIG): No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert error_of(config_file=tmp_path).startswith(f"cannot read config file {tmp_path} (from --config): ")


def test_empty_realtime_config_reads_no_file() -> None:
    assert load_settings(env={"REALTIME_CONFIG": ""}) == Settings()


def test_malformed_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = \n")
    message = error_of(config_file=path)
    assert message.startswith(f"invalid config file {path} (from --config): ")
    assert "line 1" in message


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'host = "caf\xe9"\n')
    assert error_of(config_file=path) == f"invalid config file {path} (from --config): not UTF-8 text"


def test_file_errors_come_before_environment_errors(tmp_path: Path) -> None:
    """The file is read first; a broken file is reported even when the environment is fine."""
    path = write_toml(tmp_path, "nope = 1\n")
    assert "'nope'" in error_of(env={"REALTIME_PORT": "1"}, config_file=path)


# Booleans


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("ON", True), ("1", True), ("no", False), ("0", False)])
def test_booleans_from_text(text: str, expected: bool) -> None:
    assert load_settings(env={"REALTIME_ALLOW_ANONYMOUS": text}).allow_anonymous is expected


def test_boolean_from_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "allow_anonymous = true\n")
    assert load_settings(env={}, config_file=path).allow_anonymous is True


# Token keys


def test_secret_is_never_shown() -> None:
    message = error_of(env={"REALTIME_TOKEN_SECRET": "hunter2"})
    assert message == (
        "invalid setting token_secret=*** (from REALTIME_TOKEN_SECRET): expected a secret of at least 32 bytes"
    )
    assert "hunter2" not in repr(load_settings(env={"REALTIME_TOKEN_SECRET": "hunter2" * 5}))


def test_public_key_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text(EC_PEM)
    settings = load_settings(env={"REALTIME_TOKEN_PUBLIC_KEY": str(key_file)})
    assert settings.token_public_key == EC_PEM
    assert TokenVerifier.from_settings(settings).algorithms == ("ES256",)


def test_public_key_file_from_toml(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text(EC_PEM)
    path = write_toml(tmp_path, f'token_public_key = "{key_file}"\n')
    assert load_settings(env={}, config_file=path).token_public_key == EC_PEM


def test_public_key_inline_in_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, f'token_public_key = """\n{EC_PEM}"""\n')
    assert load_settings(env={}, config_file=path).token_public_key == EC_PEM


def test_public_key_on_one_line_with_escaped_newlines() -> None:
    one_line = EC_PEM.strip().replace("\n", "\\n")
    assert load_settings(env={"REALTIME_TOKEN_PUBLIC_KEY": one_line}).token_public_key == EC_PEM


def test_public_key_file_that_is_not_a_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text("hello\n")
    message = error_of(env={"REALTIME_TOKEN_PUBLIC_KEY": str(key_file)})
    assert message == (
        f"invalid setting token_public_key={key_file} (from REALTIME_TOKEN_PUBLIC_KEY): expected a PEM public key (RSA or EC)"
    )


def test_public_key_file_that_is_not_text(tmp_path: Path) -> None:
    key_file = tmp_path / "key.der"
    key_file.write_bytes(b"\x30\x82\xff")
    assert error_of(env={"REALTIME_TOKEN_PUBLIC_KEY": str(key_file)}).endswith(": the file is not PEM text")


# Namespaces


def test_without_namespaces_there_is_one_default_namespace(tmp_path: Path) -> None:
    assert Settings().namespaces == {"": Namespace()}
    assert load_settings(env={}, config_file=write_toml(tmp_path, "port = 1\n")).namespaces == {"": Namespace()}
    assert load_settings(env={}, config_file=write_toml(tmp_path, "[namespaces]\n")).namespaces == {"": Namespace()}


def test_namespaces_from_toml(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
[namespaces.default]
subscribe = "anyone"
publish = "clients"
history_size = 10

[namespaces.chat]
kind = "chat"
presence = true
history_ttl = 60
typing_timeout = 3

[namespaces.live]
kind = "live"
client_write = true
max_rate = 10
""",
    )
    settings = load_settings(env={}, config_file=path)
    assert isinstance(settings.namespaces, Namespaces)
    assert dict(settings.namespaces) == {
        "": Namespace("", subscribe="anyone", publish="clients", history_size=10),
        "chat": Namespace("chat", kind="chat", presence=True, history_ttl=60.0, typing_timeout=3.0),
        "live": Namespace("live", kind="live", client_write=True, max_rate=10.0),
    }
    hash(settings)  # settings stay hashable


def test_namespaces_without_a_default(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[namespaces.chat]\n")
    assert dict(load_settings(env={}, config_file=path).namespaces) == {"chat": Namespace("chat")}


def test_unknown_namespace_option(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[namespaces.chat]\npresense = true\n")
    assert error_of(config_file=path) == (
        f"unknown setting 'namespaces.chat.presense' in config file {path} (did you mean 'namespaces.chat.presence'?)"
    )


def test_namespace_name_is_not_an_option(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[namespaces.chat]\nname = "x"\n')
    assert error_of(config_file=path).startswith("unknown setting 'namespaces.chat.name' in config file")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[namespaces.chat]\nkind = "room"',
            "invalid setting namespaces.chat.kind=room (from {path}): expected one of plain, chat, live, status",
        ),
        (
            "[namespaces.default]\nhistory_size = -1",
            "invalid setting namespaces.default.history_size=-1 (from {path}): expected a number >= 0",
        ),
        (
            "[namespaces.chat]\npresence = 1",
            "invalid setting namespaces.chat.presence=1 (from {path}): expected true or false",
        ),
        (
            '[namespaces."a:b"]',
            "invalid setting namespaces.a:b (from {path}): expected letters, digits, '_', '.' or '-' (no ':' or '#')",
        ),
        ('[namespaces.""]', "invalid setting namespaces.'' (from {path}): name the default namespace 'default'"),
        ("namespaces = 1", "invalid setting namespaces (from {path}): expected [namespaces.NAME] tables"),
        ("namespaces = { chat = 1 }", "invalid setting namespaces (from {path}): expected [namespaces.NAME] tables"),
    ],
)
def test_bad_namespaces(tmp_path: Path, toml: str, message: str) -> None:
    path = write_toml(tmp_path, toml + "\n")
    assert error_of(config_file=path) == message.format(path=path)


def test_namespaces_cannot_come_from_the_environment() -> None:
    assert error_of(env={"REALTIME_NAMESPACES": "chat"}) == (
        "setting namespaces cannot come from REALTIME_NAMESPACES: set it in the config file"
    )
    assert "REALTIME_API_KEYS" in error_of(env={"REALTIME_API_KEYS": "x"})


def test_namespaces_cannot_come_from_flags() -> None:
    with pytest.raises(TypeError, match="comes only from the config file"):
        load_settings({"namespaces": {}}, env={})


# API keys


def test_api_keys_from_toml(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
[[api_keys]]
name = "backend"
key = "k-backend"
scopes = ["publish", "history"]

[[api_keys]]
name = "admin"
key = "k-admin"
scopes = ["*"]
""",
    )
    assert load_settings(env={}, config_file=path).api_keys == (
        ApiKey("backend", "k-backend", frozenset({"publish", "history"})),
        ApiKey("admin", "k-admin", frozenset({"*"})),
    )


def test_api_key_from_the_environment(tmp_path: Path) -> None:
    env_key = ApiKey("env", "k-env", frozenset({"*"}))
    assert load_settings(env={"REALTIME_API_KEY": " k-env "}).api_keys == (env_key,)
    assert load_settings(env={"REALTIME_API_KEY": ""}).api_keys == ()
    path = write_toml(tmp_path, '[[api_keys]]\nname = "a"\nkey = "k-a"\nscopes = ["users"]\n')
    keys = load_settings(env={"REALTIME_API_KEY": "k-env"}, config_file=path).api_keys
    assert keys == (ApiKey("a", "k-a", frozenset({"users"})), env_key)


def test_environment_api_key_clashes(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[[api_keys]]\nname = "env"\nkey = "k-a"\nscopes = ["*"]\n')
    assert error_of(env={"REALTIME_API_KEY": "k-b"}, config_file=path) == (
        "invalid setting api_keys[1] (from REALTIME_API_KEY): api_keys[0] has the same name env"
    )
    message = error_of(env={"REALTIME_API_KEY": "k-a"}, config_file=write_toml(tmp_path, API_KEY_A))
    assert message == "invalid setting api_keys[1] (from REALTIME_API_KEY): api_keys[0] has the same key"


API_KEY_A = '[[api_keys]]\nname = "a"\nkey = "k-a"\nscopes = ["publish"]\n'


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[[api_keys]]\nname = "a"\nkey = "k"\nscopes = ["publsh"]',
            "invalid setting api_keys[0].scopes=publsh (from {path}): unknown scope 'publsh': expected publish, history, presence, state, users, metrics or *",
        ),
        (
            '[[api_keys]]\nname = "a"\nkey = "k"\nscopes = []',
            "invalid setting api_keys[0].scopes='' (from {path}): expected at least one of publish, history, presence, state, users, metrics, *",
        ),
        (
            '[[api_keys]]\nname = "a"\nkey = "k"\nscopes = "*"',
            "invalid setting api_keys[0].scopes=* (from {path}): expected a list of strings",
        ),
        (
            '[[api_keys]]\nname = "a"\nkey = ""\nscopes = ["*"]',
            "invalid setting api_keys[0].key (from {path}): expected a non-empty string",
        ),
        ('[[api_keys]]\nname = "a"\nkey = "k"', "invalid setting api_keys[0] (from {path}): missing 'scopes'"),
        (
            '[[api_keys]]\nname = "a"\nkey = "k"\nscope = ["*"]',
            "unknown setting 'api_keys[0].scope' in config file {path} (did you mean 'api_keys[0].scopes'?)",
        ),
        (
            API_KEY_A + '[[api_keys]]\nname = "a"\nkey = "k-b"\nscopes = ["*"]',
            "invalid setting api_keys[1] (from {path}): api_keys[0] has the same name a",
        ),
        (
            API_KEY_A + '[[api_keys]]\nname = "b"\nkey = "k-a"\nscopes = ["*"]',
            "invalid setting api_keys[1] (from {path}): api_keys[0] has the same key",
        ),
        ("api_keys = 1", "invalid setting api_keys (from {path}): expected [[api_keys]] tables"),
        ("[api_keys]", "invalid setting api_keys (from {path}): expected [[api_keys]] tables"),
    ],
)
def test_bad_api_keys(tmp_path: Path, toml: str, message: str) -> None:
    path = write_toml(tmp_path, toml + "\n")
    assert error_of(config_file=path) == message.format(path=path)


def test_api_key_is_never_shown(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[[api_keys]]\nname = "a"\nkey = "k-secret-value"\nscopes = ["nope"]\n')
    assert "k-secret-value" not in error_of(config_file=path)
    path = write_toml(tmp_path, API_KEY_A)
    assert "k-a" not in repr(load_settings(env={}, config_file=path))


# The quickstart file


def test_quickstart_toml() -> None:
    settings = load_settings(env={}, config_file=REPO / "quickstart.toml")
    assert settings.allow_anonymous
    assert TokenVerifier.from_settings(settings).algorithms == ("HS256",)
    namespaces = settings.namespaces
    assert set(namespaces) == {"", "chat", "live", "user", "status"}
    assert namespaces[""] == Namespace(
        "", kind="plain", subscribe="anyone", publish="clients", history_size=100, history_ttl=300
    )
    chat = namespaces["chat"]
    assert (chat.kind, chat.subscribe, chat.publish, chat.presence, chat.join_leave) == (
        "chat",
        "anyone",
        "clients",
        True,
        True,
    )
    assert (chat.history_size, chat.history_ttl) == (1000, 86400.0)
    live = namespaces["live"]
    assert (live.kind, live.subscribe, live.client_write) == ("live", "anyone", True)
    assert (namespaces["user"].subscribe, namespaces["user"].publish) == ("user", "server")
    status = namespaces["status"]
    assert (status.kind, status.subscribe, status.publish, status.presence_grace) == (
        "status",
        "authenticated",
        "server",
        5.0,
    )
    (key,) = settings.api_keys
    assert (key.name, key.key, key.scopes) == ("quickstart", "quickstart-key", frozenset({"*"}))


def test_redis_cluster_and_prefix_from_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'redis = "redis://node1:7000"\nredis_cluster = true\nredis_prefix = "chat"\n')
    settings = load_settings(env={}, config_file=path)
    assert (settings.redis, settings.redis_cluster, settings.redis_prefix) == ("redis://node1:7000", True, "chat")
    assert (Settings().redis_cluster, Settings().redis_prefix) == (False, "rt")


def test_an_option_checked_against_its_default_is_named(tmp_path: Path) -> None:
    """typing_interval above the default typing_timeout: the error names the option, not a KeyError."""
    config = write_toml(tmp_path, '[namespaces.chat]\nkind = "chat"\ntyping_interval = 10\n')
    assert "namespaces.chat.typing_timeout=6.0" in error_of(config_file=config)


@pytest.mark.parametrize("scopes", ["true", "5", '"publish"'])
def test_api_key_scopes_must_be_a_list(tmp_path: Path, scopes: str) -> None:
    config = write_toml(tmp_path, f'[[api_keys]]\nname = "backend"\nkey = "k"\nscopes = {scopes}\n')
    assert "api_keys[0].scopes" in error_of(config_file=config)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            {"redis": "redis://127.0.0.1:abc/0"},
            "invalid setting redis=redis://127.0.0.1:abc/0 (from --redis): not a valid Redis URL",
        ),
        ({"redis": "unix:///tmp/redis.sock", "redis_cluster": True}, "redis_cluster=true (from --redis-cluster)"),
    ],
)
def test_redis_urls_the_engine_could_not_use_are_refused(overrides: dict[str, Any], words: str) -> None:
    assert words in error_of(argv_overrides=overrides)


def test_every_setting_is_in_the_readme_table() -> None:
    """The README's settings table names every field of Settings (an operator reads only it)."""
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert {f.name for f in dataclasses.fields(Settings)} - named == set()

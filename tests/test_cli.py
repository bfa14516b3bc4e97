"""The ``realtime`` command line, and the logging it sets up.

The server itself is not started here (tests/test_serve_process.py does that):
where ``serve`` gets past its settings, ``realtime.server`` is replaced by a
module whose ``run`` records the settings it was given.
"""

from __future__ import annotations

import importlib.abc
import logging
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from realtime.cli import main
from realtime.config import Settings
from realtime.logs import setup_logging

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m realtime *args`` in a clean environment (no REALTIME_* from the caller)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "realtime", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=ROOT,
        timeout=30,
    )


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("REALTIME_"):
            monkeypatch.delenv(name)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored afterwards: setup_logging changes process-wide state."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch, root_logger: logging.Logger) -> list[Settings]:
    """Replaces ``realtime.server`` so that ``serve`` returns at once; returns the settings run got."""
    calls: list[Settings] = []
    module = types.ModuleType("realtime.server")
    module.run = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "realtime.server", module)
    return calls


# Help and usage


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out


def test_serve_help_lists_every_flag_with_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--config",
        "--log-level",
        "--redis",
        "--ping-interval",
        "--drain-window",
        "--max-frame-size",
        "--allowed-origin",
    ):
        assert flag in out
    assert "REALTIME_PORT" in out and "REALTIME_ALLOWED_ORIGINS" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert re.fullmatch(r"realtime \d+\.\d+\.\d+\n", capsys.readouterr().out)


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: realtime" in capsys.readouterr().err


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--prot", "1"]) == 2
    assert "unrecognized arguments: --prot" in capsys.readouterr().err


def test_flag_without_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port"]) == 2
    assert "--port" in capsys.readouterr().err


# Configuration errors: one line, exit status 2


def test_bad_flag_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "abc"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "realtime: invalid setting port=abc (from --port): expected an integer\n"
    assert captured.out == ""


def test_bad_environment_value(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REALTIME_PING_INTERVAL", "0")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (
        "realtime: invalid setting ping_interval=0 (from REALTIME_PING_INTERVAL): expected a number > 0\n"
    )


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.toml"
    assert main(["serve", "--config", str(path)]) == 2
    assert (
        capsys.readouterr().err
        == f"realtime: cannot read config file {path} (from --config): No such file or directory\n"
    )


# serve hands the settings to realtime.server.run


def test_serve_passes_flags_env_and_file_to_run(
    fake_run: list[Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "realtime.toml"
    config.write_text("history_size = 3\nport = 1\n")
    monkeypatch.setenv("REALTIME_CONNECT_TIMEOUT", "2")
    status = main(
        [
            "serve",
            "--config",
            str(config),
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--log-level",
            "warning",
            "--redis",
            "redis://localhost:6379",
            "--ping-interval",
            "5",
            "--drain-window",
            "0",
            "--max-frame-size",
            "4096",
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "*",
        ]
    )
    assert status == 0
    assert fake_run == [
        Settings(
            host="0.0.0.0",
            port=9000,
            log_level="warning",
            redis="redis://localhost:6379",
            ping_interval=5.0,
            connect_timeout=2.0,
            max_frame_size=4096,
            allowed_origins=("https://a.example", "*"),
            drain_window=0.0,
            history_size=3,
        )
    ]


def test_redis_cluster_is_a_switch(fake_run: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--redis", "redis://node1:7000", "--redis-cluster"]) == 0
    assert fake_run == [Settings(redis="redis://node1:7000", redis_cluster=True)]
    assert main(["serve", "--help"]) == 0
    assert "--redis-cluster " in capsys.readouterr().out  # no value after it


def test_serve_without_flags_runs_the_defaults(fake_run: list[Settings]) -> None:
    assert main(["serve"]) == 0
    assert fake_run == [Settings()]


def test_serve_sets_up_logging_at_the_configured_level(fake_run: list[Settings], root_logger: logging.Logger) -> None:
    assert main(["serve", "--log-level", "debug"]) == 0
    assert root_logger.level == logging.DEBUG


def test_serve_sets_up_the_json_log_format(
    fake_run: list[Settings],
    root_logger: logging.Logger,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REALTIME_NODE_NAME", "node-7")
    assert main(["serve", "--log-format", "json", "--audit-log", "-"]) == 0
    assert (fake_run[0].log_format, fake_run[0].audit_log) == ("json", "-")
    logging.getLogger("realtime.test").warning("hello %s", "world")
    entry = orjson.loads(capsys.readouterr().err.splitlines()[-1])
    assert {k: entry[k] for k in ("level", "logger", "message", "node")} == {
        "level": "WARNING",
        "logger": "realtime.test",
        "message": "hello world",
        "node": "node-7",
    }


# As a real process


def test_module_help_exits_0() -> None:
    proc = run_module("serve", "--help")
    assert proc.returncode == 0
    assert "--allowed-origin" in proc.stdout


def test_module_without_command_exits_2() -> None:
    proc = run_module()
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: realtime")


def test_module_bad_flag_value_prints_one_line_and_exits_2() -> None:
    proc = run_module("serve", "--port", "abc")
    assert proc.returncode == 2
    assert proc.stderr == "realtime: invalid setting port=abc (from --port): expected an integer\n"
    assert proc.stdout == ""


def test_module_audit_log_in_a_missing_directory_exits_2(tmp_path: Path) -> None:
    proc = run_module("serve", "--audit-log", str(tmp_path / "missing" / "audit.log"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("realtime: invalid setting audit_log=") and "no directory" in proc.stderr


def test_module_bad_environment_value_exits_2() -> None:
    proc = run_module("serve", REALTIME_LOG_LEVEL="loud")
    assert proc.returncode == 2
    assert proc.stderr == (
        "realtime: invalid setting log_level=loud (from REALTIME_LOG_LEVEL): "
        "expected one of debug, info, warning, error\n"
    )


# Logging


LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) ([\w.]+): (.*)")


def test_log_line_has_time_level_logger_and_message(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("info")
    logging.getLogger("realtime.test").info("listening on %s", "port 1")
    logging.getLogger("realtime.test").debug("not shown")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    match = LINE.fullmatch(lines[0])
    assert match is not None
    assert match.groups() == ("INFO", "realtime.test", "listening on port 1")


def test_line_breaks_in_messages_are_escaped(root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("warning")
    logging.getLogger("realtime.test").warning("bad channel %r", "a\nINFO forged")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("realtime.test: bad channel 'a\\nINFO forged'")


def test_setup_twice_keeps_one_handler(root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    setup_logging("error")
    logging.getLogger("realtime.test").error("once")
    logging.getLogger("realtime.test").warning("filtered")
    assert capsys.readouterr().err.count("once") == 1


def test_setup_refuses_unknown_level(root_logger: logging.Logger) -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        setup_logging("verbose")


def test_token_command_signs_with_the_configured_secret(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import jwt as pyjwt

    config = tmp_path / "hub.toml"
    secret = "a-secret-for-the-token-command-test-0123456789"
    config.write_text(f'token_secret = "{secret}"\n')
    assert main(["token", "alice", "--config", str(config), "--info", '{"name": "Alice"}', "--channel", "live:*"]) == 0
    claims = pyjwt.decode(capsys.readouterr().out.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["info"] == {"name": "Alice"} and claims["channels"] == ["live:*"]
    assert claims["exp"] - claims["iat"] == 3600


def test_token_command_without_a_secret_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    assert main(["token", "alice", "--config", str(config)]) == 2
    assert "no token_secret" in capsys.readouterr().err


def test_a_bad_redis_url_is_one_line_and_exit_2() -> None:
    done = run_module("serve", "--port", "0", "--redis", "redis://127.0.0.1:abc/0")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "redis" in done.stderr


def test_token_carries_the_audience_and_issuer_the_hub_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.auth import TokenVerifier
    from realtime.config import load_settings

    config = tmp_path / "hub.toml"
    config.write_text(
        'token_secret = "0123456789abcdef0123456789abcdef"\n'
        'token_audience = "mobile"\ntoken_issuer = "https://auth.example.com"\n'
    )
    assert main(["token", "alice", "--config", str(config)]) == 0
    token = capsys.readouterr().out.strip()
    verifier = TokenVerifier.from_settings(load_settings(env={}, config_file=config))
    assert verifier.verify_connection(token).user == "alice"


@pytest.mark.parametrize("ttl", ["nan", "inf", "0", "-5", "soon"])
def test_token_ttl_must_be_seconds_above_0(capsys: pytest.CaptureFixture[str], ttl: str) -> None:
    assert main(["token", "alice", "--ttl", ttl]) == 2
    assert "--ttl: expected seconds above 0" in capsys.readouterr().err


class _InterruptImport(importlib.abc.MetaPathFinder):
    """^C while ``realtime.server`` (aiohttp) is still being imported."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "realtime.server":
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_starting_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "realtime.server", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_InterruptImport(), *sys.meta_path])
    assert main(["serve"]) == 130

"""What the chat, presence and live load-test tests take from docs/loadtest.md: the hub's TOML and the
``loadtest-example`` commands, run at tiny sizes, so that the documented config and commands work."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

from realtime.config import load_settings
from realtime.namespaces import Namespaces

DOC = Path(__file__).resolve().parent.parent / "docs" / "loadtest.md"


def _block(marker: str, lang: str, after: int = 0) -> tuple[str, int]:
    """The text of the first ```lang block right after ``<!-- marker -->``, from ``after`` on."""
    text = DOC.read_text()
    found = re.compile(rf"<!-- {marker} -->\n```{lang}\n(.*?)```", re.S).search(text, after)
    assert found, f"no {marker} {lang} block in {DOC.name}"
    return found.group(1), found.end()


def hub_toml() -> str:
    return _block("loadtest-hub", "toml")[0]


def secret() -> str:
    found = re.search(r'^token_secret = "(.*)"$', hub_toml(), re.M)
    assert found
    return found.group(1)


def hub_settings(tmp_path: Path, **namespace_options: dict[str, Any]) -> dict[str, Any]:
    """The documented hub's settings, as ``hub_factory`` overrides (its own host and port, no
    drain), with ``namespace_options`` (name -> options) changed for a quick test."""
    path = tmp_path / "loadtest-hub.toml"
    path.write_text(hub_toml())
    settings = load_settings(config_file=path, env={})
    namespaces = [dataclasses.replace(ns, **namespace_options.get(ns.name, {})) for ns in settings.namespaces.values()]
    overrides = {
        f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name not in ("host", "port")
    }
    overrides.update(namespaces=Namespaces(namespaces), drain_window=0.0)
    return overrides


def example(scenario: str, url: str, **flags: object) -> list[str]:
    """The arguments of the documented ``realtime loadtest SCENARIO`` example (after ``loadtest``),
    with ``--url`` set to ``url`` and each of ``flags`` (``users=3`` -> ``--users 3``) set or added."""
    start = DOC.read_text().index(f"### {scenario}\n")
    console, _ = _block("loadtest-example", "console", start)
    argv = shlex.split(console.replace("\\\n", " "))
    assert argv[:4] == ["$", "realtime", "loadtest", scenario], argv
    args = argv[3:]
    for name, value in {"url": url, **flags}.items():
        flag = "--" + name.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = str(value)
        else:
            args += [flag, str(value)]
    return args

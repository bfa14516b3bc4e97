"""The hub TOML of docs/loadtest.md for the chat, presence and live scenarios, which their tests load, so
that the documented config is the one that works (the examples come through tests.test_loadtest.doc_example)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from realtime.config import load_settings
from realtime.namespaces import Namespaces

DOC = Path(__file__).resolve().parent.parent / "docs" / "loadtest.md"


def hub_toml() -> str:
    """The ```toml block right after ``<!-- loadtest-hub -->``."""
    found = re.search(r"<!-- loadtest-hub -->\n```toml\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"no loadtest-hub toml block in {DOC.name}"
    return found.group(1)


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

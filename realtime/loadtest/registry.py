"""The scenarios ``realtime loadtest`` knows: name -> ``module:Class`` in this package, imported on use.

A new scenario is one module with a :class:`realtime.loadtest.scenario.Scenario`
subclass and one line here.
"""

from __future__ import annotations

import importlib
from typing import Any

SCENARIOS: dict[str, str] = {
    "fanout": "fanout:Fanout",
    "idle": "idle:Idle",
    "storm": "storm:Storm",
    "ramp": "ramp:Ramp",
    "chat": "chat:Chat",
    "presence": "presence:Presence",
    "live": "live:Live",
}


def load(name: str) -> Any:
    """The Scenario class named ``name`` (typed Any: this module imports no scenario, so that the
    worker machinery does not depend on the scenarios it runs)."""
    module, _, cls = SCENARIOS[name].partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)

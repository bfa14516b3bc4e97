"""docs/architecture.md says what the code does: its state table and its composition root."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from realtime import server
from realtime.engines.base import Engine
from realtime.engines.memory import MemoryEngine
from realtime.engines.redis import RedisEngine
from realtime.subscriptions import TRANSITIONS, SubEvent, SubState

DOC = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()


def section(title: str) -> str:
    start = DOC.index(f"## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end >= 0 else None]


def test_the_state_table_is_the_code_s() -> None:
    rows = re.findall(
        r"^\| (\(none\)|[A-Z_]+|any) \| ([A-Z_]+) \| (\(none\)|[A-Z_]+) \|", section("Subscription states"), re.M
    )

    def state(name: str) -> SubState | None:
        return None if name == "(none)" else SubState[name]

    documented: dict[tuple[SubState | None, SubEvent], SubState | None] = {}
    for before, event, after in rows:
        froms = [s for s in SubState] if before == "any" else [state(before)]
        for s in froms:
            documented[s, SubEvent[event]] = state(after)
    assert documented == dict(TRANSITIONS)


def test_the_composition_root_is_the_code_s() -> None:
    block = re.search(r"```python\n(.*?)```", section("The composition root"), re.S)
    assert block is not None
    source = inspect.getsource(server.create_app)
    for line in block.group(1).splitlines():
        code = line.split("#")[0].strip()
        if code:
            assert code in source, code


def test_the_engine_roles_are_the_code_s() -> None:
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)\.py` \|", section("Engine roles"), re.M)
    assert len(rows) == 5
    for role, module in rows:
        cls = getattr(importlib.import_module(f"realtime.engines.{module}"), role)
        for engine in (MemoryEngine, RedisEngine):
            assert issubclass(engine, cls), (engine, role)
    assert set(Engine.__mro__) >= {getattr(importlib.import_module(f"realtime.engines.{m}"), r) for r, m in rows}

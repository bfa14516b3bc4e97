"""docs/architecture.md says what the code does: its state table and its composition root."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from realtime import server
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

"""Import rules of the packages ``realtime``, ``handlers`` and ``protocol``, read from the source with ``ast``.

Every import counts: at module level, inside functions, under ``if TYPE_CHECKING:``. Relative imports
are resolved, and ``from pkg import name`` is an import of the module ``pkg.name`` where that is a
module, else of ``pkg`` (``import a.b.c`` counts as an import of ``a.b.c`` alone, not of the packages
Python runs on the way). The rules:

(a) no import cycle among the modules;
(b) ``protocol`` is pure: none of its modules imports ``realtime``, ``handlers`` or an I/O library;
(c) in ``realtime``, only the composition root (:data:`COMPOSITION_ROOTS`) imports ``handlers``;
(d) ``handlers`` depend on the narrow hub Protocol ``HubServices`` of ``realtime/feature.py``, never on
    ``realtime.hub``, ``realtime.server`` or ``realtime.commands``;
(e) the Python SDK (``realtime/client.py`` or the package ``realtime/client/``) imports nothing of
    ``realtime`` but itself and the package root, and nothing of ``handlers``.

Each failure names the modules, with file:line of each import (and the path of each cycle).
scripts/check runs this module with the static checks.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The modules of ``realtime`` that assemble the hub and its features, so may import ``handlers``.
COMPOSITION_ROOTS = frozenset({"realtime.server"})
#: The packages whose modules these rules read.
PACKAGES = ("realtime", "handlers", "protocol")
#: What a module of ``protocol`` may not import (these or their submodules).
PROTOCOL_FORBIDDEN = ("realtime", "handlers", "asyncio", "aiohttp", "redis", "websockets")
#: What a module of ``handlers`` may not import (these or their submodules).
HANDLERS_FORBIDDEN = ("realtime.hub", "realtime.server", "realtime.commands")
#: The Python SDK: this module, or this package and its submodules.
SDK = "realtime.client"

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Import:
    """``source`` imports ``target`` (a module name, ours or not) at ``path``:``line``."""

    source: str
    target: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


def within(name: str, *prefixes: str) -> bool:
    """Whether module ``name`` is one of ``prefixes`` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@functools.cache
def discover(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every module of ``packages``."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path], root: Path = ROOT) -> Iterator[Import]:
    """Every import in ``path`` (module ``name``), resolved to module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    where = path.relative_to(root).as_posix()

    def known(target: str) -> str:
        # ``import realtime.engines.base`` or ``from realtime.hub import Hub``: the deepest module of ours
        # the name lies in; a name outside our packages is kept as it is.
        candidate = target
        while candidate and candidate not in modules:
            candidate = candidate.rpartition(".")[0]
        return candidate or target

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, known(alias.name), where, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            if origin == "__future__":
                continue
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                yield Import(name, submodule if submodule in modules else known(origin), where, node.lineno)


@functools.cache
def all_imports(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> tuple[Import, ...]:
    modules = discover(root, packages)
    found = {i for name, path in modules.items() for i in imports_of(name, path, modules, root) if i.target != i.source}
    return tuple(sorted(found, key=lambda i: (i.path, i.line, i.target)))


def cycles(edges: Iterable[Import]) -> list[tuple[list[str], list[Import]]]:
    """Each group of modules that import each other (strongly connected), with the shortest cycle
    through each of its modules (the same cycle once)."""
    graph: dict[str, dict[str, Import]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    found = []
    for group in sorted(groups):
        members = set(group)
        seen: set[frozenset[Import]] = set()
        for start in group:
            cycle = shortest_cycle(graph, members, start)
            if frozenset(cycle) not in seen:
                seen.add(frozenset(cycle))
                found.append((group, cycle))
    return found


def shortest_cycle(graph: dict[str, dict[str, Import]], members: set[str], start: str) -> list[Import]:
    """Breadth-first from ``start`` within ``members``, back to ``start``."""
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt, edge in sorted(graph[node].items()):
            if nxt == start:
                return [*paths[node], edge]
            if nxt in members and nxt not in paths:
                paths[nxt] = [*paths[node], edge]
                queue.append(nxt)
    raise AssertionError(f"{start} is in no cycle")


def check(rule: str, violations: list[Import]) -> None:
    if violations:
        pytest.fail(f"{rule}:\n" + "\n".join(f"  {v}" for v in violations), pytrace=False)


# --- the rules ----------------------------------------------------------------------


def test_the_reader_resolves_every_kind_of_import(tmp_path: Path) -> None:
    """The rules below are only as good as the reader: checked on a small package first."""
    files = {
        "pkg/__init__.py": "from . import a\n",
        "pkg/a.py": "import os.path\nfrom .b import thing\nfrom . import sub\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import deep\n",
        "pkg/sub/__init__.py": "from .. import b\nfrom ..a import name\n",
        "pkg/sub/deep.py": "def f() -> None:\n    import pkg.sub.deep.attr\n    from pkg import sub, missing\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = {(i.source, i.target) for i in all_imports(tmp_path, ("pkg",))}
    assert found == {
        ("pkg", "pkg.a"),
        ("pkg.a", "os.path"),
        ("pkg.a", "pkg.b"),
        ("pkg.a", "pkg.sub"),
        ("pkg.b", "typing"),
        ("pkg.b", "pkg.sub.deep"),
        ("pkg.sub", "pkg.b"),
        ("pkg.sub", "pkg.a"),
        ("pkg.sub.deep", "pkg.sub"),  # import pkg.sub.deep.attr is the module itself: left out
        ("pkg.sub.deep", "pkg"),  # from pkg import missing: a name of pkg/__init__.py
    }
    in_cycles = cycles(all_imports(tmp_path, ("pkg",)))
    assert {tuple(group) for group, _ in in_cycles} == {("pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.deep")}
    assert [e.target for e in in_cycles[0][1]] == ["pkg.a", "pkg.b", "pkg.sub.deep", "pkg"]  # the shortest through pkg
    assert {e.source for _, cycle in in_cycles for e in cycle} == set(in_cycles[0][0])


def test_no_import_cycles() -> None:
    lines = []
    last: list[str] = []
    for group, cycle in cycles(i for i in all_imports() if i.target in discover()):
        if group != last:
            lines.append(f"  {len(group)} modules import each other: {', '.join(group)}")
            last = group
        lines.append("    " + " -> ".join([cycle[0].source, *(e.target for e in cycle)]))
        lines.extend(f"      {e}" for e in cycle)
    if lines:
        pytest.fail("(a) import cycles among modules:\n" + "\n".join(lines), pytrace=False)


def test_protocol_is_pure() -> None:
    bad = [i for i in all_imports() if within(i.source, "protocol") and within(i.target, *PROTOCOL_FORBIDDEN)]
    check(f"(b) protocol/ imports {', '.join(PROTOCOL_FORBIDDEN)}", bad)


def test_only_the_composition_root_imports_handlers() -> None:
    bad = [
        i
        for i in all_imports()
        if within(i.source, "realtime") and i.source not in COMPOSITION_ROOTS and within(i.target, "handlers")
    ]
    check(f"(c) realtime/ modules other than {', '.join(sorted(COMPOSITION_ROOTS))} import handlers", bad)


def test_handlers_depend_on_the_hub_protocol_not_the_hub() -> None:
    bad = [i for i in all_imports() if within(i.source, "handlers") and within(i.target, *HANDLERS_FORBIDDEN)]
    check(f"(d) handlers/ import {', '.join(HANDLERS_FORBIDDEN)} (use the HubServices Protocol)", bad)


def test_the_sdk_stands_alone() -> None:
    bad = [
        i
        for i in all_imports()
        if within(i.source, SDK)
        and (
            within(i.target, "handlers")
            or (within(i.target, "realtime") and not within(i.target, SDK) and i.target != "realtime")
        )
    ]
    check("(e) the Python SDK imports realtime beyond itself and realtime/__init__.py, or handlers", bad)

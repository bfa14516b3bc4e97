"""What a scenario's worker role gets in a worker process: its share of the clients and their details."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from .stats import Stats
from .wsclient import Target, parse_url

#: Seconds a worker outlives the run's --timeout before it stops by itself.
WORKER_MARGIN = 15.0


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is started with (pickled)."""

    scenario: str
    params: dict[str, Any]  # the parsed flags, vars(args)
    index: int  # this worker, from 0
    procs: int
    first: int  # global index of its first client
    count: int  # how many clients it runs


class WorkerContext:
    """What a scenario's :class:`Role` gets in a worker process.

    ``args`` are the run's flags; the worker's clients have the global indices
    ``range(first, first + count)``, and :meth:`target`, :meth:`source` and
    :meth:`token` give client ``i`` its URL (round-robin over ``--url``), its
    source address and its JWT. ``stats`` is what :meth:`Stats.to_wire`
    reports to the controller.
    """

    def __init__(self, spec: WorkerSpec, emit: Callable[[Any], None]) -> None:
        self.spec = spec
        self.args = argparse.Namespace(**spec.params)
        self.index = spec.index
        self.first = spec.first
        self.count = spec.count
        self.targets: list[Target] = [parse_url(url) for url in self.args.url]
        self.stats = Stats()
        self.deadline = time.monotonic() + self.args.timeout + WORKER_MARGIN
        self._emit = emit

    @property
    def indices(self) -> range:
        return range(self.first, self.first + self.count)

    def target(self, i: int) -> Target:
        return self.targets[i % len(self.targets)]

    def source(self, i: int) -> str | None:
        """Client ``i``'s source address: 127.0.0.1 .. 127.0.0.N round-robin with --source-addresses N."""
        n = self.args.source_addresses
        return f"127.0.0.{1 + i % n}" if n > 1 else None

    def user(self, i: int) -> str:
        return f"lt{i}"

    def token(self, i: int, ttl: float = 86400.0) -> str | None:
        """An HS256 JWT for client ``i`` (``sub`` = :meth:`user`) with --jwt-secret, else None."""
        secret = self.args.jwt_secret
        if not secret:
            return None
        now = int(time.time())
        return jwt.encode({"sub": self.user(i), "iat": now, "exp": now + int(ttl)}, secret, algorithm="HS256")

    def emit(self, value: Any) -> None:
        """Send ``value`` to the controller unasked (the pool's ``on_event``)."""
        self._emit(value)

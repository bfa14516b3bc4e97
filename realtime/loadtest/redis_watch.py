"""Watching the hubs' Redis pub/sub connections during a run (fanout with ``--redis``).

Every :data:`INTERVAL` seconds, ``CLIENT LIST TYPE pubsub`` on each Redis node
(each primary of a cluster) lists the hubs' pub/sub connections, named
``<redis_prefix>:pubsub``. Their ids must stay those of the first reading: a
new id means Redis dropped one and a hub reconnected (e.g. for passing
``client-output-buffer-limit pubsub``), which publications in flight may not
survive. The peak ``omem`` (bytes Redis held for them) and ``oll`` (reply
blocks) show how close they came.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..tasks import cancel_and_wait

#: Seconds between two readings.
INTERVAL = 0.25


class RedisWatch:
    def __init__(self, url: str, cluster: bool, prefix: str) -> None:
        from redis.asyncio import Redis, RedisCluster

        self.client: Any = RedisCluster.from_url(url) if cluster else Redis.from_url(url)
        self.cluster = cluster
        self.name = f"{prefix}:pubsub"
        self.first: dict[str, set[int]] = {}  # node -> ids of the first reading
        self.new: dict[str, set[int]] = {}  # node -> ids seen later
        self.peak_omem: dict[str, int] = {}
        self.peak_oll: dict[str, int] = {}
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sample()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            await self.sample()

    async def sample(self) -> None:
        try:
            async with asyncio.timeout(5.0):
                if self.cluster:
                    replies = await self.client.client_list(_type="pubsub", target_nodes=self.client.PRIMARIES)
                    per_node = replies if isinstance(replies, dict) else {"cluster": replies}
                else:
                    per_node = {"redis": await self.client.client_list(_type="pubsub")}
        except Exception:
            self.errors += 1
            return
        for node, clients in per_node.items():
            node = str(node)
            ids = {int(c["id"]) for c in clients if c.get("name") == self.name}
            for c in clients:
                if c.get("name") == self.name:
                    self.peak_omem[node] = max(self.peak_omem.get(node, 0), int(c.get("omem", 0)))
                    self.peak_oll[node] = max(self.peak_oll.get(node, 0), int(c.get("oll", 0)))
            if node not in self.first:
                self.first[node] = ids
            else:
                self.new.setdefault(node, set()).update(ids - self.first[node])

    async def stop(self) -> dict[str, Any]:
        """Stop watching; what was seen (the fanout's ``extra.redis``)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self.sample()
        with contextlib.suppress(Exception):
            await self.client.aclose()
        return {
            "pubsub_connections": {node: len(ids) for node, ids in self.first.items()},
            "replaced": {node: len(ids) for node, ids in self.new.items() if ids},
            "peak_omem_bytes": self.peak_omem,
            "peak_oll": self.peak_oll,
            "watch_errors": self.errors,
        }

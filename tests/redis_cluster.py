"""A real Redis Cluster for tests: three masters, no replicas, on free ports.

Tests that need one take the session-scoped ``redis_cluster`` fixture (tests/conftest.py);
forming a cluster takes a few seconds, so the whole run shares one.
"""

from __future__ import annotations

import shutil
import subprocess
import time

from .redis_server import RedisServer, free_port

REDIS_CLI = shutil.which("redis-cli") or "redis-cli"
FORM_TIMEOUT = 20.0


def command(port: int, *args: str, timeout: float = 5.0) -> str:
    """Run one redis-cli command against 127.0.0.1:port and return its output."""
    done = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return done.stdout


class LocalCluster:
    """``masters`` redis-server processes in cluster mode, joined by ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3) -> None:
        # The bus port is given: the default (port + 10000) may be taken or out of range.
        # A short node timeout keeps failure detection quick should a test need it.
        self.servers = [
            RedisServer(
                None,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                str(free_port()),
                "--cluster-node-timeout",
                "2000",
            )
            for _ in range(masters)
        ]

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def url(self) -> str:
        """A URL of one node; cluster clients discover the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        for server in self.servers:
            server.start()
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=FORM_TIMEOUT,
            check=True,
        )
        self.wait_ok()

    def wait_ok(self) -> None:
        """Until every node says cluster_state:ok and all agree on who owns which slots."""
        deadline = time.monotonic() + FORM_TIMEOUT
        while True:
            try:
                states = [command(p, "cluster", "info") for p in self.ports]
                slots = {self._slot_owners(p) for p in self.ports}
                if all("cluster_state:ok" in s for s in states) and len(slots) == 1:
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok in time")
            time.sleep(0.1)

    def _slot_owners(self, port: int) -> str:
        lines = command(port, "cluster", "nodes").splitlines()
        return "\n".join(sorted(" ".join(line.split()[:1] + line.split()[8:]) for line in lines if "master" in line))

    def node_id(self, port: int) -> str:
        return command(port, "cluster", "myid").strip()

    def owner_of(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for port in self.ports:
            for line in command(port, "cluster", "nodes").splitlines():
                fields = line.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for part in fields[8:]:
                        lo, _, hi = part.partition("-")
                        if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                            return port
        raise LookupError(f"no master serves slot {slot}")

    def move_slot(self, slot: int, to_port: int) -> None:
        """Move an empty slot to another master the way a resharding does (SETSLOT NODE)."""
        src = self.owner_of(slot)
        if src == to_port:
            return
        dst_id, src_id = self.node_id(to_port), self.node_id(src)
        command(to_port, "cluster", "setslot", str(slot), "importing", src_id)
        command(src, "cluster", "setslot", str(slot), "migrating", dst_id)
        command(to_port, "cluster", "setslot", str(slot), "node", dst_id)
        command(src, "cluster", "setslot", str(slot), "node", dst_id)
        for port in self.ports:
            if port not in (src, to_port):
                command(port, "cluster", "setslot", str(slot), "node", dst_id)
        self.wait_ok()

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()

"""In-process fan-out cost: one hub, N subscribed connections, publishes through the command path.

Measures what the hub's Python does per publication and per delivery (command dispatch,
publish, continuity, fan-out, flush), without sockets or client processes: the connections
write to a transport that only counts (a stand-in, since a kernel socket per subscriber
would measure the kernel and the clients, which ``realtime loadtest fanout`` does). Deterministic
under callgrind, so a change's cost can be compared exactly::

    python scripts/bench_inprocess.py --subscribers 1000 --publishes 2000
    valgrind --tool=callgrind python3.11 scripts/bench_inprocess.py --publishes 0    # startup only
    valgrind --tool=callgrind python3.11 scripts/bench_inprocess.py --publishes 300  # minus the above / 300

(Run callgrind on the interpreter binary, not a shim script.)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import types
from pathlib import Path

import msgpack  # type: ignore[import-untyped]

from protocol import codec_for
from protocol.messages import Publish, StreamPosition
from realtime.config import load_settings
from realtime.connection import Connection
from realtime.server import HUB, create_app

CONFIG = """allow_anonymous = true
[namespaces.default]
subscribe = "anyone"
publish = "clients"
history_size = 100
history_ttl = 300
"""


class CountingTransport:
    """Accepts every write and counts it: a benchmark stand-in for a socket that keeps up."""

    writes = 0

    def write(self, data: bytes) -> None:
        CountingTransport.writes += 1

    def writelines(self, data: list[bytes]) -> None:
        CountingTransport.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


async def run(subscribers: int, publishes: int, payload: int, per_turn: int = 1) -> float:
    """Microseconds of process time per publication delivered to every subscriber."""
    config = Path(tempfile.mkdtemp(prefix="bench-inprocess-")) / "hub.toml"
    config.write_text(CONFIG)
    app = create_app(load_settings(env={}, config_file=config))
    hub = app[HUB]
    await hub.start()
    codec = codec_for("realtime.v1.msgpack")
    ws = types.SimpleNamespace(closed=False)  # what a connection reads of its WebSocket when flushing
    conns = []
    for _ in range(subscribers):
        conn = Connection(hub, ws, CountingTransport(), codec, "bench")  # type: ignore[arg-type]
        conn.connected = True
        await hub.begin_subscribe(conn, "bench")
        hub.end_subscribe(conn, "bench", StreamPosition(0, ""))
        conns.append(conn)
    data = msgpack.packb(b"x" * payload)
    start = time.process_time()
    for i in range(publishes):
        await hub.run_command(conns[0], Publish(i + 1, "bench", data))
        if (i + 1) % per_turn == 0:
            await asyncio.sleep(0)  # the loop's flush of every connection
    await asyncio.sleep(0)
    spent = time.process_time() - start
    await hub.close()
    return spent / max(1, publishes) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument("--payload", type=int, default=64, help="bytes of each publication's data")
    parser.add_argument(
        "--per-turn", type=int, default=1, help="publications per loop turn (a burst, as under load; default 1)"
    )
    args = parser.parse_args()
    per_publish = asyncio.run(run(args.subscribers, args.publishes, args.payload, args.per_turn))
    print(
        f"{per_publish:.1f} us per publication to {args.subscribers} subscribers "
        f"({per_publish / max(1, args.subscribers) * 1000:.0f} ns per delivery; {CountingTransport.writes} writes)"
    )


if __name__ == "__main__":
    main()

"""The flags every scenario takes, and argument types for scenario flags."""

from __future__ import annotations

import argparse
import math

#: Bounds on time and rate flags: beyond them a value is a typo, and a run could not be bounded.
MAX_SECONDS = 1e7
MAX_NUMBER = 1e9
#: Bound on counts (clients, keys, ...): one machine reaches a hub address from at most 254 loopback
#: source addresses of ~28,000 ports each; far beyond, a typo would be set up for minutes, past --timeout.
MAX_COUNT = 10_000_000
#: Commands in flight at most: the hub works on 32 of a connection at a time (docs/protocol.md),
#: so a larger window only queues in buffers; a huge one would build its commands in one go.
MAX_WINDOW = 10_000


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_COUNT:,}, got {text!r}")
    return value


def window_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WINDOW:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_WINDOW:,}, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_COUNT:,}, got {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"expected seconds above 0 and below {MAX_SECONDS:,.0f}, got {text!r}")
    return value


def positive(text: str) -> float:
    """A rate or a budget above 0 (not seconds: the message says a number)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"expected a number above 0 and below {MAX_SECONDS:,.0f}, got {text!r}")
    return value


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < MAX_NUMBER:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 and below {MAX_NUMBER:,.0f}, got {text!r}")
    return value


def common_arguments() -> argparse.ArgumentParser:
    """The flags every scenario takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common flags")
    group.add_argument(
        "--url",
        action="append",
        required=True,
        metavar="WS_URL",
        help="hub WebSocket URL, e.g. ws://127.0.0.1:8000/ws; repeat for a cluster (clients go round-robin)",
    )
    group.add_argument("--procs", type=positive_int, default=1, help="worker processes for the clients (default 1)")
    group.add_argument("--duration", type=seconds, default=10.0, help="seconds of load (default 10)")
    group.add_argument("--json", metavar="FILE", help="write the results as one JSON object to FILE")
    group.add_argument("--quiet", action="store_true", help="no live progress line on stderr")
    group.add_argument(
        "--source-addresses",
        type=positive_int,
        default=1,
        metavar="N",
        help="spread client source addresses over 127.0.0.1..127.0.0.N (loopback hubs only; default 1)",
    )
    group.add_argument(
        "--jwt-secret",
        metavar="SECRET",
        help="sign an HS256 token per client (sub = lt<index>) with the hub's token_secret",
    )
    group.add_argument(
        "--timeout", type=seconds, default=300.0, help="hard bound on the whole run, in seconds (default 300)"
    )
    group.add_argument(
        "--hub-pid",
        type=positive_int,
        action="append",
        default=[],
        metavar="PID",
        help="a hub process on this machine to read CPU and RSS of (/proc); repeat for several",
    )
    group.add_argument(
        "--concurrency",
        type=positive_int,
        default=50,
        help="connects in flight per worker process (default 50)",
    )
    return common

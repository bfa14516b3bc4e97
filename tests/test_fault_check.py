"""scripts/fault_check.py runs against a hub and reports all zero when nothing goes wrong."""

from __future__ import annotations

from realtime.auth import ApiKey
from realtime.namespaces import Namespace

from .helpers import HubFactory, load_script, namespaces

API = ApiKey("checker", "c" * 32, frozenset({"publish", "history"}))
FAULT = Namespace("fault", subscribe="anyone", publish="clients", history_size=1000, history_ttl=600)


async def test_the_fault_checker_reports_all_zero_without_faults(hub_factory: HubFactory) -> None:
    checker = load_script("fault_check")
    hub = await hub_factory(namespaces=namespaces(FAULT), api_keys=(API,))
    report = await checker.check(
        [hub.url], [hub.http_url], API.key, channel="fault:t", subscribers=2, count=40, rate=400, settle=0.3
    )
    assert report.clean, report.as_dict()
    p = report.publisher
    assert (p.sent, p.ok, p.failed, p.unknown, p.stored_twice, p.stored_after_failure) == (40, 40, 0, 0, 0, 0)
    for s in report.subscribers:
        assert (s.delivered, s.lost, s.gaps, s.duplicated, s.reordered) == (40, 0, 0, 0, 0)


def test_the_fault_checker_has_a_command_line() -> None:
    checker = load_script("fault_check")
    assert "--api-key" in checker.main.__code__.co_consts or checker.__doc__.count("--api-key")


def test_missed_publications_count_in_runs_of_the_channel_order() -> None:
    """A subscriber's misses are gaps only in as many runs as the SDK reported; one run more
    (a silent skip) makes them all lost."""
    jumps = load_script("fault_check")._jumps
    assert jumps([0, 1, 4, 5, 8], []) == 0
    assert jumps([0, 1, 4, 5, 8], [2, 3]) == 1
    assert jumps([0, 1, 4, 5, 8], [2, 3, 6, 7]) == 2
    assert jumps([0, 1, 4, 5, 8], [9, 10]) == 1  # the tail: nothing came after
    assert jumps([], [0, 1]) == 1

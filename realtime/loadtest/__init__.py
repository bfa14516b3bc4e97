"""``realtime loadtest``: simulated mobile clients against hubs you run (see docs/loadtest.md).

Run ``realtime loadtest SCENARIO --url ws://HOST:PORT/ws [--url ...] [flags]``
(or ``python -m realtime loadtest ...``). The tool drives hubs it does not
start, and only the URLs given. A hub under load test needs, in its config:

* ``command_rate = 0`` and ``receive_rate = 0``: a publisher sending as fast as
  the hub absorbs is what those per-connection budgets exist to stop (the hub
  answers 110 and then closes with 4010);
* ``max_connections_per_address = 0`` and ``max_connects_per_second = 0``: the
  clients all come from 127.0.0.1 (or a few addresses with
  ``--source-addresses``), which those limits refuse with 4009 / 4008;
* ``allow_anonymous = true``, or ``token_secret`` and ``--jwt-secret`` with the
  same secret; and a namespace where clients may subscribe and publish.

When the hub refuses anyway, the tool names the setting to change.

Layout: :mod:`.wsclient` (the raw WebSocket client), :mod:`.clients` (dialling
with a connect command, error kinds), :mod:`.subscriber` (a cheap counting or
sampling subscriber), :mod:`.publisher` (the controller's publisher, or FCALL
into Redis), :mod:`.stats` (HDR histograms and delivery accounting),
:mod:`.workers` and :mod:`.context` (worker processes over pipes, and what a
scenario gets in one), :mod:`.scenario` and :mod:`.registry` (how a scenario
plugs in, and the list of them), :mod:`.run` (a run as a scenario sees it),
:mod:`.runner` (the command: parser, run, summary, ``--json``), :mod:`.flags`,
:mod:`.report`, :mod:`.procinfo`, :mod:`.drain` (waiting for deliveries to
settle, and a client of the controller's own, for chat, presence and live), and
one module per scenario (:mod:`.fanout`, :mod:`.idle`, :mod:`.storm`,
:mod:`.ramp`, :mod:`.chat`, :mod:`.presence`, :mod:`.live`).

``--json FILE`` writes one object::

    {"scenario", "urls", "params", "elapsed_s", "connected", "sent", "delivered",
     "deliveries_per_s", "latency_ms": {"count", "p50", "p90", "p99", "p99_9", "max"},
     "connect": {"count", "per_s", "latency_ms": {...}} | null,
     "lost", "duplicated", "out_of_order", "errors": {kind: n}, "close_codes": {"4008": n},
     "generator": {"procs", "cpu_s", "cores_busy"}, "extra": {...}}

Exit status: 0 when the run completed (even with losses, which it reports),
1 when it could not run (hub unreachable, nobody connected, ``--timeout``
passed), 2 on usage errors.
"""

"""The results of a run: the ``--json`` object (the contract's shape) and the summary table."""

from __future__ import annotations

import argparse
from typing import Any

from .scenario import Outcome
from .stats import Stats

#: What each refusal means for a load test, and what to change on the hub.
HINTS = {
    "110": "commands were refused with 110 TOO_MANY_REQUESTS: the hub's command budget is on;"
    " set command_rate = 0 (and receive_rate = 0) on the hub for load tests",
    "4010": "connections were closed with 4010 TOO_MANY_REQUESTS (a flood of refused commands):"
    " set command_rate = 0 and receive_rate = 0 on the hub for load tests",
    "4008": "connections were refused with 4008 OVERLOADED: the node is at max_connections or over"
    " max_connects_per_second; raise or unset them (0) for load tests",
    "4009": "connections were refused with 4009 TOO_MANY_CONNECTIONS: a per-address or per-user limit;"
    " set max_connections_per_address = 0 (all clients come from few addresses) and check"
    " max_connections_per_user, or use --source-addresses",
    "4501": "connections were closed with 4501 UNAUTHORIZED: the hub wants a token; pass its token_secret"
    " as --jwt-secret (or set allow_anonymous = true)",
    "101": "commands were refused with 101 UNAUTHORIZED: pass the hub's token_secret as --jwt-secret",
    "103": "commands were refused with 103 PERMISSION_DENIED: the channel's namespace must let these clients"
    ' subscribe (subscribe = "anyone", or "authenticated" with --jwt-secret) and publish (publish = "clients")',
    "503": "upgrades were refused with HTTP 503: the node caps sockets that have not authenticated yet,"
    " or is shutting down; lower --concurrency or raise the hub's caps",
    "404": "upgrades were answered HTTP 404: nothing serves WebSockets at that path; a hub serves them"
    " at /ws (--url ws://HOST:PORT/ws)",
    "ECONNREFUSED": "connections were refused by the operating system: nothing listens at that host and"
    " port; start the hub, or check --url",
    "1009": "connections were closed with 1009: a frame was over the hub's max_frame_size;"
    " lower --payload, or raise max_frame_size on the hub",
    "SSLError": "the TLS handshake failed: a wss:// URL needs a hub (or proxy) serving TLS with a certificate"
    " this machine trusts (a private CA: SSL_CERT_FILE=ca.pem); a hub without tls_cert is ws://",
}
#: 4501 when the clients did present a token: the secret, not its absence, is wrong.
WRONG_SECRET = (
    "connections were closed with 4501 UNAUTHORIZED although each client presented a token: --jwt-secret"
    " must be the hub's token_secret (and the hub must not require token_audience or token_issuer)"
)


def _public_params(args: argparse.Namespace) -> dict[str, Any]:
    params = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "scenario")}
    if params.get("jwt_secret"):
        params["jwt_secret"] = "(set)"
    return params


def json_report(args: argparse.Namespace, outcome: Outcome, total: Stats, procs: int, wall_s: float) -> dict[str, Any]:
    """The ``--json`` object (see the contract in :mod:`realtime.loadtest`); the generator's cores
    busy are its CPU over ``wall_s``, the whole run from the workers being up to the end."""
    elapsed = outcome.elapsed_s
    per_s = outcome.deliveries_per_s
    if per_s is None:
        per_s = total.delivered / elapsed if elapsed > 0 else 0.0
    connect: dict[str, Any] | None = None
    if total.connect_latency.count:
        window = outcome.connect_s
        connect = {
            "count": total.connect_latency.count,
            "per_s": round(total.connect_latency.count / window, 1) if window else 0.0,
            "latency_ms": total.connect_latency.summary(),
        }
    return {
        "scenario": args.scenario,
        "urls": list(args.url),
        "params": _public_params(args),
        "elapsed_s": round(elapsed, 3),
        "connected": total.connected,
        "sent": total.sent,
        "delivered": total.delivered,
        "deliveries_per_s": round(per_s, 1),
        "latency_ms": total.latency.summary(),
        "connect": connect,
        "lost": total.lost,
        "duplicated": total.duplicated,
        "out_of_order": total.out_of_order,
        "errors": dict(sorted(total.errors.items())),
        "close_codes": {str(code): n for code, n in sorted(total.close_codes.items())},
        "generator": {
            "procs": procs,
            "cpu_s": round(total.cpu_s, 3),
            "cores_busy": round(total.cpu_s / wall_s, 2) if wall_s > 0 else 0.0,
        },
        "extra": outcome.extra,
    }


def _ms(summary: dict[str, float]) -> str:
    if not summary["count"]:
        return "-"
    return (
        f"p50 {summary['p50']:.2f}  p90 {summary['p90']:.2f}  p99 {summary['p99']:.2f}"
        f"  p99.9 {summary['p99_9']:.2f}  max {summary['max']:.2f} ms  ({int(summary['count']):,} samples)"
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in counts.items()) if counts else "none"


def summary_table(report: dict[str, Any]) -> str:
    """The table printed on stdout at the end of a run."""
    gen = report["generator"]
    rows: list[tuple[str, str]] = [
        ("scenario", f"{report['scenario']} against {', '.join(report['urls'])}"),
        ("elapsed", f"{report['elapsed_s']:.2f} s"),
        ("connected at end", f"{report['connected']:,}"),
        ("sent", f"{report['sent']:,}"),
        ("delivered", f"{report['delivered']:,}"),
        ("deliveries/s", f"{report['deliveries_per_s']:,.0f}"),
        ("latency", _ms(report["latency_ms"])),
    ]
    if report["connect"] is not None:
        c = report["connect"]
        rate = f" at {c['per_s']:,.1f}/s" if c["per_s"] else ""
        rows.append(("connects", f"{c['count']:,}{rate}"))
        rows.append(("connect latency", _ms(c["latency_ms"])))
    rows += [
        ("lost", f"{report['lost']:,}"),
        ("duplicated", f"{report['duplicated']:,}"),
        ("out of order", f"{report['out_of_order']:,}"),
        ("errors", _counts(report["errors"])),
        ("close codes", _counts(report["close_codes"])),
        (
            "generator CPU",
            f"{gen['cpu_s']:.2f} s in {gen['procs']} worker(s) + controller = {gen['cores_busy']:.2f} cores busy",
        ),
    ]
    for key, value in report["extra"].items():
        rows.append((key.replace("_", " "), _extra(value)))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _extra(value: Any) -> str:
    if isinstance(value, dict) and {"count", "p50", "p99", "max"} <= value.keys():
        return _ms(value)
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def hints(total: Stats, signed: bool = False) -> list[str]:
    """One explanation for each kind of refusal seen (close codes, error replies, HTTP statuses,
    refused TCP connects); ``signed``: the clients presented tokens (``--jwt-secret``)."""
    seen = {str(code) for code in total.close_codes}
    for kind in total.errors:
        for code in HINTS:
            if kind.endswith(f" {code}") or f" {code} " in kind:
                seen.add(code)
    return [WRONG_SECRET if code == "4501" and signed else text for code, text in HINTS.items() if code in seen]

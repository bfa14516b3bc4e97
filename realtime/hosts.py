"""Which ``Host`` header values the hub answers (``allowed_hosts``), against DNS rebinding.

A page on ``evil.example`` whose name the attacker re-points at 127.0.0.1
sends the hub ``Host: evil.example`` and ``Origin: http://evil.example``:
the Origin matches the Host, so only the Host itself tells the request apart.
``realtime.server`` refuses WebSocket upgrades and API requests whose Host is
not allowed (421, the JSON error map with 107 BAD_REQUEST). Pure: no I/O.

An entry is a host name or IP address (IPv6 in brackets, ``[::1]``), without
a port (the Host header's port is not compared), ``*.example.com`` (any name
ending in ``.example.com``), or ``*`` (any Host). Compared case-insensitively.
"""

from __future__ import annotations

import ipaddress
import re

#: What a hub bound to a loopback address answers when ``allowed_hosts`` is not set.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: The entry that allows any Host.
ANY_HOST = "*"
#: A valid entry (lower-cased): "*", "*.name", a name or IPv4 address, or an IPv6 address in brackets.
ENTRY = re.compile(r"\*|(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")


def is_loopback(bind: str) -> bool:
    """Whether ``bind`` (the ``host`` setting) is a loopback address or ``localhost``."""
    if bind.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return False


def effective_allowed_hosts(bind: str, configured: tuple[str, ...]) -> tuple[str, ...]:
    """The entries in force: ``configured`` when set; else :data:`LOOPBACK_HOSTS` when the hub
    listens on a loopback address; else ``("*",)``: any Host (the hub warns at startup)."""
    if configured:
        return configured
    return LOOPBACK_HOSTS if is_loopback(bind) else (ANY_HOST,)


def host_name(header: str) -> str:
    """The name in a Host header, without its port, lower-cased, without a trailing dot."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        name = header[: end + 1] if end > 0 else header
    elif header.count(":") == 1:
        name = header.partition(":")[0]
    else:
        name = header
    return name[:-1] if name.endswith(".") else name


def host_allowed(header: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a request with this Host header (None: without one) is answered."""
    if ANY_HOST in allowed:
        return True
    if not header:
        return False
    name = host_name(header)
    for entry in allowed:
        if entry.startswith("*."):
            if name.endswith(entry[1:]) and len(name) > len(entry) - 1:
                return True
        elif name == entry:
            return True
    return False

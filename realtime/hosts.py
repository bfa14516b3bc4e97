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


# --- Origin (allowed_origins) --------------------------------------------------------

#: An Origin, or an allowed_origins entry (lower-cased): scheme, host (IPv6 in brackets), port.
#: In an entry, ``*`` in the host matches any characters of a host name (never a ``:``),
#: and a port ``*`` any port, or none.
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(\[[0-9a-f:.*]+\]|[^\s/:\[\]@?#]+)(?::([0-9]{1,5}|\*))?")


def origin_entry_problem(entry: str) -> str | None:
    """Why ``entry`` (lower-cased) is no allowed_origins entry, or None."""
    if entry == "*" or _ORIGIN.fullmatch(entry):
        return None
    return f"expected '*' or scheme://host[:port] (no path), got {entry!r}"


def origin_allowed(origin: str | None, host: str, allowed: tuple[str, ...]) -> bool:
    """Native apps send no Origin and are always allowed; browsers must match the list.

    With an empty list only the hub's own host is allowed (same-origin pages).
    ``http://localhost:*`` allows every port of localhost (a dev server's), and
    ``https://*.example.com`` every name under example.com, on the default port.
    """
    if origin is None:
        return True
    origin = origin.lower()
    if not allowed:
        found = _ORIGIN.fullmatch(origin)
        return found is not None and origin.partition("://")[2] == host.lower()
    parts = _ORIGIN.fullmatch(origin)
    if parts is None or parts[3] == "*" or "*" in parts[2]:  # not an Origin a browser sends
        return "*" in allowed
    return any(_matches(parts, entry) for entry in allowed)


def _matches(origin: re.Match[str], entry: str) -> bool:
    if entry == "*":
        return True
    pattern = _ORIGIN.fullmatch(entry)
    if pattern is None or pattern[1] != origin[1]:
        return False
    if pattern[3] != "*" and pattern[3] != origin[3]:
        return False
    # Only * is special (fnmatch would read the brackets of an IPv6 address as a set).
    return re.fullmatch(".*".join(map(re.escape, pattern[2].split("*"))), origin[2]) is not None

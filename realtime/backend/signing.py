"""Signatures on every request the hub sends to the app's backend (proxies and webhooks).

A request carries three headers:

* ``Realtime-Id``: a unique id (a webhook's id stays the same on every retry, for deduplication);
* ``Realtime-Timestamp``: when it was signed, Unix seconds;
* ``Realtime-Signature``: ``v1=`` and the hex HMAC-SHA256 of ``"{timestamp}." + body`` (the raw body bytes)
  under a backend secret; one ``v1=`` entry per configured secret, comma-separated, so a backend can rotate
  its secret: it accepts the request when any entry matches one of its secrets.

A backend checks the signature over the bytes it received (before parsing them) in constant time, and refuses
a timestamp further than a few minutes from its clock (:data:`TOLERANCE`), so a captured request cannot be
replayed later. Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

ID_HEADER: Final = "Realtime-Id"
TIMESTAMP_HEADER: Final = "Realtime-Timestamp"
SIGNATURE_HEADER: Final = "Realtime-Signature"
#: Seconds a timestamp may differ from the verifier's clock.
TOLERANCE: Final = 300
_SCHEME: Final = "v1="


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"{timestamp}." + body`` under ``secret``."""
    return hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secrets: Sequence[bytes], request_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers that sign ``body``: one ``v1=`` entry per secret (the first is the current one)."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    entries = ",".join(_SCHEME + signature(secret, timestamp, body) for secret in secrets)
    return {ID_HEADER: request_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: entries}


def verify(
    secrets: Sequence[bytes], timestamp: str, header: str, body: bytes, *, now: float, tolerance: int = TOLERANCE
) -> bool:
    """Whether ``header`` signs ``body`` at ``timestamp`` under one of ``secrets``, within ``tolerance`` of ``now``.

    What a backend written in Python runs (docs/integration.md shows the same in JavaScript).
    """
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    given = [entry[len(_SCHEME) :] for entry in header.split(",") if entry.strip().startswith(_SCHEME)]
    given = [entry.strip() for entry in given]
    return any(
        hmac.compare_digest(signature(secret, int(timestamp), body), entry) for secret in secrets for entry in given
    )

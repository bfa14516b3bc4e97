"""Publish ids: every publish reaches the engine with one, so no retry stores it twice.

One place decides, for every publish path (WebSocket ``publish``, the HTTP
API's ``/api/publish`` and ``/api/broadcast``, chat sends):

* **Given ids** (the wire's ``key``, 1..64 characters) are scoped to the
  channel (the engine does that) and to the sender: the user; the connection id
  for anonymous senders, who thus cannot repeat across reconnects; "server"
  for publishes of the HTTP API (``info=None``). The scoped id is a SHA-256
  hash, so any id fits one fixed-length engine key. A repeat within the window
  (``publish_id_window``; chat namespaces: their ``idempotency_window``) gets
  the first publish's result and publishes nothing.
* **Generated ids**: a publish without an id gets a random one here, in a scope
  of its own ("hub"), so that the engine client's retries (redis-py re-running
  a script after a connection error, the Redis engine finding out what happened
  to a publish whose answer it lost) never store it twice. Nobody repeats a
  generated id but the engine, within its bounded retry time, so it is
  remembered :data:`GENERATED_TTL` seconds at most: every publish costs the
  engine one small key for that long, not for the whole window.
* A window of 0 turns ids off for the namespace: given ids are ignored and
  none is generated (the engine then answers OUTCOME_UNKNOWN at once when it
  loses an answer).
"""

from __future__ import annotations

import hashlib
import secrets

import msgpack  # type: ignore[import-untyped]

from protocol.codes import ErrorCode
from protocol.errors import CommandError
from protocol.limits import MAX_IDEMPOTENCY_KEY_LENGTH
from protocol.messages import ClientInfo

from .engines.broker import Idempotency

#: Seconds a generated id is remembered: longer than any retry of the engine (a few seconds).
GENERATED_TTL = 60.0
#: Start of every scoped id (the engine key is ``<channel stem>:i:<scoped id>``).
PREFIX = "p:"


def check_id(key: str) -> str:
    """A publish id as the client gave it: 1..64 characters, else BAD_REQUEST."""
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise CommandError(ErrorCode.BAD_REQUEST, f"key must have 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    return key


def sender_scope(info: ClientInfo | None) -> list[str]:
    """Who a given id belongs to: the user, an anonymous connection, or the server."""
    if info is None:
        return ["server", ""]
    if info.user:
        return ["user", info.user]
    return ["client", info.client]


def scoped_id(info: ClientInfo | None, key: str) -> str:
    """The engine idempotency key of ``key`` sent by ``info`` (within its channel): fixed length."""
    digest = hashlib.sha256(msgpack.packb([*sender_scope(info), key])).hexdigest()
    return PREFIX + digest


def publish_idempotency(
    info: ClientInfo | None, key: str | None, window: float, *, generate: bool = True
) -> Idempotency | None:
    """What the engine gets with a publish: the scoped given id for ``window`` seconds, or (with
    ``generate``: the engine may retry a publish) a generated one for :data:`GENERATED_TTL` (at
    most the window); None when ``window`` is 0, or without an id to give or to generate."""
    if window <= 0:
        return None
    if key is not None:
        return Idempotency(scoped_id(info, check_id(key)), window)
    if not generate:
        return None
    return Idempotency(PREFIX + "hub:" + secrets.token_hex(16), min(window, GENERATED_TTL))


def is_generated(idempotency: Idempotency) -> bool:
    return idempotency.key.startswith(PREFIX + "hub:")

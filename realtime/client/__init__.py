"""The Python client SDK: one reconnecting connection to a realtime hub.

Usage::

    async with Client("ws://localhost:8000/ws", token) as client:
        sub = await client.subscribe("chat:1", events=True)
        sent = await client.publish("chat:1", {"text": "hi"}, key="msg-1")
        async for msg in sub:
            print(msg.offset, msg.mid, msg.data)

The client keeps one WebSocket open. When it drops (network loss, hub restart,
a close code outside 4500-4999, or a Disconnect push with ``reconnect=True``),
it reconnects with exponential backoff and full jitter
(:func:`protocol.backoff.backoff`), then resubscribes every channel with
``since`` = the last position it saw, so the hub sends what was missed; those
publications come out of the subscription's iterator first, in order, with
nothing delivered twice. When the hub says not to come back (close code
4500-4999 or ``Disconnect(reconnect=False)``), the client stops: pending and
later calls raise :class:`ConnectionClosed`.

**Commands.** Each method of :class:`Client` sends one command and returns a
typed result (the values of :mod:`realtime.client.values`, which
:mod:`realtime.publisher` returns too); while reconnecting it waits for the
connection (at most ``command_timeout``, then :class:`CommandTimeout`), and a
refusal raises :class:`ReplyError` with the hub's :class:`ErrorCode`. Reads
and idempotent marks (``subscribe``, ``history``, ``read``, ``receipts``,
``presence``, ``presence_stats``, ``status``, ``ping``) are sent again on the
next connection when one drops before the reply. Writes are not: ``publish``
without a key, ``typing``, ``state_set`` and ``state_patch`` raise
:class:`ConnectionLost` instead, since the hub may or may not have run them.
``publish`` *with* a key is retried, by an authenticated user: in chat
channels the hub answers the retry with the first send's result (other
namespaces ignore keys, so pass one only in chat channels).
A command refused with TOO_MANY_REQUESTS (110: the hub's per-connection
command budget; the hub ran nothing) is sent again after the reply's
``retry_after`` (plus up to as much again, at random, so that commands refused
together do not come back together), if that ends within ``command_timeout`` (else the
:class:`ReplyError` is raised, ``error.retry_after`` in seconds); except
``typing``, whose refusal goes to the app.

**Channel events.** ``async for msg in sub`` yields :class:`Message` s only. Joins,
leaves, typing notices, read receipts, status and live-state changes are
:data:`Event` objects (:class:`Joined`, :class:`Left`, :class:`TypingChanged`,
:class:`ReadReceipt`, :class:`StatusChanged`, :class:`StateChanged`), read with
``async for event in sub.events()`` from a subscription made with
``subscribe(channel, events=True)``. Events are opt-in so that a subscription
nobody reads events from does not buffer them forever; ``sub.state`` and
``sub.status`` are kept up to date either way. When the hub unsubscribes the
client (wire push ``unsub``), both iterators end by raising
:class:`Unsubscribed`, once what was queued is out.

**Subscription tokens.** Channels of a ``subscribe = "token"`` namespace need
a token from the app's backend (``sub`` = the user, ``channel`` = the channel):
``subscribe(channel, token=...)`` sends the same one with every
(re)subscribe, so it serves until it expires (then the resubscribe is refused
with TOKEN_EXPIRED and the iterators raise it); ``subscribe(channel,
get_token=...)`` (async, returns a str) is called before the first subscribe
(unless ``token`` is given too), before every resubscribe (a reconnect, an
``unsub`` with reason "recover", a live gap) and once more after a
TOKEN_EXPIRED reply, so the subscription outlives any one token. After a
reconnect these subscriptions come back once the connection is ready, each on
its own, so a slow token backend holds up nothing else; when ``get_token``
fails there it is called again with the reconnect backoff (a first subscribe
raises :class:`TokenError` instead). :meth:`Client.close` cancels a call in
flight.

**Live channels.** ``sub.state`` (key -> value) and ``sub.version`` follow the
client rules of ``handlers/live.py`` (:mod:`realtime.client.live_state`): the subscribe snapshot, then each state
push (a merge patch applied only at ``version + 1``, a full value whenever it
is newer than the key's). A gap (a patch beyond ``version + 1``) makes the
client resubscribe the channel with ``version`` on its own, which returns only
what changed; so does every reconnect. Changes reach the app as
:class:`StateChanged` events.

Each subscription buffers publications (and, with ``events=True``, events) in
**unbounded** queues. The reader task must never wait on a slow consumer, or
the replies and pushes for every other subscription would stall behind it; the
hub already bounds what it sends per client and disconnects clients it cannot
keep up with. Keep iterating each subscription you hold (``len(sub)`` tells
what is waiting), or unsubscribe.

The package: :mod:`~realtime.client.client` (:class:`Client`),
:mod:`~realtime.client.connection` (one socket, replies matched to commands),
:mod:`~realtime.client.subscription`, :mod:`~realtime.client.live_state` (the
pure live-state rules), :mod:`~realtime.client.events`,
:mod:`~realtime.client.errors` and :mod:`~realtime.client.values`. It depends
only on :mod:`protocol` and third-party libraries, never on the hub's modules.
"""

from __future__ import annotations

from protocol.messages import ClientInfo

from .client import Client
from .errors import (
    ClientError,
    CommandTimeout,
    ConnectionClosed,
    ConnectionLost,
    ReplyError,
    TokenError,
    Unsubscribed,
)
from .events import Event, Joined, Left, ReadReceipt, StateChanged, StatusChanged, TypingChanged
from .subscription import Subscription
from .values import HistoryPage, Message, PresenceMember, PresenceStats, Sender, Sent, StreamPosition, UserStatus

__all__ = [
    "Client",
    "ClientError",
    "ClientInfo",
    "CommandTimeout",
    "ConnectionClosed",
    "ConnectionLost",
    "Event",
    "HistoryPage",
    "Joined",
    "Left",
    "Message",
    "PresenceMember",
    "PresenceStats",
    "ReadReceipt",
    "ReplyError",
    "Sender",
    "Sent",
    "StateChanged",
    "StatusChanged",
    "StreamPosition",
    "Subscription",
    "TokenError",
    "TypingChanged",
    "Unsubscribed",
    "UserStatus",
]

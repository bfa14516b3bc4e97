"""The offline push hook: a chat message's members who are away, sent to the app's push endpoint in batches.

A sink of ``message.published`` events in namespaces with ``push = true`` (``[push] url`` set). The
node that handled the publish emits the event, so it alone decides, once per message:

* **members** of the channel: the users a user-limited channel names (``dm:#alice,bob``) and the
  users with a read receipt in it (who have opened it; the receipts role lists them), at most
  ``max_members``; never the sender.
* **away**: when the namespace keeps presence, a member with no connection subscribed to the
  channel on any node (someone reading the room on another device gets no push; someone online
  in another room does); without presence the hub cannot tell who reads the room, so a member
  with no connection at all (the user status records).
* **one push per user and channel per ``interval``**: an engine claim (``kv_set`` only if absent,
  living ``interval`` seconds) shared by every node; the first message of a burst wins, and the
  next push carries ``unread`` (the messages after the user's read receipt), so the app can show
  "3 new messages" for what the window held back.

Notifications wait up to ``delay`` seconds to share a request with others (at most ``batch`` per
request); each request is signed (``realtime.backend.signing``). The body is in
docs/integration.md (``## Offline push``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Final, Protocol

import aiohttp

from ..feature import Feature, HubServices
from ..namespaces import Namespace, channel_users
from .delivery import CONTENT_TYPES, Outcome, RetryPolicy, post_signed
from .events import Event, now_ms
from .options import PushOptions
from .queues import Warner

log = logging.getLogger("realtime.push")

EVENT: Final = "message.published"
#: Engine kv key of a user's push window in a channel.
CLAIM: Final = "push:"
#: Seconds :meth:`PushHook.close` waits for requests in flight.
CLOSE_WAIT: Final = 5.0


class Deliver(Protocol):
    """Sends one request body, signed and retried (:func:`.delivery.post_signed`): :class:`SignedPost`."""

    async def __call__(
        self, request_id: str, body: bytes, *, since: int, on_retry: Callable[[str], None]
    ) -> Outcome: ...

    async def close(self) -> None: ...


#: Whether a user has a connection on any node.
Online = Callable[[str], Awaitable[bool]]


class PushHook(Feature):
    """``hub.events.add_sink(hook)`` and ``hub.use(hook)`` (for :meth:`close`)."""

    def __init__(self, hub: HubServices, options: PushOptions, deliver: Deliver, online: Online) -> None:
        self.hub = hub
        self.options = options
        self.deliver = deliver
        self.online = online
        self._pending: list[dict[str, Any]] = []
        self._flush: asyncio.TimerHandle | None = None
        self._deciding = 0
        self._sending: set[asyncio.Task[None]] = set()
        #: Notifications in requests being sent (and retried): they count against ``queue`` too.
        self._in_flight = 0
        #: Notifications dropped because ``queue`` were waiting; requests that failed for good.
        self.dropped = 0
        self.failed = 0
        #: Requests sent (for operators and tests).
        self.sent = 0
        self._warn_failed = Warner(f"push {options.url}: gave a request up", log)
        self._warn_retry = Warner(f"push {options.url}: a request failed, retrying", log)
        self._warn_dropped = Warner("push: notifications dropped, the push endpoint is behind", log)

    # --- the sink ----------------------------------------------------------

    def wants(self, name: str, namespace: str) -> bool:
        if name != EVENT or not self.options.url:
            return False
        ns = self.hub.settings.namespaces.get(namespace)
        return ns is not None and ns.push

    def put(self, event: Event) -> None:
        if self._deciding + len(self._pending) + self._in_flight >= self.options.queue:
            self._drop(1)
            return
        self._deciding += 1
        self.hub.spawn(self._decide(event))

    # --- who gets one ------------------------------------------------------

    async def _decide(self, event: Event) -> None:
        try:
            ns = self.hub.namespace(event.channel)
            if ns is None or not ns.push:
                return
            users = await self.recipients(event, ns)
            if users:
                preview = self._preview(event, ns)
                self._queue(event, users, preview)
        finally:
            self._deciding -= 1

    async def recipients(self, event: Event, ns: Namespace) -> dict[str, int]:
        """The members to push ``event`` to: user -> unread messages (up to and including this one)."""
        engine = self.hub.engine
        channel, offset = event.channel, int(event.data.get("offset", 0))
        receipts = await engine.receipts(channel)
        members = dict.fromkeys(channel_users(channel) or ())
        members.update(dict.fromkeys(receipts))
        members.pop(event.user, None)  # the sender (a server message has none)
        members.pop("", None)
        away = list(members)[: self.options.max_members]
        if not away:
            return {}
        if ns.presence:
            present = {entry.user for entry in (await engine.presence(channel)).values()}
            away = [user for user in away if user not in present]
        else:
            online = await asyncio.gather(*(self.online(user) for user in away))
            away = [user for user, on in zip(away, online, strict=True) if not on]
        if self.options.interval > 0:
            claims = await asyncio.gather(
                *(
                    engine.kv_set(f"{CLAIM}{channel}:{user}", b"1", ttl=self.options.interval, only_if_absent=True)
                    for user in away
                )
            )
            away = [user for user, claimed in zip(away, claims, strict=True) if claimed]
        return {user: max(1, offset - receipts.get(user, 0)) for user in away}

    def _preview(self, event: Event, ns: Namespace) -> str:
        if ns.push_preview == "none":
            return ""
        value = event.data.get("data")  # the message as a JSON client receives it (the event catalogue)
        text = value.get(ns.push_text_field) if isinstance(value, dict) else None
        return text[: ns.push_preview_length] if isinstance(text, str) else ""

    # --- batches -----------------------------------------------------------

    def _queue(self, event: Event, users: dict[str, int], preview: str) -> None:
        room = self.options.queue - len(self._pending) - self._in_flight
        if len(users) > room:
            self._drop(len(users) - max(room, 0))
        sender = event.user
        for user, unread in list(users.items())[: max(room, 0)]:
            self._pending.append(
                {
                    "user": user,
                    "channel": event.channel,
                    "mid": str(event.data.get("mid", "")),
                    "offset": int(event.data.get("offset", 0)),
                    "time": int(event.data.get("time", event.time)),  # the message's, as in its mid
                    "sender": sender,
                    "preview": preview,
                    "unread": unread,
                }
            )
        if len(self._pending) >= self.options.batch:
            self._send_batches()
        elif self._pending and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.options.delay, self._send_batches)

    def _send_batches(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        size = self.options.batch
        while self._pending:
            batch, self._pending = self._pending[:size], self._pending[size:]
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: Sequence[dict[str, Any]]) -> None:
        request_id, n = uuid.uuid4().hex, len(batch)
        since = now_ms()
        body = json.dumps({"id": request_id, "time": since, "notifications": list(batch)}, separators=(",", ":"))
        self._in_flight += n
        try:
            outcome = await self.deliver(request_id, body.encode(), since=since, on_retry=partial(self._retrying, n))
        except Exception:  # a bug must not leave the count wrong: the request is given up, loudly
            log.exception("push: a request of %d notifications failed", n)
            outcome = Outcome(False, 0, "an error in the hub")
        finally:
            self._in_flight -= n
        if outcome.delivered:
            self.sent += 1
            self.hub.metrics.push("delivered", n)
        else:
            self.failed += 1
            self.hub.metrics.push("failed", n)
            self._warn_failed(f": {n} notifications after {outcome.attempts} attempt(s): {outcome.reason}")

    def _retrying(self, notifications: int, reason: str) -> None:
        self.hub.metrics.push("retried", notifications)
        self._warn_retry(f": {reason}")

    def _drop(self, n: int) -> None:
        self.dropped += n
        self.hub.metrics.push("dropped", n)
        self._warn_dropped(f": {n} now, {self.dropped} so far")

    async def close(self) -> None:
        """Send what waits for its batch; wait at most :data:`CLOSE_WAIT` seconds for the requests."""
        self._send_batches()
        if self._sending:
            _, late = await asyncio.wait(list(self._sending), timeout=CLOSE_WAIT)
            for task in late:
                task.cancel()
            if late:
                log.warning("push: %d requests unfinished at shutdown", len(late))
        await self.deliver.close()


class SignedPost:
    """A :data:`Deliver`: a JSON body POSTed to ``url``, signed and retried by ``policy``."""

    def __init__(self, url: str, secrets: Sequence[bytes], policy: RetryPolicy) -> None:
        self.url = url
        self.secrets = secrets
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, request_id: str, body: bytes, *, since: int, on_retry: Callable[[str], None]) -> Outcome:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return await post_signed(
            self._session,
            self.url,
            body,
            request_id=request_id,
            secrets=self.secrets,
            content_type=CONTENT_TYPES["json"],
            policy=self.policy,
            since=since,
            on_retry=on_retry,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["Deliver", "PushHook", "SignedPost"]

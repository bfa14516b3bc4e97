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
from typing import Any, Final

import aiohttp

from ..feature import Feature, HubServices
from ..namespaces import Namespace, channel_users
from .events import Event, now_ms
from .options import PushOptions
from .signing import sign

log = logging.getLogger("realtime.push")

EVENT: Final = "message.published"
#: Engine kv key of a user's push window in a channel.
CLAIM: Final = "push:"
#: Seconds :meth:`PushHook.close` waits for requests in flight.
CLOSE_WAIT: Final = 5.0

#: Sends one request body (signed, retried as the hub's deliveries are); raises when it gave up.
Deliver = Callable[[str, bytes], Awaitable[None]]
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
        #: Notifications dropped because ``queue`` were waiting; requests that failed for good.
        self.dropped = 0
        self.failed = 0
        #: Requests sent (for operators and tests).
        self.sent = 0

    # --- the sink ----------------------------------------------------------

    def wants(self, name: str, namespace: str) -> bool:
        if name != EVENT or not self.options.url:
            return False
        ns = self.hub.settings.namespaces.get(namespace)
        return ns is not None and ns.push

    def put(self, event: Event) -> None:
        if self._deciding + len(self._pending) >= self.options.queue:
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
        room = self.options.queue - len(self._pending)
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
        request_id = uuid.uuid4().hex
        body = json.dumps(
            {"id": request_id, "time": now_ms(), "notifications": list(batch)}, separators=(",", ":")
        ).encode()
        try:
            await self.deliver(request_id, body)
            self.sent += 1
        except Exception as exc:
            self.failed += 1
            log.warning("push: a request of %d notifications failed for good: %s", len(batch), exc)

    def _drop(self, n: int) -> None:
        self.dropped += n
        log.warning("push: %d notifications dropped (%d so far): the push endpoint is behind", n, self.dropped)

    async def close(self) -> None:
        """Send what waits for its batch; wait at most :data:`CLOSE_WAIT` seconds for the requests."""
        self._send_batches()
        if self._sending:
            _, late = await asyncio.wait(list(self._sending), timeout=CLOSE_WAIT)
            for task in late:
                task.cancel()
            if late:
                log.warning("push: %d requests unfinished at shutdown", len(late))
        closer = getattr(self.deliver, "close", None)
        if closer is not None:
            await closer()


class SignedPost:
    """A :data:`Deliver`: one signed POST of a JSON body to ``url``; any answer but 2xx, a timeout or
    a refused connection raises."""

    def __init__(self, url: str, secrets: Sequence[bytes], timeout: float) -> None:
        self.url = url
        self.secrets = secrets
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, request_id: str, body: bytes) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = {"Content-Type": "application/json", **sign(self.secrets, request_id, now_ms() // 1000, body)}
        async with self._session.post(self.url, data=body, headers=headers) as response:
            if response.status // 100 != 2:
                raise RuntimeError(f"the push endpoint answered {response.status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["PushHook"]

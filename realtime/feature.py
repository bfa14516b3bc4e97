"""The seam between the hub and its features (chat, presence, live data, the core commands).

Two sides, each a narrow interface:

* :class:`Feature` is what the hub calls: a feature registers command handlers by
  command type, may take over publishing for a namespace kind
  (:meth:`Feature.publishers`) or hold back a namespace's events
  (:meth:`Feature.event_hooks`), and reacts to connection and subscription events.
* :class:`HubServices` is what a feature may use of the hub. Features depend on
  this Protocol, never on ``realtime.hub``, so the hub knows no feature by name
  and no feature imports the hub: the composition root (``realtime.server``)
  builds both and plugs the features in with ``Hub.use``.

Handlers take the connection and the command and return the result for the
reply (or ``None`` when they sent the reply themselves); refusals raise
:class:`protocol.errors.CommandError`. Hooks run in the connection's task, in the
order the features were plugged in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from protocol.codes import ErrorCode
from protocol.errors import CommandError
from protocol.messages import ClientInfo, PublishResult, Result, ServerMessage, Subscribe
from protocol.msgpack_codec import MsgpackCodec

if TYPE_CHECKING:
    from .auth import TokenVerifier
    from .backend.events import EventBus
    from .config import Settings
    from .connection import Connection
    from .engines.base import Engine, HistoryOptions
    from .metrics import Metrics
    from .namespaces import Namespace

#: Events cross nodes as msgpack server messages; this codec makes and reads them.
EVENTS = MsgpackCodec()

Handler = Callable[["Connection", Any], Awaitable[Result | None]]
#: Takes a channel event (msgpack server message) instead of delivering it: returns True when taken.
EventHook = Callable[[str, bytes], bool]


class PublishHook(Protocol):
    """Publishes to the channels of one namespace kind instead of the plain engine publish.

    ``key`` is the client's publish id, if any: make the engine's idempotency key with
    ``realtime.publish_ids.publish_idempotency`` (which makes one when there is none), so
    that the engine stores the publish at most once whatever retries it."""

    def __call__(
        self, channel: str, data: bytes, ns: Namespace, *, info: ClientInfo | None, key: str | None
    ) -> Awaitable[PublishResult]: ...


class HubServices(Protocol):
    """What a feature may use of the hub."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def verifier(self) -> TokenVerifier: ...

    @property
    def metrics(self) -> Metrics:
        """The node's metrics: count rate-limit and quota refusals there."""

    @property
    def events(self) -> EventBus:
        """The node's events for the app's backend: check ``wants`` before building one."""

    def namespace(self, channel: str) -> Namespace | None:
        """The namespace of ``channel``, None when no namespace is configured for it."""

    def history_options(self, ns: Namespace) -> HistoryOptions:
        """How much history the namespace's channels keep."""

    async def broadcast(self, channel: str, push: ServerMessage) -> None:
        """Send an ephemeral push to every subscriber of ``channel`` on every node."""

    def deliver_event(self, channel: str, event: bytes) -> None:
        """Hand an event (msgpack server message) to this node's subscribers now (event hooks release with it)."""

    def ask_to_resubscribe(self, channel: str) -> None:
        """Tell this node's subscribers of ``channel`` to subscribe again from their position."""

    def local_channels(self) -> list[str]:
        """Channels with subscribers on this node."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, logging its failure."""


class Feature:
    """Base class of what plugs into the hub: every hook does nothing."""

    def commands(self) -> Mapping[type, Handler]:
        """Command type -> handler, merged into the hub's dispatch table."""
        return {}

    def publishers(self) -> Mapping[str, PublishHook]:
        """Namespace kind -> the publish of its channels (client and server API alike),
        called after the hub checked the namespace's size limit."""
        return {}

    def event_hooks(self) -> Mapping[str, EventHook]:
        """Namespace name -> a hook that may take that namespace's channel events."""
        return {}

    async def on_connect(self, conn: Connection) -> None:
        """After a successful connect command, before its reply."""

    async def on_disconnect(self, conn: Connection) -> None:
        """After the connection ended and left every channel."""

    async def on_subscribe(self, conn: Connection, ns: Namespace, cmd: Subscribe, fields: dict[str, Any]) -> None:
        """Before the subscribe reply: add SubscribeResult fields to ``fields``."""

    async def on_subscribed(self, conn: Connection, ns: Namespace, channel: str) -> None:
        """After the subscribe reply went out and the connection receives the channel live."""

    async def on_unsubscribe(self, conn: Connection, ns: Namespace, channel: str) -> None:
        """After the connection left ``channel`` (by command, by the server, or by disconnecting)."""

    def on_resync(self) -> None:
        """The engine's delivery was interrupted: events of this node's channels may be lost."""

    async def close(self) -> None:
        """The hub is stopping: cancel timers."""


def namespace_of(hub: HubServices, channel: str, kind: str | None = None) -> Namespace:
    """The namespace of ``channel``: UNKNOWN_CHANNEL when none is configured for it,
    BAD_REQUEST when it is not of ``kind`` (the command does not apply to the channel)."""
    ns = hub.namespace(channel)
    if ns is None:
        raise CommandError(ErrorCode.UNKNOWN_CHANNEL, "unknown namespace")
    if kind is not None and ns.kind != kind:
        raise CommandError(ErrorCode.BAD_REQUEST, f"not a {kind} channel")
    return ns


__all__ = ["EVENTS", "EventHook", "Feature", "Handler", "HubServices", "PublishHook", "namespace_of"]

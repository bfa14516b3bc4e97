"""What a feature (chat, presence, live data) plugs into the hub.

A feature registers plain async command handlers by command type and may react
to connection and subscription events. Handlers take the connection and the
command and return the result for the reply; refusals raise
:class:`protocol.errors.CommandError`. Hooks run in the connection's task, in
the order the hub lists its features.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from protocol.messages import Result, Subscribe

if TYPE_CHECKING:
    from realtime.connection import Connection
    from realtime.hub import Hub
    from realtime.namespaces import Namespace

Handler = Callable[["Connection", Any], Awaitable[Result | None]]


class Feature:
    """Base class: every hook does nothing."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def commands(self) -> Mapping[type, Handler]:
        """Command type -> handler, merged into the hub's dispatch table."""
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

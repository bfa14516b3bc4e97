"""Command handlers: one plain async function per command type.

A handler takes the connection and the command and returns the result for the
reply, or ``None`` when it sent the reply itself (subscribe does, so that its
reply precedes the publications that follow it). Refusals are raised as
:class:`CommandError` (error reply) or :class:`DisconnectError` (close).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from protocol.codes import ErrorCode
from protocol.errors import CommandError
from protocol.messages import (
    ClientInfo,
    Command,
    Connect,
    ConnectResult,
    EmptyResult,
    Ping,
    Publish,
    PublishResult,
    Result,
    Subscribe,
    StreamPosition,
    SubscribeResult,
    Unsubscribe,
)

from . import __version__
from .engines.base import HistoryOptions

if TYPE_CHECKING:
    from .connection import Connection
    from .hub import Hub

Handler = Callable[["Connection", Any], Awaitable[Result | None]]


class Commands:
    """Dispatch table from command type to handler; :meth:`run` is what connections call."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        settings = hub.settings
        self.history = HistoryOptions(settings.history_size, settings.history_ttl)
        self.handlers: dict[type[Command], Handler] = {
            Connect: self.connect,
            Subscribe: self.subscribe,
            Unsubscribe: self.unsubscribe,
            Publish: self.publish,
            Ping: self.ping,
        }

    async def run(self, conn: Connection, command: Command) -> Result | None:
        return await self.handlers[type(command)](conn, command)

    async def connect(self, conn: Connection, cmd: Connect) -> Result:
        if conn.connected:
            raise CommandError(ErrorCode.ALREADY_CONNECTED)
        # Tokens are verified from the auth work on; until then every client is anonymous.
        conn.connected = True
        conn.hub.connection_ready(conn, cmd)
        return ConnectResult(conn.id, __version__, self.hub.settings.ping_interval, conn.user)

    async def subscribe(self, conn: Connection, cmd: Subscribe) -> None:
        hub = self.hub
        channel = cmd.channel
        if channel in conn.channels:
            raise CommandError(ErrorCode.ALREADY_SUBSCRIBED)
        if len(conn.channels) >= hub.settings.max_subscriptions:
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, "too many subscriptions")
        await hub.begin_subscribe(conn, channel)
        try:
            recoverable = self.history.size > 0
            if cmd.since is not None and recoverable:
                page = await hub.engine.history(channel, since=cmd.since)
                position = page.position
                pubs = page.publications
                # Complete only if history still holds the publication right after `since`.
                recovered = cmd.since.epoch == position.epoch and (
                    cmd.since.offset == position.offset
                    or (bool(pubs) and pubs[0].offset == cmd.since.offset + 1)
                )
                if not recovered:
                    pubs = []
            else:
                position = (await hub.engine.history(channel, limit=0)).position
                pubs, recovered = [], False
        except BaseException:
            await hub.unsubscribe(conn, channel)
            raise
        last = pubs[-1].offset if pubs else position.offset
        conn.reply(
            cmd.id,
            SubscribeResult(position.offset, position.epoch, recoverable, recovered, tuple(pubs)),
        )
        hub.end_subscribe(conn, channel, StreamPosition(last, position.epoch))
        return None

    async def unsubscribe(self, conn: Connection, cmd: Unsubscribe) -> Result:
        if cmd.channel not in conn.channels:
            raise CommandError(ErrorCode.NOT_SUBSCRIBED)
        await self.hub.unsubscribe(conn, cmd.channel)
        return EmptyResult()

    async def publish(self, conn: Connection, cmd: Publish) -> Result:
        info = ClientInfo(conn.user, conn.id)
        pos = await self.hub.engine.publish(cmd.channel, cmd.data, info=info, history=self.history)
        return PublishResult(pos.offset, pos.epoch)

    async def ping(self, conn: Connection, cmd: Ping) -> Result:
        return EmptyResult()

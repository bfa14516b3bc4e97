"""The core commands: connect, refresh, subscribe, unsubscribe, publish, history, ping.

A handler takes the connection and the command and returns the result for the
reply, or ``None`` when it sent the reply itself (subscribe does, so that its
reply precedes the publications that follow it). Refusals are raised as
:class:`CommandError` (error reply) or :class:`DisconnectError` (close).
The composition root plugs these in first, like any feature; features
(``handlers/``) add their own commands to the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from protocol.codes import CloseCode, ErrorCode
from protocol.errors import CommandError, DisconnectError
from protocol.messages import (
    ClientInfo,
    Connect,
    ConnectResult,
    EmptyResult,
    History,
    Ping,
    Publish,
    Refresh,
    RefreshResult,
    Result,
    StreamPosition,
    Subscribe,
    SubscribeResult,
    Unsubscribe,
)

from . import __version__, audit
from .admission import OVER_LIMIT_RETRY_AFTER
from .auth import Identity, TokenExpired, TokenInvalid, check_publish, check_subscribe
from .feature import Feature, Handler, namespace_of
from .hub import fit

if TYPE_CHECKING:
    from .connection import Connection
    from .hub import Hub
    from .namespaces import Namespace


class BackendProxy(Protocol):
    """The app's backend, where it decides instead of tokens and namespace rules
    (``realtime.backend.proxy.Proxies``; docs/integration.md, "Proxies")."""

    def handles_connect(self, cmd: Connect, has_token_key: bool) -> bool:
        """Whether the connect proxy, not the token verifier, decides this connect."""

    async def connect(self, conn: Connection, cmd: Connect) -> Identity:
        """Who the connection is; raises DisconnectError when it may not connect."""

    async def subscribe(self, conn: Connection, ns: Namespace, cmd: Subscribe) -> bytes | None:
        """The subscription's info (msgpack; None: the connection's own), or raises the refusal
        of a subscribe in a namespace with ``subscribe_proxy``."""

    async def publish(self, conn: Connection, ns: Namespace, cmd: Publish) -> bytes:
        """The data to publish (maybe rewritten), or raises the refusal (``publish_proxy``)."""


class Commands(Feature):
    """The core commands, for the hub's dispatch table (:meth:`commands`).

    ``proxy``: the app's backend, when a proxy is configured (``[proxy]``, ``subscribe_proxy``,
    ``publish_proxy``)."""

    def __init__(self, hub: Hub, proxy: BackendProxy | None = None) -> None:
        self.hub = hub
        self.proxy = proxy

    def commands(self) -> Mapping[type, Handler]:
        return {
            Connect: self.connect,
            Refresh: self.refresh,
            Subscribe: self.subscribe,
            Unsubscribe: self.unsubscribe,
            Publish: self.publish,
            History: self.history,
            Ping: self.ping,
        }

    # --- authentication ------------------------------------------------------

    def _verify(self, token: str | None, kind: str = "connect") -> Identity:
        try:
            return self.hub.verifier.verify_connection(token)
        except TokenExpired:
            raise CommandError(ErrorCode.TOKEN_EXPIRED) from None
        except TokenInvalid as exc:
            self.hub.metrics.auth_failed(kind)
            raise DisconnectError(CloseCode.UNAUTHORIZED, str(exc)) from None

    async def _identify(self, token: str | None) -> Identity:
        identity = self._verify(token, "refresh")
        if identity.user and await self.hub.revoked(identity):
            self.hub.metrics.auth_failed("refresh")
            raise DisconnectError(CloseCode.UNAUTHORIZED, "token revoked")
        return identity

    async def connect(self, conn: Connection, cmd: Connect) -> Result | None:
        if conn.connected:
            raise CommandError(ErrorCode.ALREADY_CONNECTED)
        proxy = self.proxy
        proxied = proxy is not None and proxy.handles_connect(cmd, bool(self.hub.verifier.algorithms))
        if proxied:
            assert proxy is not None
            identity = await proxy.connect(conn, cmd)
            if conn.closed:  # disconnected (the connect timeout) while the backend decided
                return None
        else:
            identity = self._verify(cmd.token)
        limit = self.hub.settings.max_connections_per_user
        if identity.user and limit and len(self.hub.users.get(identity.user, ())) >= limit:
            audit.connection_limit(conn.remote, "too many connections for this user", user=identity.user, conn=conn)
            raise DisconnectError(
                CloseCode.TOO_MANY_CONNECTIONS,
                "too many connections for this user",
                retry_after=OVER_LIMIT_RETRY_AFTER,
            )
        if identity.user:
            # Known as the user's before the revocation check: a revocation made before it
            # is read there, and one made while it runs finds this connection and closes it.
            self.hub.track_user(conn, identity.user)
            try:
                if await self.hub.revoked(identity):
                    self.hub.metrics.auth_failed("connect")
                    raise DisconnectError(CloseCode.UNAUTHORIZED, "token revoked")
            except BaseException:
                self.hub.untrack_user(conn, identity.user)
                raise
            if conn.closed:  # revoked, or disconnected by the server, meanwhile
                self.hub.untrack_user(conn, identity.user)
                return None
        conn.proxied = proxied
        conn.authenticate(identity)
        conn.connected = True
        self.hub.connection_ready(conn, cmd)
        for feature in self.hub.features:
            await feature.on_connect(conn)
        return ConnectResult(
            conn.id, __version__, self.hub.settings.ping_interval, conn.user, int(identity.expires or 0)
        )

    async def refresh(self, conn: Connection, cmd: Refresh) -> Result:
        identity = await self._identify(cmd.token)
        if identity.user != conn.user:
            raise CommandError(ErrorCode.PERMISSION_DENIED, "token is for another user")
        conn.authenticate(identity)
        return RefreshResult(int(identity.expires or 0))

    # --- channels ----------------------------------------------------------------

    def namespace(self, channel: str) -> Namespace:
        return namespace_of(self.hub, channel)

    async def subscribe(self, conn: Connection, cmd: Subscribe) -> None:
        hub = self.hub
        channel = cmd.channel
        ns = self.namespace(channel)
        # With a subscribe proxy the backend decides (after the checks that cost no request),
        # unless the connection's grants let the channel in.
        proxied = self.proxy is not None and bool(ns.subscribe_proxy) and not conn.identity.grants(channel)
        if not proxied:
            check_subscribe(conn.identity, channel, ns, cmd.token, hub.verifier)
        if channel in conn.channels:
            raise CommandError(ErrorCode.ALREADY_SUBSCRIBED)
        if len(conn.channels) >= hub.settings.max_subscriptions:
            hub.metrics.quota_exceeded("subscriptions")
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, "too many subscriptions")
        subs = hub.subscriptions
        if channel not in subs.channels and subs.per_namespace[ns.name] >= ns.max_channels:
            hub.metrics.quota_exceeded("channels")
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, "too many channels in this namespace")
        if proxied:
            assert self.proxy is not None
            info = await self.proxy.subscribe(conn, ns, cmd)
            if channel in conn.channels:  # an earlier subscribe won meanwhile
                raise CommandError(ErrorCode.ALREADY_SUBSCRIBED)
            if info is not None:  # dropped with the subscription (the hub's LEAVE)
                conn.channel_info[channel] = info
        history = hub.history_options(ns)
        recoverable = history.size > 0 and ns.recovery
        fields: dict[str, Any] = {}
        await hub.begin_subscribe(conn, channel)
        try:
            if cmd.since is not None and recoverable:
                since = cmd.since
                # Offset 0 of epoch "": nothing seen yet, not even the stream's epoch (it had none).
                start = since.offset == 0 and not since.epoch
                budget = hub.reply_budget
                page = await hub.engine.history(channel, since=since, max_bytes=budget)
                position = page.position
                pubs, cut = fit(page.publications, conn.codec, budget)
                # Complete only if history still holds the publication right after `since`, and
                # all of what follows fits in one reply (else the client reloads: protocol.md).
                recovered = (
                    (start or since.epoch == position.epoch)
                    and (since.offset == position.offset or (bool(pubs) and pubs[0].offset == since.offset + 1))
                    and not (page.truncated or cut)
                )
                if not recovered:
                    pubs = []
            else:
                position = (await hub.engine.history(channel, limit=0)).position
                pubs, recovered = [], False
            for feature in hub.features:
                await feature.on_subscribe(conn, ns, cmd, fields)
        except BaseException:
            await hub.unsubscribe(conn, channel)
            raise
        if channel not in conn.channels:  # the server unsubscribed it meanwhile; it released the rest
            raise CommandError(ErrorCode.NOT_SUBSCRIBED, "unsubscribed while subscribing")
        last = pubs[-1].offset if pubs else position.offset
        result = SubscribeResult(position.offset, position.epoch, recoverable, recovered, tuple(pubs), **fields)
        conn.reply(cmd.id, result)
        hub.end_subscribe(conn, channel, StreamPosition(last, position.epoch))
        for feature in hub.features:
            await feature.on_subscribed(conn, ns, channel)
        return None

    async def unsubscribe(self, conn: Connection, cmd: Unsubscribe) -> Result:
        if cmd.channel not in conn.channels:
            raise CommandError(ErrorCode.NOT_SUBSCRIBED)
        await self.hub.unsubscribe(conn, cmd.channel)
        return EmptyResult()

    async def publish(self, conn: Connection, cmd: Publish) -> Result:
        ns = self.namespace(cmd.channel)
        data = cmd.data
        if self.proxy is not None and ns.publish_proxy:  # the backend decides instead of the publish rule
            data = await self.proxy.publish(conn, ns, cmd)
        else:
            check_publish(conn.identity, cmd.channel, ns, subscribed=cmd.channel in conn.channels)
        info = conn.info
        channel_info = conn.channel_info.get(cmd.channel)
        if channel_info is not None:  # the subscribe proxy's info for this subscription
            info = ClientInfo(conn.user, conn.id, channel_info)
        return await self.hub.publish(cmd.channel, data, ns, info=info, key=cmd.key)

    async def history(self, conn: Connection, cmd: History) -> Result:
        if cmd.channel not in conn.channels:  # subscribers may read; others need the right to
            ns = self.namespace(cmd.channel)
            check_subscribe(conn.identity, cmd.channel, ns, None, self.hub.verifier)
        return await self.hub.history_page(cmd.channel, cmd.limit, cmd.before, cmd.after, conn.codec)

    async def ping(self, conn: Connection, cmd: Ping) -> Result:
        return EmptyResult()

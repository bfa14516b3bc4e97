"""One WebSocket to the hub: sending commands, matching replies to them by id, routing pushes.

The :class:`~realtime.client.Client` opens one :class:`Connection` at a time
and, when it ends, decides whether and when to open the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, TypeVar, cast

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed as WsConnectionClosed

from protocol import messages as m
from protocol.codec import Codec
from protocol.codes import should_reconnect
from protocol.errors import ProtocolError

from .errors import ClientError, ConnectionLost, ReplyError

if TYPE_CHECKING:
    from .subscription import Subscription

__all__ = ["ABNORMAL", "Connection", "expect"]

log = logging.getLogger("realtime.client")

#: WebSocket close code: closed without a close frame.
ABNORMAL: Final = 1006

_R = TypeVar("_R", bound=m.Result)


class Connection:
    """One open WebSocket: a reader task resolves reply futures by id and routes pushes."""

    def __init__(
        self,
        ws: ClientConnection,
        codec: Codec,
        on_push: Callable[[Connection, m.Push], None],
        on_end: Callable[[Connection], None],
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.disconnect: m.Disconnect | None = None
        self.close_code = ABNORMAL
        self.close_reason = ""
        self._on_push = on_push
        self._on_end = on_end
        self._futures: dict[int, asyncio.Future[m.Result]] = {}
        #: Id -> the result type of each command sent here whose reply has not come yet,
        #: also after its caller gave up: the codec reads each reply's result as its type.
        self._expected: dict[int, type[m.Result]] = {}
        #: The ids of the commands waiting for their reply here.
        self.in_flight: Mapping[int, object] = self._expected
        self._lost: ClientError | None = None
        #: Channel -> the Subscription whose Subscribe was the last one sent here with no
        #: Unsubscribe sent after it: the hub's subscription is (or will be) that one's. The
        #: hub runs a connection's commands in order, so send order is what counts.
        self.owners: dict[str, Subscription] = {}
        self.reader = asyncio.create_task(self._read(), name="realtime-client-reader")
        self.refresher: asyncio.Task[None] | None = None

    @property
    def retry_after(self) -> float | None:
        """Seconds the hub's Disconnect push advised to wait before reconnecting, or None."""
        if self.disconnect is None or self.disconnect.retry_after is None:
            return None
        return self.disconnect.retry_after / 1000

    @property
    def reconnect(self) -> bool:
        """Whether the client should come back after this connection ended."""
        if self.disconnect is not None:
            return self.disconnect.reconnect
        return should_reconnect(self.close_code)

    async def call(self, command: m.Command, kind: type[_R]) -> _R:
        """Send one command, return its result, a ``kind``; raises ReplyError or ConnectionLost."""
        if self._lost is not None:
            raise self._lost
        future: asyncio.Future[m.Result] = asyncio.get_running_loop().create_future()
        self._futures[command.id] = future
        self._expected[command.id] = cast("type[m.Result]", kind)  # _R is one of Result's types
        try:
            try:
                await self.ws.send(self.codec.encode_command(command), text=not self.codec.binary)
            except WsConnectionClosed:
                await asyncio.wait([self.reader])  # it ends too, and fails the futures
                raise self._lost or ConnectionLost(
                    self.close_code, self.close_reason, retry_after=self.retry_after
                ) from None
            return expect(await future, kind)
        finally:
            self._futures.pop(command.id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved, even when the send failed first

    def fail(self, error: ClientError) -> None:
        """Make waiting and later calls raise ``error``."""
        self._lost = error
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)
        self._futures.clear()

    async def close(self) -> None:
        """Close the socket and wait for the reader to end."""
        if self.refresher is not None:
            self.refresher.cancel()
        try:
            await self.ws.close()
            await asyncio.wait([self.reader])  # ends once the socket is closed
        finally:
            self.reader.cancel()

    async def _read(self) -> None:
        ws = self.ws
        try:
            while True:
                frame = await ws.recv(decode=False)
                for message in self.codec.decode_messages(frame, self._expected):
                    self._dispatch(message)
        except WsConnectionClosed as exc:
            if exc.rcvd is not None:
                self.close_code, self.close_reason = exc.rcvd.code, exc.rcvd.reason
        except ProtocolError as exc:
            log.warning("closing the connection: the hub sent an invalid frame (%s)", exc)
            self.close_code, self.close_reason = 1002, "invalid frame"
            await ws.close(1002, "invalid frame")
        except Exception:
            log.exception("closing the connection: the client failed to handle a frame")
            self.close_code, self.close_reason = 1011, "client error"
            await ws.close(1011, "client error")
        finally:
            if self.disconnect is not None:
                self.close_code, self.close_reason = self.disconnect.code, self.disconnect.reason
            self._on_end(self)  # first, so callers woken below see the client's new state
            if self._lost is None:
                self.fail(ConnectionLost(self.close_code, self.close_reason, retry_after=self.retry_after))

    def _dispatch(self, message: m.ServerMessage) -> None:
        if isinstance(message, m.Reply):
            self._expected.pop(message.id, None)
            future = self._futures.get(message.id)
            if future is None or future.done():
                if message.error is not None:  # id 0: the hub could not read a command
                    log.warning("error reply to no pending command: %s %s", message.error.code, message.error.message)
                return
            if message.error is not None:
                future.set_exception(
                    ReplyError(message.error.code, message.error.message, retry_after=message.error.retry_after / 1000)
                )
            elif message.result is None:
                future.set_exception(ProtocolError("reply without result or error"))
            else:
                future.set_result(message.result)
        elif isinstance(message, m.Disconnect):
            self.disconnect = message  # the close frame follows
        else:
            self._on_push(self, message)


def expect(result: m.Result, kind: type[_R]) -> _R:
    """``result`` as a ``kind``: the codec read it as one, this tells the type checker."""
    if not isinstance(result, kind):
        raise ProtocolError(f"expected {kind.__name__}, got {type(result).__name__}")
    return result

"""Channel continuity on this node: every publication once, in offset order.

Offsets arrive consecutive from a healthy engine. A duplicate (already
delivered by a repair) is dropped; a gap (a message the engine's pub/sub lost)
holds the channel back while the missing publications are read from history
(*repair*), so subscribers still get every publication once, in order. When
history cannot fill the gap, or the stream lost continuity (a new epoch after
Redis restarted empty), the channel's subscribers are asked to *recover*: to
subscribe again from their own position, which tells them what they missed or
that it is lost. After the engine's delivery was interrupted, *resync* checks
each channel against history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from protocol.messages import Publication, StreamPosition

from .engines.broker import Broker
from .logs import safe
from .subscriptions import Channel, Subscriptions

log = logging.getLogger("realtime.hub")


class Continuity:
    """Created by the hub with its subscriptions, the engine (its broker role), and how to ask a channel's
    subscribers to recover (True when it asked: the channel keeps history to recover from)."""

    def __init__(
        self,
        subscriptions: Subscriptions[Any],
        broker: Broker,
        ask_to_recover: Callable[[str], bool],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.subscriptions = subscriptions
        self.broker = broker
        self.ask_to_recover = ask_to_recover
        self.spawn = spawn

    def on_publication(self, pub: Publication) -> None:
        """Deliver a publication to local subscribers, keeping the channel's order."""
        ch = self.subscriptions.channels.get(pub.channel)
        if ch is None:
            return
        if pub.epoch == ch.epoch:
            if pub.offset <= ch.offset:
                return
            if pub.offset != ch.offset + 1 or ch.repairing is not None:
                self._hold_for_repair(ch, pub)
                return
        elif not ch.epoch and pub.offset != 1 and ch.members():
            # Its subscribers hold a stream that had not started (offset 0 of epoch ""): a first
            # publication past 1 means the ones before it were lost on the way.
            ch.epoch = pub.epoch
            self._hold_for_repair(ch, pub)
            return
        ch.epoch, ch.offset = pub.epoch, pub.offset
        self.subscriptions.fan_out(ch, pub)

    def _hold_for_repair(self, ch: Channel[Any], pub: Publication) -> None:
        if ch.repairing is None:
            ch.repairing = [pub]
            self.spawn(self._repair(pub.channel, ch))
        else:
            ch.repairing.append(pub)

    async def _repair(self, channel: str, ch: Channel[Any]) -> None:
        """Fill a gap from history, then deliver what waited, in offset order.

        Runs while ``ch.repairing`` is a list; publications arriving meanwhile join it.
        """
        subs = self.subscriptions
        try:
            while True:
                held, ch.repairing = ch.repairing or [], []
                page = await self.broker.history(channel, since=StreamPosition(ch.offset, ch.epoch))
                # Only what is past the position counts: a publication held while the read ran may
                # be a copy of one a previous round delivered from history (not a sign of loss).
                found = {p.offset: p for p in page.publications if p.epoch == ch.epoch and p.offset > ch.offset}
                for p in held:
                    if p.epoch == ch.epoch and p.offset > ch.offset:
                        found.setdefault(p.offset, p)
                if found and min(found) != ch.offset + 1:
                    log.warning("channel %s: publications after offset %d are lost", safe(channel), ch.offset)
                    if self.ask_to_recover(channel):
                        # Delivering what follows the gap would move the subscribers'
                        # positions past it, and their resubscribe would look complete.
                        ch.offset = max(found)
                        for offset in sorted(found):  # subscribes in flight were not asked: they need them
                            subs.fan_out_to_newcomers(ch, found[offset], {})
                        found = {}
                for offset in sorted(found):
                    if offset > ch.offset:
                        ch.offset = offset
                        subs.fan_out(ch, found[offset])
                if not ch.repairing:
                    return
        finally:
            ch.repairing = None

    def on_resync(self) -> None:
        """The engine's delivery was interrupted (its pub/sub reconnected): check every channel."""
        for channel in list(self.subscriptions.channels):
            self.spawn(self._resync(channel))

    async def _resync(self, channel: str) -> None:
        ch = self.subscriptions.channels.get(channel)
        if ch is None or not ch.epoch:
            return
        position = (await self.broker.history(channel, limit=0)).position
        if position.epoch != ch.epoch:
            # The stream lost continuity (e.g. Redis restarted without its data).
            ch.epoch, ch.offset = position.epoch, position.offset
            self.ask_to_recover(channel)
        elif position.offset > ch.offset and ch.repairing is None:
            ch.repairing = []
            await self._repair(channel, ch)

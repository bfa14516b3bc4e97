"""One loop timer for the deadlines of many connections: :class:`TimerWheel`.

Each connection has a next deadline (its connect deadline, the next ping, the
pong deadline, its token's expiry). A ``TimerHandle`` each cost ~0.5 KiB per
idle connection (the handle, its arguments, the loop's timer) and an entry in
the loop's heap; here a connection is filed under the *slot* of
:data:`RESOLUTION` seconds its deadline falls in, and one loop timer fires per
slot that holds any. Deadlines are met up to :data:`RESOLUTION` late, never
early.

Moving a deadline files the connection again: the entry left in the old slot
is skipped when that slot fires (the connection's ``timer_slot`` no longer
names it), so nothing is ever searched for or removed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Protocol

log = logging.getLogger("realtime.timers")

#: Seconds one slot spans: how late a deadline may be met.
RESOLUTION = 0.05


class Timed(Protocol):
    """What the wheel files: the slot it is filed under (None: not filed), and its callback."""

    timer_slot: int | None

    def on_timer(self) -> None:
        """Called once the deadline it was filed for has passed (it files itself again if it wants)."""


class TimerWheel:
    """Files :class:`Timed` objects by deadline; :meth:`schedule`, :meth:`cancel`."""

    def __init__(self, resolution: float = RESOLUTION) -> None:
        self.resolution = resolution
        self._slots: dict[int, list[Timed]] = {}
        self._firing = -1  # the slot whose entries are being called back

    def schedule(self, timed: Timed, when: float) -> None:
        """Call ``timed.on_timer()`` once the running loop's time has reached ``when``."""
        slot = math.ceil(when / self.resolution)
        if slot <= self._firing:
            slot = self._firing + 1  # due now: the next slot (the one firing is being emptied)
        timed.timer_slot = slot
        entries = self._slots.get(slot)
        if entries is None:
            entries = self._slots[slot] = []
            asyncio.get_running_loop().call_at(slot * self.resolution, self._fire, slot)
        entries.append(timed)

    @staticmethod
    def cancel(timed: Timed) -> None:
        """No callback for ``timed`` until it is scheduled again."""
        timed.timer_slot = None

    def __len__(self) -> int:
        """Entries filed (stale ones included: those of moved or cancelled deadlines)."""
        return sum(len(entries) for entries in self._slots.values())

    def _fire(self, slot: int) -> None:
        entries = self._slots.pop(slot, ())
        self._firing = slot
        try:
            for timed in entries:
                if timed.timer_slot != slot:
                    continue  # moved or cancelled since
                timed.timer_slot = None
                try:
                    timed.on_timer()
                except Exception:  # one failing callback must not cost the others theirs
                    log.exception("timer callback of %r failed", timed)
        finally:
            self._firing = -1

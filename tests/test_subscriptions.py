"""The subscription state table (realtime/subscriptions.py), without sockets.

Connections here are real but closed (nothing is written): what is checked is
where each subscription stands and which of the channel's collections holds it.
The end-to-end behaviour of these states is in test_continuity.py and
test_subscribe_races.py.
"""

from __future__ import annotations

import itertools

import msgpack  # type: ignore[import-untyped]
import pytest

from protocol.codec import Codec
from protocol.messages import Publication, StreamPosition
from protocol.msgpack_codec import MsgpackCodec
from realtime.config import Settings
from realtime.connection import Connection
from realtime.engines.memory import MemoryEngine
from realtime.hub import Hub
from realtime.subscriptions import TRANSITIONS, IllegalTransition, SubEvent, Subscriptions, SubState

CODEC: Codec = MsgpackCodec()
POSITION = StreamPosition(5, "e1")


def connection() -> Connection:
    conn = Connection(Hub(Settings(), MemoryEngine()), None, None, CODEC, "test")  # type: ignore[arg-type]
    conn.closed = True  # sends are dropped: these tests look at states only
    return conn


def holder(subs: Subscriptions[Connection], conn: Connection, name: str) -> SubState | None:
    """Which of the channel's collections holds ``conn``, as a state."""
    ch = subs.channels.get(name)
    if ch is None:
        return None
    found = [
        state
        for state, held in (
            (SubState.JOINING, conn in ch.joining),
            (SubState.AHEAD, conn in ch.ahead),
            (SubState.LIVE, conn in ch.subscribers.get(conn.codec, ())),
        )
        if held
    ]
    assert len(found) <= 1, f"held in more than one state: {found}"
    return found[0] if found else None


def reach(subs: Subscriptions[Connection], conn: Connection, state: SubState | None) -> None:
    """Walk ``conn``'s subscription to "room" into ``state`` by legal moves."""
    path = {
        None: [],
        SubState.JOINING: [SubEvent.BEGIN],
        SubState.LIVE: [SubEvent.BEGIN, SubEvent.REPLIED],
        SubState.AHEAD: [SubEvent.BEGIN, SubEvent.REPLIED_AHEAD],
    }[state]
    for event in path:
        subs.transition(conn, "room", event, POSITION)


@pytest.mark.parametrize(("state", "event"), list(TRANSITIONS))
def test_every_listed_transition_moves_the_state(state: SubState | None, event: SubEvent) -> None:
    subs, conn = Subscriptions[Connection](), connection()
    reach(subs, conn, state)
    subs.transition(conn, "room", event, POSITION)
    new = TRANSITIONS[state, event]
    assert conn.channels.get("room") is new
    assert holder(subs, conn, "room") is new
    if new is SubState.AHEAD:
        assert subs.channels["room"].ahead[conn] == POSITION


@pytest.mark.parametrize(
    ("state", "event"),
    [pair for pair in itertools.product([None, *SubState], SubEvent) if pair not in TRANSITIONS],
)
def test_an_unlisted_transition_raises_naming_the_state(state: SubState | None, event: SubEvent) -> None:
    subs, conn = Subscriptions[Connection](), connection()
    reach(subs, conn, state)
    with pytest.raises(IllegalTransition) as info:
        subs.transition(conn, "room", event, POSITION)
    assert info.value.state is state and info.value.event is event
    assert ("not subscribed" if state is None else state.value) in str(info.value)
    assert conn.channels.get("room") is state  # nothing moved


def test_leaving_joining_hands_back_what_waited() -> None:
    subs, conn = Subscriptions[Connection](), connection()
    subs.transition(conn, "room", SubEvent.BEGIN)
    ch = subs.channels["room"]
    for offset in (1, 2):
        subs.fan_out(ch, Publication("room", msgpack.packb(offset), offset, "e1"))
    waiting = subs.transition(conn, "room", SubEvent.REPLIED)
    assert [out.offset for out in waiting] == [1, 2]
    assert subs.transition(conn, "room", SubEvent.LEAVE) == []


def test_ahead_goes_live_only_past_its_position() -> None:
    subs, conn = Subscriptions[Connection](), connection()
    reach(subs, conn, SubState.AHEAD)
    ch = subs.channels["room"]
    subs.fan_out(ch, Publication("room", b"\x01", POSITION.offset, POSITION.epoch))  # carried by the reply
    assert holder(subs, conn, "room") is SubState.AHEAD
    subs.fan_out(ch, Publication("room", b"\x01", POSITION.offset + 1, POSITION.epoch))
    assert conn.channels["room"] is SubState.LIVE and holder(subs, conn, "room") is SubState.LIVE


def test_the_last_leave_lets_the_channel_go() -> None:
    subs, a, b = Subscriptions[Connection](), connection(), connection()
    for conn in (a, b):
        reach(subs, conn, SubState.LIVE)
    ch = subs.channels["room"]
    subs.transition(a, "room", SubEvent.LEAVE)
    assert not subs.drop_if_empty("room", ch)
    subs.transition(b, "room", SubEvent.LEAVE)
    assert subs.drop_if_empty("room", ch) and "room" not in subs.channels

"""A channel's publications of one loop turn leave as one batch: one frame, the same bytes for
every subscriber, in offset order, and nothing overtakes a message queued behind the batch."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]  # no stubs
import pytest

from protocol import codec_for
from protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from protocol.messages import Command, Publication, Publish, Reply, Unsubscribe
from realtime.frames import MAX_COALESCED_FRAME, OP_BINARY, Outgoing, coalesce

from .helpers import RunningHub, load_script
from .wsclient import RawClient, value

BURST = 7  # publications in one frame: one loop turn (below the hub's YIELD_EVERY)


class Inbox:
    """Records what a batch sends to a subscriber that detached from it."""

    def __init__(self) -> None:
        self.got: list[Outgoing] = []

    def send(self, out: Outgoing) -> None:
        self.got.append(out)


def parse_frames(stream: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every unmasked server frame in ``stream``; it must end on a frame."""
    frames = []
    pos = 0
    while pos < len(stream):
        first, n = stream[pos], stream[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(stream[pos : pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(stream[pos : pos + 8], "big"), pos + 8
        assert first & 0x80  # final
        frames.append((first & 0x0F, stream[pos : pos + n]))
        pos += n
    assert pos == len(stream)
    return frames


@pytest.mark.parametrize("subprotocol", [MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL])
def test_a_batch_is_one_valid_frame_of_its_messages_in_order(subprotocol: str) -> None:
    codec = codec_for(subprotocol)
    pubs = [Publication("c", msgpack.packb(i), offset=i, epoch="e") for i in range(1, 6)]
    outs = [Outgoing(codec.encode(p), codec.binary, p.offset, p.epoch) for p in pubs]
    batch = outs[0]
    batch.open_batch(codec.separator, 3)
    assert all(batch.add(out) for out in outs[1:])
    assert batch.size == len(codec.separator.join(out.payload for out in outs))
    frame = batch.frame()
    assert not batch.open and not batch.add(outs[0])  # built: closed for good
    assert batch.frame() is frame  # built once, the same bytes for every subscriber
    [(opcode, payload)] = parse_frames(frame)
    assert opcode == (OP_BINARY if codec.binary else 1)
    assert codec.decode_messages(payload, {}) == pubs


def test_a_detached_subscriber_keeps_what_joined_and_gets_the_rest_apart() -> None:
    codec = codec_for(MSGPACK_SUBPROTOCOL)
    outs = [Outgoing(codec.encode(Publication("c", b"", offset=i, epoch="e")), True, i, "e") for i in (1, 2, 3)]
    first = outs[0].payload
    batch = outs[0]
    batch.open_batch(b"", 2)
    assert batch.add(outs[1])
    inbox = Inbox()
    copy = batch.detach(inbox)
    assert copy.payload == first + outs[1].payload and not copy.open
    assert batch.open and batch.detached == [inbox]  # the other member still shares it
    assert batch.detach(Inbox()) is batch  # the last member: it keeps the batch, closed
    assert batch.detached is None and not batch.open and not batch.add(outs[2])


def test_members_detaching_from_the_same_batch_share_one_copy() -> None:
    """A thousand members detaching after a burst hold one copy of it, not a thousand."""
    outs = [Outgoing(bytes([i]) * 100, True) for i in range(100)]
    batch = outs[0]
    batch.open_batch(b"", 1001)
    for out in outs[1:]:
        assert batch.add(out)
    copies = [batch.detach(Inbox()) for _ in range(1000)]
    shared = copies[0]
    assert all(copy is shared for copy in copies)
    assert shared.payload == b"".join(out.payload for out in outs) and not shared.open
    late = Outgoing(b"z", True)
    assert batch.add(late)  # one member left: a join makes the next detacher's copy anew
    assert batch.detach(Inbox()) is batch and batch.payload.endswith(b"z")


def test_a_batch_stays_under_the_coalesced_frame_cap() -> None:
    big = Outgoing(b"x" * (MAX_COALESCED_FRAME // 2 + 1), True)
    batch = Outgoing(big.payload, True)
    batch.open_batch(b"", 1)
    assert not batch.add(big) and not batch.open
    assert [len(f) for f in coalesce([batch, big], b"")] == [len(batch.frame())] * 2  # one frame each


@pytest.mark.parametrize("subprotocol", [MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL])
async def test_a_burst_reaches_every_subscriber_as_the_same_frame_in_order(hub: RunningHub, subprotocol: str) -> None:
    subs = [await RawClient.open(hub.url, subprotocol=subprotocol) for _ in range(3)]
    try:
        for sub in subs:
            await sub.subscribe("burst")
        async with await RawClient.open(hub.url) as pub:
            ids = [pub.next_id() for _ in range(BURST)]
            await pub.send(*(Publish(i, "burst", msgpack.packb(i)) for i in ids))
            for i in ids:
                assert (await pub.reply(i)).error is None
        frames = [await sub.ws.recv() for sub in subs]
        assert frames[0] == frames[1] == frames[2]  # one batch: the same bytes for all
        data = frames[0] if isinstance(frames[0], bytes) else frames[0].encode()
        got = subs[0].codec.decode_messages(data, {})
        assert [value(p) for p in got if isinstance(p, Publication)] == ids  # all of them, in order
        assert [p.offset for p in got if isinstance(p, Publication)] == list(range(1, BURST + 1))
    finally:
        for sub in subs:
            await sub.close()


async def test_a_reply_behind_a_batch_is_not_overtaken(hub: RunningHub) -> None:
    """The publisher is a subscriber: its reply to each publish follows that publication,
    and the next publication follows the reply, while the others still get one batch."""
    async with await RawClient.open(hub.url) as me, await RawClient.open(hub.url) as other:
        await me.subscribe("room")
        await other.subscribe("room")
        ids = [me.next_id() for _ in range(BURST)]
        await me.send(*(Publish(i, "room", msgpack.packb(i)) for i in ids))
        seen: list[object] = []
        while len(seen) < 2 * BURST:
            msg = await me.recv()
            seen.append(("pub", value(msg)) if isinstance(msg, Publication) else ("reply", msg.id))  # type: ignore[union-attr]
        assert seen == [kind for i in ids for kind in (("pub", i), ("reply", i))]
        before = other.frames
        assert [value(await other.publication()) for _ in ids] == ids
        assert other.frames - before == 1


async def test_a_subscriber_that_leaves_mid_burst_gets_nothing_after_it(hub: RunningHub) -> None:
    """Leaving closes the channel's batch: what is published after the unsubscribe, in the
    same loop turn, reaches the others and not the leaver."""
    async with await RawClient.open(hub.url) as leaver, await RawClient.open(hub.url) as stayer:
        await leaver.subscribe("room")
        await stayer.subscribe("room")
        cmds: list[Command] = [Publish(leaver.next_id(), "room", msgpack.packb(n)) for n in (1, 2)]
        cmds.append(Unsubscribe(leaver.next_id(), "room"))
        cmds += [Publish(leaver.next_id(), "room", msgpack.packb(n)) for n in (3, 4)]
        await leaver.send(*cmds)
        got: list[object] = []
        while True:
            msg = await leaver.recv()
            got.append(value(msg) if isinstance(msg, Publication) else None)
            if isinstance(msg, Reply) and msg.id == cmds[-1].id:
                break
        assert [v for v in got if v is not None] == [1, 2]
        assert [value(await stayer.publication()) for _ in range(4)] == [1, 2, 3, 4]


async def test_a_burst_is_one_write_per_subscriber_and_a_lone_publication_leaves_at_once() -> None:
    bench = load_script("bench_inprocess")
    before = bench.CountingTransport.writes
    await bench.run(subscribers=20, publishes=8, payload=64, per_turn=4)
    # Two turns of four publications: one write per subscriber per turn.
    assert bench.CountingTransport.writes - before == 20 * 2
    before = bench.CountingTransport.writes
    await bench.run(subscribers=20, publishes=3, payload=64, per_turn=1)
    assert bench.CountingTransport.writes - before == 20 * 3  # each written in its own turn: no waiting

"""README tour: chat, presence and live data with the Python client, against quickstart.toml.

    realtime serve --config quickstart.toml       # in another terminal
    python scripts/tour_features.py [ws://127.0.0.1:8000/ws]

Tokens come from ``realtime token USER --config quickstart.toml`` (the demo secret).
"""

import asyncio
import subprocess
import sys
import uuid

from realtime.client import Client, Joined, StateChanged


def token(user: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "realtime",
            "token",
            user,
            "--config",
            "quickstart.toml",
            "--info",
            f'{{"name": "{user}"}}',
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


async def main(url: str) -> None:
    async with Client(url, token("alice")) as alice, Client(url, token("bob")) as bob:
        # Chat: a message with an id, a server time and its sender; typing; read receipts.
        room = await alice.subscribe("chat:lobby", events=True)
        await bob.subscribe("chat:lobby")
        key = str(uuid.uuid4())  # a retry of this send with the same key posts nothing
        sent = await bob.publish("chat:lobby", {"text": "hi alice"}, key=key)
        async for message in room:
            print("chat:", message.data, "from", message.info.user if message.info else "?", "mid", message.mid)
            break
        await alice.read("chat:lobby", sent.offset)
        print("receipts:", await bob.receipts("chat:lobby"))

        # Presence: who is here, and a join event when a new user arrives.
        guest = f"guest-{uuid.uuid4().hex[:6]}"
        async with Client(url, token(guest)) as visitor:
            await visitor.subscribe("chat:lobby")
            async for event in room.events():
                if isinstance(event, Joined) and event.user == guest:
                    print("presence: join", event.user)
                    break
            print("presence:", sorted(m.user for m in (await alice.presence("chat:lobby")).values()))

        # Live data: a snapshot, then changes as merge patches; the client keeps the state.
        board = await bob.subscribe("live:scores", events=True)
        await alice.state_set("live:scores", "match-1", {"home": 0, "away": 0, "minute": 1})
        await alice.state_patch("live:scores", "match-1", {"home": 1, "minute": 12})
        async for change in board.events():
            if isinstance(change, StateChanged) and change.value == {"home": 1, "away": 0, "minute": 12}:
                break
        print("live:", board.state["match-1"], "version", board.version)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000/ws"))

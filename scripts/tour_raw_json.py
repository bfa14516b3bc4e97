"""README tour: the protocol by hand, on a plain WebSocket with the JSON subprotocol.

Any WebSocket library in any language does the same; see docs/protocol.md.

    python scripts/tour_raw_json.py [ws://127.0.0.1:8000/ws]
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main(url: str) -> None:
    async with connect(url, subprotocols=["realtime.v1.json"]) as ws:  # type: ignore[list-item]
        for command in (
            {"id": 1, "cmd": "connect"},
            {"id": 2, "cmd": "subscribe", "channel": "chat:lobby"},
            {"id": 3, "cmd": "publish", "channel": "chat:lobby", "data": {"text": "hello from JSON"}},
        ):
            await ws.send(json.dumps(command))
            print(">", json.dumps(command))
        pending = {1, 2, 3}
        got_publication = False
        while pending or not got_publication:
            frame = await ws.recv()
            for line in str(frame).splitlines():  # one frame may carry several messages
                print("<", line)
                message = json.loads(line)
                pending.discard(message.get("id", 0))
                got_publication |= message.get("push") == "pub"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000/ws"))

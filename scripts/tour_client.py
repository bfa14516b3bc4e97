"""README tour: the Python client subscribes, publishes, and reads its own message back.

python scripts/tour_client.py [ws://127.0.0.1:8000/ws]
"""

import asyncio
import sys

from realtime.client import Client


async def main(url: str) -> None:
    async with Client(url) as client:
        sub = await client.subscribe("chat:lobby")
        position = await client.publish("chat:lobby", {"text": "hello from Python"})
        print("published at offset", position.offset)
        async for pub in sub:
            print("received", pub.data, "offset", pub.offset)
            break


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000/ws"))

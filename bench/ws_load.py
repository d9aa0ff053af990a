"""WebSocket message throughput: an echo upstream, and a bounded load client that prints its figures as JSON.

    python bench/ws_load.py echo PORT
    python bench/ws_load.py load URL CONNECTIONS SECONDS MESSAGE_BYTES

The client opens CONNECTIONS WebSockets, and on each sends a text message and waits for its echo, again and again
for SECONDS (closed loop, as wrk is): a message is counted once its echo is back. Every wait is bounded by
RECEIVE_TIMEOUT; a connection that fails is counted and not reopened. Both sides are aiohttp (C-accelerated frame
parsing), so that the load side is not the first limit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp
from aiohttp import web

RECEIVE_TIMEOUT = 5.0


async def _echo(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse(autoping=True)
    await socket.prepare(request)
    async for message in socket:
        if message.type == aiohttp.WSMsgType.TEXT:
            await socket.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await socket.send_bytes(message.data)
    return socket


def serve_echo(port: int) -> None:
    app = web.Application()
    app.router.add_get("/{tail:.*}", _echo)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def load(url: str, connections: int, seconds: float, size: int) -> dict[str, float | int]:
    payload = "x" * size
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        try:
            async with session.ws_connect(url, autoclose=True, heartbeat=None) as socket:
                while time.monotonic() < deadline:
                    sent = time.perf_counter()
                    await socket.send_str(payload)
                    reply = await socket.receive(timeout=RECEIVE_TIMEOUT)
                    if reply.type != aiohttp.WSMsgType.TEXT or len(reply.data) != size:
                        failures += 1
                        return
                    latencies.append(time.perf_counter() - sent)
        except (aiohttp.ClientError, TimeoutError, OSError):
            failures += 1

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session) for _ in range(connections)))
    elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else 0.0
    return {
        "messages": len(latencies),
        "failed": failures,
        "seconds": elapsed,
        "messages_per_second": len(latencies) / elapsed if elapsed else 0.0,
        "p99_ms": p99,
    }


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        serve_echo(int(sys.argv[2]))
    else:
        url, connections, seconds, size = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(asyncio.run(load(url, connections, seconds, size))))

"""The Python ceiling: the leanest reverse proxy on the gateway's own stack, with nothing else.

Plain ASGI on uvicorn (1 worker, uvloop, httptools), one `aiohttp.ClientSession` pool to the upstream with as many
connections as the gateway's default, the body streamed back. No tracing, no logging, no header rules beyond
hop-by-hop: what the gateway would cost if it did nothing of its own. The gateway's targets are ratios to this.

Usage: python bench/ceiling_proxy.py UPSTREAM_URL PORT MAX_CONNECTIONS
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn
from yarl import URL

Message = MutableMapping[str, Any]
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
CHUNK = 64 * 1024


def create_app(upstream_url: str, max_connections: int) -> Callable[..., Awaitable[None]]:
    sessions: list[aiohttp.ClientSession] = []

    async def app(scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0)
                sessions.append(aiohttp.ClientSession(connector=connector, auto_decompress=False))
                await send({"type": "lifespan.startup.complete"})
            await sessions[0].close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        query = scope["query_string"].decode("latin-1")
        target = scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        async with sessions[0].request(
            scope["method"], URL(upstream_url + target, encoded=True), headers=headers, data=body or None
        ) as response:
            kept = [(k.lower(), v) for k, v in response.raw_headers if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status, "headers": kept})
            async for chunk in response.content.iter_chunked(CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


if __name__ == "__main__":
    upstream, port, connections = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    uvicorn.run(
        create_app(upstream.rstrip("/"), connections),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )

"""The Python baseline: the reverse proxy one writes first, a Starlette route and one httpx.AsyncClient.

httpx's default transport, the upstream body streamed back; served by uvicorn as the gateway is
(1 worker, uvloop, httptools, no access log), so what differs is the proxy code alone.

Usage: python bench/naive_proxy.py UPSTREAM_URL PORT
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def proxy(request: Request) -> StreamingResponse:
    client: httpx.AsyncClient = request.app.state.client
    headers = [(k, v) for k, v in request.headers.raw if k.decode().lower() not in HOP_BY_HOP | {"host"}]
    outgoing = client.build_request(
        request.method, request.url.path, params=request.url.query, headers=headers, content=await request.body()
    )
    upstream = await client.send(outgoing, stream=True)
    kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
    return StreamingResponse(
        upstream.aiter_raw(), upstream.status_code, headers=kept, background=BackgroundTask(upstream.aclose)
    )


def create_app(upstream_url: str) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(base_url=upstream_url) as client:
            app.state.client = client
            yield

    return Starlette(routes=[Route("/{path:path}", proxy, methods=METHODS)], lifespan=lifespan)


if __name__ == "__main__":
    app = create_app(sys.argv[1])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )

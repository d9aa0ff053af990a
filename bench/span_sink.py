"""A Zipkin stand-in for the benchmark: accepts POST /api/v2/spans and counts the spans, GET /stats tells.

nginx could answer the POSTs more cheaply, but its access log counts requests, and the gateway sends
spans in batches: only parsing the body tells how many spans arrived, which is what proves that tracing
ran. It shares the load generator's CPU, not the proxy's; it stands in for a collector that would run on
another machine, so it parses with orjson and runs at the lowest priority: a millisecond spent parsing a
batch must not hold up wrk or the upstream, and so the proxy, only at the rate that samples.

Usage: python bench/span_sink.py PORT
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from typing import Any

import orjson
import uvicorn

SPANS_PATH = "/api/v2/spans"
STATS_PATH = "/stats"


class SpanSink:
    def __init__(self) -> None:
        self.stats = {"spans": 0, "posts": 0, "rejected": 0, "bytes": 0}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] == "POST" and scope["path"] == SPANS_PATH:
            await self._respond(send, self._count(await _read_body(receive), scope["headers"]))
        elif scope["method"] == "GET" and scope["path"] == STATS_PATH:
            await self._respond(send, 200, json.dumps(self.stats).encode())
        else:
            await self._respond(send, 404)

    def _count(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
        self.stats["posts"] += 1
        self.stats["bytes"] += len(body)
        try:
            if (b"content-encoding", b"gzip") in headers:
                body = gzip.decompress(body)
            spans = orjson.loads(body)
        except ValueError:  # orjson.JSONDecodeError is one
            spans = None
        if not isinstance(spans, list):
            self.stats["rejected"] += 1
            return 400
        self.stats["spans"] += len(spans)
        return 202

    @staticmethod
    async def _respond(send: Any, status: int, body: bytes = b"") -> None:
        headers = [(b"content-type", b"application/json")] if body else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


if __name__ == "__main__":
    os.nice(19)
    uvicorn.run(
        SpanSink(),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )

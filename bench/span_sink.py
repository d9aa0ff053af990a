"""A Zipkin stand-in for the benchmark: accepts POST /api/v2/spans and counts the spans, GET /stats tells.

nginx could answer the POSTs more cheaply, but its access log counts requests, and the gateway sends
spans in batches: only reading the body tells how many spans arrived, which is what proves that tracing
ran. It shares the load generator's CPU, not the proxy's; it stands in for a collector that would run on
another machine, so it must cost that CPU as little as it can: what it spends there holds up wrk or the
upstream, and so the proxy, only in the runs that sample. Parsing every batch of 1,000 spans (about half
a millisecond each with orjson, even at the lowest priority) left the proxy's CPU idle about 2 % of the
time at rate 1.0 and nowhere else. So it parses one POST in CHECK_EVERY in full (the first included),
which proves the gateway sends a JSON list of span objects and that counting keys gives the same number,
and for the others counts the spans by their "traceId" keys in the decompressed body. A "traceId" inside
a string is escaped in JSON and not counted.

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
CHECK_EVERY = 16
_TRACE_ID_KEY = b'"traceId":'


class SpanSink:
    def __init__(self) -> None:
        self.stats = {"spans": 0, "posts": 0, "checked": 0, "rejected": 0, "bytes": 0}

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
        except (OSError, EOFError):  # gzip.BadGzipFile is an OSError
            self.stats["rejected"] += 1
            return 400
        counted = body.count(_TRACE_ID_KEY)
        if (self.stats["posts"] - 1) % CHECK_EVERY == 0:
            self.stats["checked"] += 1
            if _parsed_spans(body) != counted:
                self.stats["rejected"] += 1
                return 400
        self.stats["spans"] += counted
        return 202

    @staticmethod
    async def _respond(send: Any, status: int, body: bytes = b"") -> None:
        headers = [(b"content-type", b"application/json")] if body else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _parsed_spans(body: bytes) -> int | None:
    """How many spans a JSON list of span objects holds, each with a traceId; None when it is not one."""
    try:
        spans = orjson.loads(body)
    except ValueError:  # orjson.JSONDecodeError is one
        return None
    if not isinstance(spans, list) or not all(isinstance(span, dict) and "traceId" in span for span in spans):
        return None
    return len(spans)


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


if __name__ == "__main__":
    os.nice(19)
    # Below the lowest priority: the kernel runs it only when wrk and the upstream have nothing to do.
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
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

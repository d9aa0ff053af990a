"""The collector's HTTP surface: Zipkin's v2 API, two test hooks and the trace page."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway_devtools.collector.codec import DEFAULT_MAX_BYTES, decode_spans, decompress
from gateway_devtools.collector.model import Span, format_trace_id, span_to_json
from gateway_devtools.collector.normalise import PayloadError
from gateway_devtools.collector.otlp import TRACES_PATH, decode_otlp
from gateway_devtools.collector.query import (
    QueryError,
    parse_trace_id,
    parse_trace_ids,
    parse_trace_query,
    required_service_name,
)
from gateway_devtools.collector.store import SpanStore

API = "/api/v2"
STATS_PATH = f"{API}/_stats"
RESET_PATH = f"{API}/_reset"
# tests/e2e/conftest.py posts to this spelling; it names the same hook.
STATIC_DIR = Path(__file__).parent / "static"


def create_collector_app(
    store: SpanStore | None = None,
    *,
    response_delay: float = 0.0,
    fail_first: int = 0,
    max_body_bytes: int = DEFAULT_MAX_BYTES,
) -> Starlette:
    """A Zipkin-API collector over `store`.

    Every `POST /api/v2/spans` is answered `response_delay` seconds late (its spans are stored on arrival) and the
    first `fail_first` of them are answered 503 without storing anything: a reporter's retries and timeouts can be
    tested against it. `GET /api/v2/_stats` reports counters; `DELETE /api/v2/_reset` (or POST) empties
    the store and zeroes the counters.
    """
    if response_delay < 0 or fail_first < 0:
        raise ValueError(f"response_delay and fail_first must not be negative, got {response_delay}, {fail_first}")
    collector = _Collector(store or SpanStore(), response_delay, fail_first, max_body_bytes)
    routes = [
        Route("/", collector.page, methods=["GET"]),
        Route("/health", collector.health, methods=["GET"]),
        Route(f"{API}/spans", collector.post_spans, methods=["POST"]),
        Route(TRACES_PATH, collector.post_otlp, methods=["POST"]),
        Route(f"{API}/spans", collector.span_names, methods=["GET"]),
        Route(f"{API}/services", collector.services, methods=["GET"]),
        Route(f"{API}/remoteServices", collector.remote_services, methods=["GET"]),
        Route(f"{API}/trace/{{trace_id}}", collector.trace, methods=["GET"]),
        Route(f"{API}/traces", collector.traces, methods=["GET"]),
        Route(f"{API}/traceMany", collector.trace_many, methods=["GET"]),
        Route(STATS_PATH, collector.stats, methods=["GET"]),
        Route(RESET_PATH, collector.reset, methods=["DELETE", "POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.store = collector.store
    return app


class _Collector:
    def __init__(self, store: SpanStore, response_delay: float, fail_first: int, max_body_bytes: int) -> None:
        self.store = store
        self._response_delay = response_delay
        self._failures_left = fail_first
        self._max_body_bytes = max_body_bytes
        self._requests: Counter[str] = Counter()
        self._content_types: Counter[str] = Counter()
        self._last_rejection: str | None = None

    async def post_spans(self, request: Request) -> Response:
        def decode(body: bytes, content_type: str | None) -> list[Span]:
            return decode_spans(body, content_type, request.headers.get("content-encoding"), self._max_body_bytes)

        return await self._receive(request, decode, lambda media_type: Response(status_code=202))

    async def post_otlp(self, request: Request) -> Response:
        """OTLP/HTTP: protobuf or JSON, into the same store; answered in the request's own format."""

        def decode(body: bytes, content_type: str | None) -> list[Span]:
            data = decompress(body, request.headers.get("content-encoding"), self._max_body_bytes)
            return decode_otlp(data, content_type)

        def accepted(media_type: str) -> Response:
            # An empty ExportTraceServiceResponse: full success.
            return JSONResponse({}) if media_type == "application/json" else Response(b"", media_type=media_type)

        return await self._receive(request, decode, accepted)

    async def _receive(
        self,
        request: Request,
        decode: Callable[[bytes, str | None], list[Span]],
        accepted: Callable[[str], Response],
    ) -> Response:
        if self._failures_left > 0:
            self._failures_left -= 1
            self._requests["failed"] += 1
            return await self._answer(PlainTextResponse("failing on purpose (--fail-first)", 503))
        content_type = request.headers.get("content-type")
        try:
            spans = decode(await self._read_body(request), content_type)
        except PayloadError as exc:
            self._requests["rejected"] += 1
            self._last_rejection = str(exc)
            return await self._answer(PlainTextResponse(str(exc), 400))
        self.store.accept(spans)
        self._requests["accepted"] += 1
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        self._content_types[media_type] += 1
        return await self._answer(accepted(media_type))

    async def span_names(self, request: Request) -> Response:
        return _query(lambda: self.store.span_names(required_service_name(request.query_params)))

    async def services(self, request: Request) -> Response:
        return JSONResponse(self.store.service_names())

    async def remote_services(self, request: Request) -> Response:
        return _query(lambda: self.store.remote_service_names(required_service_name(request.query_params)))

    async def trace(self, request: Request) -> Response:
        try:
            trace_id = parse_trace_id(request.path_params["trace_id"])
        except QueryError as exc:
            return PlainTextResponse(str(exc), 400)
        spans = self.store.trace(trace_id)
        if spans is None:
            return PlainTextResponse(f"trace {format_trace_id(trace_id)} not found", 404)
        return JSONResponse(_spans_json(spans))

    async def traces(self, request: Request) -> Response:
        now_ms = int(time.time() * 1000)
        return _query(
            lambda: [_spans_json(t) for t in self.store.traces(parse_trace_query(request.query_params, now_ms))]
        )

    async def trace_many(self, request: Request) -> Response:
        def find() -> list[list[dict[str, Any]]]:
            found = (self.store.trace(trace_id) for trace_id in parse_trace_ids(request.query_params))
            return [_spans_json(spans) for spans in found if spans]

        return _query(find)

    async def stats(self, request: Request) -> Response:
        store = self.store.stats()
        return JSONResponse(
            {
                "spans": store.spans,
                "traces": store.traces,
                "spansReceived": store.received,
                "spansDuplicate": store.duplicates,
                "spansEvicted": store.evicted,
                "requestsAccepted": self._requests["accepted"],
                "requestsRejected": self._requests["rejected"],
                "requestsFailedOnPurpose": self._requests["failed"],
                "requestsByContentType": dict(self._content_types),
                "lastRejection": self._last_rejection,
                "maxSpans": self.store.max_spans,
                "maxAgeSeconds": self.store.max_age,
            }
        )

    async def reset(self, request: Request) -> Response:
        self.store.clear()
        self._requests.clear()
        self._content_types.clear()
        self._last_rejection = None
        return Response(status_code=204)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "UP"})

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body_bytes:
            raise PayloadError(f"body exceeds {self._max_body_bytes} bytes")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > self._max_body_bytes:
                    raise PayloadError(f"body exceeds {self._max_body_bytes} bytes")
        except ClientDisconnect:
            raise PayloadError("the client went away before sending the whole body") from None
        return bytes(body)

    async def _answer(self, response: Response) -> Response:
        if self._response_delay:
            await asyncio.sleep(self._response_delay)
        return response


def _query(run: Callable[[], object]) -> Response:
    try:
        return JSONResponse(run())
    except QueryError as exc:
        return PlainTextResponse(str(exc), 400)


def _spans_json(spans: list[Span]) -> list[dict[str, Any]]:
    return [span_to_json(span) for span in spans]

"""The trace backends the check reads: Zipkin's v2 query API and Jaeger's HTTP query API (the one its UI uses).

Both answer the same two questions: which traces started within a time window (to find traces no response
announced), and what spans a given trace id has. Every failure is a CheckError with one line saying why.

- Zipkin (and the demo collector): `GET /api/v2/traces?endTs&lookback&limit`, `GET /api/v2/traceMany?traceIds=`
  (Zipkin 2.12+), else `GET /api/v2/trace/{id}`.
- Jaeger: `GET /api/services`, `GET /api/traces?service&start&end&limit` per service, `GET /api/traces/{id}`;
  spans as Jaeger's JSON model writes them (`data[].spans[]` with `traceID`, `spanID`, `references` of type
  CHILD_OF, `processID` into `data[].processes`; kind and remote service as the `span.kind` and `peer.service`
  tags Jaeger's Zipkin receiver writes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import httpx

from loadtest.traces import HTTP_PATH, W3C_TRACESTATE, SpanView, hex_id, span_from_json, trace_hex

ZIPKIN_API = "/api/v2"
JAEGER_API = "/api"
# Ids per GET /api/v2/traceMany: 100 ids of 32 hex characters keep the URL near 3.5 kB.
TRACE_MANY_CHUNK = 100
DEFAULT_CONCURRENCY = 8
CHILD_OF = "CHILD_OF"
SPAN_KIND = "span.kind"
PEER_SERVICE = "peer.service"


class CheckError(Exception):
    """The check could not run; the message says why in one line."""


class BackendKind(StrEnum):
    ZIPKIN = "zipkin"
    JAEGER = "jaeger"


class TraceBackend(Protocol):
    api: str
    # How many trace ids one `fetch` call asks for at most.
    batch_size: int

    def traces_between(self, start: float, end: float, limit: int) -> list[list[SpanView]]:
        """Every trace started within [start, end] (epoch seconds), at most `limit`."""
        ...

    def fetch(self, trace_ids: Sequence[int]) -> list[SpanView]:
        """The spans of each trace in `trace_ids` the backend holds (a trace it does not hold adds nothing)."""
        ...


def open_backend(kind: BackendKind, url: str, http: httpx.Client) -> TraceBackend:
    if kind is BackendKind.JAEGER:
        return JaegerQuery(url, http)
    return ZipkinQuery(url, http)


@dataclass(frozen=True, slots=True)
class Fetched:
    spans: list[SpanView]
    unfetched: int  # trace ids not asked for before the deadline


def fetch_all(
    backend: TraceBackend,
    trace_ids: Sequence[int],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    deadline: float = math.inf,
    clock: Callable[[], float] = time.monotonic,
) -> Fetched:
    """Asks for every trace in batches, `concurrency` requests at a time; a batch not started by `deadline`
    (a `clock` time) is left out and counted. The first CheckError of any batch stops the rest."""
    batches = [trace_ids[at : at + backend.batch_size] for at in range(0, len(trace_ids), backend.batch_size)]
    spans: list[SpanView] = []
    unfetched = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="trace-fetch") as pool:
        pending: set[Future[list[SpanView]]] = set()
        queue = iter(batches)
        for batch in queue:
            if clock() >= deadline:
                unfetched += len(batch) + sum(len(rest) for rest in queue)
                break
            while len(pending) >= concurrency:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                spans.extend(span for future in done for span in _result(future, pending))
            pending.add(pool.submit(backend.fetch, batch))
        for future in list(pending):
            spans.extend(_result(future, pending))
    return Fetched(spans, unfetched)


class ZipkinQuery:
    """The few reads of Zipkin's v2 API the check needs."""

    def __init__(self, url: str, http: httpx.Client) -> None:
        self.api = zipkin_api(url)
        self.batch_size = TRACE_MANY_CHUNK
        self._http = http
        self._trace_many = True

    def traces_between(self, start: float, end: float, limit: int) -> list[list[SpanView]]:
        params = {
            "endTs": str(math.ceil(end * 1000)),
            "lookback": str(max(1, math.ceil((end - start) * 1000))),
            "limit": str(limit),
        }
        return [
            _zipkin_spans(trace) for trace in _list(_get(self._http, self.api + "/traces", params), "a list of traces")
        ]

    def fetch(self, trace_ids: Sequence[int]) -> list[SpanView]:
        if len(trace_ids) > 1 and self._trace_many:
            ids = ",".join(map(trace_hex, trace_ids))
            found = _get(self._http, self.api + "/traceMany", {"traceIds": ids}, missing_ok=True)
            if found is not None:
                return [span for trace in _list(found, "a list of traces") for span in _zipkin_spans(trace)]
            # A collector older than Zipkin 2.12 has no traceMany: one GET per trace from now on.
            self._trace_many = False
        spans: list[SpanView] = []
        for trace_id in trace_ids:
            found = _get(self._http, f"{self.api}/trace/{trace_hex(trace_id)}", missing_ok=True)
            spans.extend(_zipkin_spans(found) if found is not None else ())
        return spans


class JaegerQuery:
    """The few reads of Jaeger's HTTP query API (jaeger-query's port 16686) the check needs."""

    def __init__(self, url: str, http: httpx.Client) -> None:
        self.api = jaeger_api(url)
        self.batch_size = 1
        self._http = http

    def traces_between(self, start: float, end: float, limit: int) -> list[list[SpanView]]:
        # Jaeger searches one service at a time; a trace found through several of its services counts once.
        services = _list(_data(_get(self._http, self.api + "/services")), "a list of services")
        traces: dict[str, list[SpanView]] = {}
        for service in services:
            params = {
                "service": str(service),
                "start": str(math.floor(start * 1_000_000)),
                "end": str(math.ceil(end * 1_000_000)),
                "limit": str(limit),
            }
            found = _list(_data(_get(self._http, self.api + "/traces", params)), "a list of traces")
            for trace in found:
                spans = jaeger_spans(trace)
                if spans:
                    traces.setdefault(trace_hex(spans[0].trace_id), spans)
        return list(traces.values())

    def fetch(self, trace_ids: Sequence[int]) -> list[SpanView]:
        spans: list[SpanView] = []
        for trace_id in trace_ids:
            found = _get(self._http, f"{self.api}/traces/{trace_hex(trace_id)}", missing_ok=True)
            if found is not None:
                spans.extend(span for trace in _list(_data(found), "a list of traces") for span in jaeger_spans(trace))
        return spans


def jaeger_spans(trace: Any) -> list[SpanView]:
    """The spans of one trace of Jaeger's JSON model; raises CheckError for anything else."""
    try:
        processes: Mapping[str, Any] = trace.get("processes") or {}
        return [_jaeger_span(span, processes) for span in trace["spans"]]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise CheckError(f"not a trace of Jaeger's JSON model: {str(trace)[:200]}") from None


def zipkin_api(url: str) -> str:
    """The v2 API base of a Zipkin given by its base URL, its API URL or its span endpoint (as the gateway's
    GATEWAY_ZIPKIN_URL names it)."""
    base = _base(url)
    for suffix in (f"{ZIPKIN_API}/spans", ZIPKIN_API):
        base = base.removesuffix(suffix)
    return base + ZIPKIN_API


def jaeger_api(url: str) -> str:
    """The API base of jaeger-query given by its base URL (http://jaeger-query:16686) or its API URL."""
    return _base(url).removesuffix(JAEGER_API) + JAEGER_API


def _jaeger_span(span: Mapping[str, Any], processes: Mapping[str, Any]) -> SpanView:
    tags = {tag["key"]: tag.get("value") for tag in span.get("tags") or ()}
    parents = [ref for ref in span.get("references") or () if ref.get("refType", CHILD_OF) == CHILD_OF]
    process = processes.get(span.get("processID", "")) or span.get("process") or {}
    kind, service, remote = tags.get(SPAN_KIND), process.get("serviceName"), tags.get(PEER_SERVICE)
    return SpanView(
        trace_id=hex_id(span["traceID"]),
        id=hex_id(span["spanID"]),
        parent_id=hex_id(parents[0]["spanID"]) if parents else None,
        kind=kind.upper() if isinstance(kind, str) else None,
        service=service.lower() if isinstance(service, str) and service else None,
        name=span.get("operationName"),
        path=tags.get(HTTP_PATH),
        remote=remote.lower() if isinstance(remote, str) and remote else None,
        tracestate=tags.get(W3C_TRACESTATE) if isinstance(tags.get(W3C_TRACESTATE), str) else None,
    )


def _base(url: str) -> str:
    base = url.strip().rstrip("/")
    scheme, sep, rest = base.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest:
        raise CheckError(f"the trace backend must be an http:// or https:// URL, got {url!r}")
    return base


def _get(http: httpx.Client, url: str, params: dict[str, str] | None = None, *, missing_ok: bool = False) -> Any:
    try:
        response = http.get(url, params=params)
    except httpx.HTTPError as exc:
        raise CheckError(f"GET {url}: {type(exc).__name__}: {exc}") from None
    if response.status_code == 404 and missing_ok:
        return None
    if response.status_code != 200:
        raise CheckError(f"GET {url} answered {response.status_code}: {' '.join(response.text.split())[:200]}")
    try:
        return response.json()
    except ValueError:
        raise CheckError(f"GET {url} answered something other than JSON") from None


def _data(document: Any) -> Any:
    # Jaeger wraps every answer: {"data": [...], "total": n, "errors": null}.
    if not isinstance(document, dict) or "data" not in document:
        raise CheckError('the trace backend answered something other than Jaeger\'s {"data": ...}')
    return document["data"] or []


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise CheckError(f"the trace backend answered something other than {what}")
    return value


def _zipkin_spans(trace: Any) -> list[SpanView]:
    try:
        return [span_from_json(span) for span in _list(trace, "a list of spans")]
    except ValueError as exc:
        raise CheckError(str(exc)) from None


def _result(future: Future[list[SpanView]], pending: set[Future[list[SpanView]]]) -> list[SpanView]:
    try:
        return future.result()
    except CheckError:
        for other in pending:
            other.cancel()
        raise

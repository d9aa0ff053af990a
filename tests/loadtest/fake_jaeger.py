"""A stand-in for jaeger-query's HTTP API (what Jaeger's UI reads), fed from a Zipkin-API collector.

It answers `GET /api/services`, `GET /api/traces?service&start&end&limit` and `GET /api/traces/{id}` as Jaeger does,
from the spans the collector (`python -m gateway_devtools.collector`, or its app in a thread) holds: each Zipkin v2
span becomes a span of Jaeger's JSON model, as Jaeger's Zipkin receiver stores it (kind and remote service as the
`span.kind` and `peer.service` tags, the parent as a CHILD_OF reference, the local service as a process).
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class FakeJaeger:
    def __init__(self, zipkin_url: str) -> None:
        self.zipkin_api = zipkin_url.rstrip("/") + "/api/v2"
        self.requests: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/api/services", self.services),
                Route("/api/traces", self.search),
                Route("/api/traces/{trace_id}", self.trace),
            ]
        )

    async def services(self, request: Request) -> JSONResponse:
        with self._counted(request):
            names = await self._zipkin("/services")
            return _answer(names)

    async def search(self, request: Request) -> JSONResponse:
        with self._counted(request):
            params = request.query_params
            if not params.get("service"):
                return _error(400, "parameter 'service' is required")
            start, end = int(params.get("start", "0")), int(params["end"])
            found = await self._zipkin(
                "/traces",
                {
                    "serviceName": params["service"],
                    "endTs": str(end // 1000 + 1),
                    "lookback": str(max(1, (end - start) // 1000 + 1)),
                    "limit": params.get("limit", "20"),
                },
            )
            return _answer([jaeger_trace(spans) for spans in found])

    async def trace(self, request: Request) -> JSONResponse:
        with self._counted(request):
            async with httpx.AsyncClient(trust_env=False) as http:
                response = await http.get(f"{self.zipkin_api}/trace/{request.path_params['trace_id']}")
            if response.status_code == 404:
                return _error(404, "trace not found")
            response.raise_for_status()
            return _answer([jaeger_trace(response.json())])

    async def _zipkin(self, path: str, params: dict[str, str] | None = None) -> Any:
        async with httpx.AsyncClient(trust_env=False) as http:
            response = await http.get(self.zipkin_api + path, params=params)
        response.raise_for_status()
        return response.json()

    def _counted(self, request: Request) -> _InFlight:
        self.requests.append(request.url.path)
        return _InFlight(self)


class _InFlight:
    def __init__(self, fake: FakeJaeger) -> None:
        self._fake = fake

    def __enter__(self) -> None:
        with self._fake._lock:
            self._fake.in_flight += 1
            self._fake.most_in_flight = max(self._fake.most_in_flight, self._fake.in_flight)

    def __exit__(self, *exc: object) -> None:
        with self._fake._lock:
            self._fake.in_flight -= 1


def jaeger_trace(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """One trace of Jaeger's JSON model from the Zipkin v2 spans of one trace."""
    processes: dict[str, dict[str, Any]] = {}
    process_ids: dict[tuple[str, str], str] = {}
    converted = []
    for span in spans:
        local = span.get("localEndpoint") or {}
        key = (local.get("serviceName") or "unknown-service", local.get("ipv4") or "")
        process_id = process_ids.setdefault(key, f"p{len(process_ids) + 1}")
        processes[process_id] = {"serviceName": key[0], "tags": [{"key": "ip", "type": "string", "value": key[1]}]}
        tags = [{"key": key, "type": "string", "value": value} for key, value in (span.get("tags") or {}).items()]
        if span.get("kind"):
            tags.append({"key": "span.kind", "type": "string", "value": span["kind"].lower()})
        remote = (span.get("remoteEndpoint") or {}).get("serviceName")
        if remote:
            tags.append({"key": "peer.service", "type": "string", "value": remote})
        parent = span.get("parentId")
        converted.append(
            {
                "traceID": span["traceId"],
                "spanID": span["id"],
                "flags": 1,
                "operationName": span.get("name", ""),
                "references": [{"refType": "CHILD_OF", "traceID": span["traceId"], "spanID": parent}] if parent else [],
                "startTime": span.get("timestamp", 0),
                "duration": span.get("duration", 0),
                "tags": tags,
                "logs": [],
                "processID": process_id,
                "warnings": None,
            }
        )
    return {"traceID": spans[0]["traceId"], "spans": converted, "processes": processes, "warnings": None}


def _answer(data: Any) -> JSONResponse:
    return JSONResponse({"data": data, "total": len(data), "limit": 0, "offset": 0, "errors": None})


def _error(status: int, message: str) -> JSONResponse:
    body = {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": status, "msg": message}]}
    return JSONResponse(body, status_code=status)

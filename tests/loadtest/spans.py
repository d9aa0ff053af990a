"""Zipkin v2 spans as the demo mesh reports them, for the tests that post them to a real collector."""

from __future__ import annotations

import time
from typing import Any

from loadtest.traces import Record

GATEWAY = "ingress-gateway"
LIST_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
UNSAMPLED_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
LEAKED_TRACE = 0x5B8EFFF798038103D269B633813FC60C
ORPHAN_TRACE = 0x463AC35C9F6413AD48485A3953BB6124
ROOT_ID = 0x1


def zipkin_span(
    trace: int,
    id: int,
    parent: int | None,
    service: str,
    kind: str,
    path: str,
    at: float | None = None,
    remote: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "traceId": f"{trace:032x}",
        "id": f"{id:016x}",
        "kind": kind,
        "name": f"get {path}",
        "timestamp": int((time.time() if at is None else at) * 1_000_000),
        "duration": 150,
        "localEndpoint": {"serviceName": service},
        "tags": {"http.path": path},
    }
    if parent is not None:
        data["parentId"] = f"{parent:016x}"
    if remote is not None:
        data["remoteEndpoint"] = {"serviceName": remote}
    return data


def list_trace(trace: int, at: float | None = None) -> list[dict[str, Any]]:
    """A whole /api/list trace as the gateway, web and emoji report it."""
    return [
        zipkin_span(trace, ROOT_ID, None, GATEWAY, "SERVER", "/api/list", at),
        zipkin_span(trace, 0x2, ROOT_ID, GATEWAY, "CLIENT", "/api/list", at),
        zipkin_span(trace, 0x3, 0x2, "web", "SERVER", "/api/list", at),
        zipkin_span(trace, 0x4, 0x3, "web", "CLIENT", "/list", at, remote="emoji"),
        zipkin_span(trace, 0x5, 0x4, "emoji", "SERVER", "/list", at),
    ]


def record(trace: int, sampled: bool = True, endpoint: str = "/api/list", hostile: bool = False) -> Record:
    return Record(trace, ROOT_ID, sampled, endpoint, time.time() - 1.0, hostile)

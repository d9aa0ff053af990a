"""Reading traces back from a Zipkin API and telling a complete trace from a partial one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

Span = dict[str, Any]


class ZipkinReader:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def trace(self, trace_id: str) -> list[Span]:
        response = httpx.get(f"{self.base_url}/api/v2/trace/{trace_id}", timeout=5, trust_env=False)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return list(response.json())

    def traces(self, service: str, limit: int = 1000) -> list[list[Span]]:
        params: dict[str, str | int] = {"serviceName": service, "limit": limit, "lookback": 3_600_000}
        response = httpx.get(f"{self.base_url}/api/v2/traces", params=params, timeout=5, trust_env=False)
        response.raise_for_status()
        traces: list[list[Span]] = response.json()
        return traces

    def wait_for_trace(self, trace_id: str, count: int, timeout: float = 10.0) -> list[Span]:
        """The trace once it holds at least `count` spans, or what it holds after `timeout`."""
        spans: list[Span] = poll(lambda: self.trace(trace_id), lambda found: len(found) >= count, timeout)
        return spans


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = fetch()
    return value


def service(span: Span) -> str:
    return str((span.get("localEndpoint") or {}).get("serviceName", ""))


def remote_service(span: Span) -> str:
    return str((span.get("remoteEndpoint") or {}).get("serviceName", ""))


def services(spans: list[Span]) -> set[str]:
    return {service(span) for span in spans}


def orphans(spans: list[Span]) -> list[Span]:
    """Spans whose parent is not in the trace: the root's caller, or a parent that was never reported."""
    ids = {span["id"] for span in spans}
    return [span for span in spans if span.get("parentId") not in ids]


def childless_clients(spans: list[Span]) -> list[Span]:
    """CLIENT spans no SERVER span answers: the service called was not traced, or did not report."""
    parents = {span.get("parentId") for span in spans if span.get("kind") == "SERVER"}
    return [span for span in spans if span.get("kind") == "CLIENT" and span["id"] not in parents]


def assert_connected(spans: list[Span], root_parent: str | None) -> Span:
    """One tree: a single span whose parent is missing (`root_parent`), every CLIENT answered; returns the root."""
    assert len({span["traceId"] for span in spans}) == 1, spans
    assert len({span["id"] for span in spans}) == len(spans), f"duplicate span ids: {spans}"
    roots = orphans(spans)
    assert len(roots) == 1, f"expected one root, got {[(service(s), s.get('parentId')) for s in roots]}"
    assert roots[0].get("parentId") == root_parent, (roots[0], root_parent)
    assert childless_clients(spans) == [], f"CLIENT spans with no SERVER child: {childless_clients(spans)}"
    for span in spans:
        if span.get("kind") == "SERVER" and span is not roots[0]:
            parent = next(candidate for candidate in spans if candidate["id"] == span["parentId"])
            assert parent["kind"] == "CLIENT", (parent, span)
            # The gateway names no service when its upstream is an IP address; the mesh's services always do.
            assert remote_service(parent) in ("", service(span)), (parent, span)
    return roots[0]

"""The gateway app in-process (httpx.ASGITransport sets the client address) against a real loopback upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from gateway.app import Gateway, create_app
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.spans import Exchange
from tests.support import FixedIds, ThreadedServer

pytestmark = pytest.mark.anyio

TRACE_ID = 0x463AC35C9F6413AD48485A3953BB6124
TRUSTED_CLIENT = ("10.1.2.3", 5000)
UNTRUSTED_CLIENT = ("203.0.113.7", 4000)


async def echo_upstream(scope, receive, send):
    """Answers with the request line and headers it received, as JSON."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = json.dumps(
        {"path": scope["path"], "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]]}
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class RecordingReporter:
    def __init__(self, room: int = 1_000_000) -> None:
        self.room = room
        self.submitted: list[tuple[Exchange, bool]] = []

    def reserve(self) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        return True

    def release(self) -> None:
        self.room += 1

    def submit(self, exchange: Exchange, reserved: bool) -> None:
        self.submitted.append((exchange, reserved))

    async def start(self) -> None:
        return None

    async def stop(self, deadline: float) -> None:
        return None


@pytest.fixture(scope="module")
def upstream_url():
    with ThreadedServer(echo_upstream) as server:
        yield server.url


@pytest.fixture
def gateway_factory(upstream_url, upstream_client) -> Callable[..., Any]:
    @asynccontextmanager
    async def make(
        client: tuple[str, int] = UNTRUSTED_CLIENT, reporter: RecordingReporter | None = None, **env: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, RecordingReporter]]:
        settings = Settings(upstream_url=upstream_url, upstream_client=upstream_client, **env)
        async with serve(settings, client, reporter or RecordingReporter()) as running:
            yield running

    return make


@asynccontextmanager
async def serve(
    settings: Settings, client: tuple[str, int], reporter: RecordingReporter
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, RecordingReporter]]:
    """The app started in-process, an httpx client calling it as `client`, and the reporter that records its spans."""
    app = create_app(settings, metrics=Metrics(), reporter=reporter)
    await app.startup()
    transport = httpx.ASGITransport(app=app, client=client)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http, app, reporter
    finally:
        await app.shutdown()


def upstream_headers(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.json()["headers"]}


def counted(app: Gateway, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (any route, unless one is given)."""
    return sum(
        sample.value
        for metric in app.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


async def test_forged_headers_from_an_untrusted_client_are_replaced(gateway_factory):
    forged = {"x-b3-traceid": f"{TRACE_ID:032x}", "x-b3-spanid": "a2fb4a1d1a96d312", "x-b3-sampled": "1"}
    async with gateway_factory(sample_rate=0.0) as (http, app, reporter):
        response = await http.get("/", headers=forged)
    seen = upstream_headers(response)
    assert seen["x-b3-traceid"] != f"{TRACE_ID:032x}"
    assert seen["x-b3-sampled"] == "0"
    assert reporter.submitted == []
    assert counted(app, "gateway_trace_headers_ignored_total", reason="untrusted") == 1


async def test_a_trusted_network_joins_the_clients_trace(gateway_factory):
    incoming = {"x-b3-traceid": f"{TRACE_ID:032x}", "x-b3-spanid": "a2fb4a1d1a96d312", "x-b3-sampled": "1"}
    async with gateway_factory(client=TRUSTED_CLIENT, trusted_cidrs=["10.0.0.0/8"], sample_rate=0.0) as (
        http,
        app,
        reporter,
    ):
        response = await http.get("/items", headers=incoming)
    seen = upstream_headers(response)
    assert seen["x-b3-traceid"] == f"{TRACE_ID:032x}"
    assert seen["x-b3-sampled"] == "1"
    ((exchange, reserved),) = reporter.submitted
    assert exchange.parent_id == 0xA2FB4A1D1A96D312
    assert f"{exchange.client_span_id:016x}" == seen["x-b3-spanid"]
    assert f"{exchange.server_span_id:016x}" == seen["x-b3-parentspanid"]
    assert counted(app, "gateway_requests_total", decision="sampled", reason="trusted_parent") == 1


async def test_a_malformed_header_from_a_trusted_client_starts_a_fresh_trace_and_is_counted(gateway_factory):
    async with gateway_factory(client=TRUSTED_CLIENT, trust_incoming_trace=True, sample_rate=1.0) as (http, app, _):
        response = await http.get("/", headers={"x-b3-traceid": "not-hex", "x-b3-spanid": "a2fb4a1d1a96d312"})
    assert response.status_code == 200
    assert upstream_headers(response)["x-b3-sampled"] == "1"
    assert counted(app, "gateway_trace_headers_ignored_total", reason="malformed_trace_id") == 1


async def test_debug_from_a_trusted_client_sends_sampled_and_flags(gateway_factory):
    async with gateway_factory(trust_incoming_trace=True, sample_rate=0.0) as (http, app, reporter):
        response = await http.get("/", headers={"b3": "d"})
    seen = upstream_headers(response)
    assert (seen["x-b3-sampled"], seen["x-b3-flags"]) == ("1", "1")
    assert reporter.submitted[0][0].debug


async def test_a_full_span_queue_stops_sampling_new_traces(gateway_factory):
    async with gateway_factory(sample_rate=1.0, reporter=RecordingReporter(room=2)) as (http, app, reporter):
        decisions = [upstream_headers(await http.get("/"))["x-b3-sampled"] for _ in range(4)]
    assert decisions == ["1", "1", "0", "0"]
    assert len(reporter.submitted) == 2
    assert all(reserved for _, reserved in reporter.submitted)
    assert counted(app, "gateway_requests_total", decision="not_sampled", reason="queue_full") == 2


async def test_the_traces_per_second_cap_limits_new_sampled_traces(gateway_factory):
    async with gateway_factory(sample_rate=1.0, max_traces_per_second=2) as (http, app, reporter):
        decisions = [upstream_headers(await http.get("/"))["x-b3-sampled"] for _ in range(5)]
    assert decisions.count("1") == 2
    assert counted(app, "gateway_requests_total", decision="not_sampled", reason="rate_limited") == 3


async def test_ids_on_the_wire_match_the_spans_and_traceresponse(upstream_url):
    settings = Settings(upstream_url=upstream_url, sample_rate=1.0)
    reporter = RecordingReporter()
    ids = FixedIds(trace_ids=[TRACE_ID], span_ids=[0x1111111111111111, 0x2222222222222222])
    app = create_app(settings, metrics=Metrics(), reporter=reporter, ids=ids)
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app, client=UNTRUSTED_CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            response = await http.get("/vote?choice=x")
    finally:
        await app.shutdown()
    seen = upstream_headers(response)
    assert seen["x-b3-traceid"] == f"{TRACE_ID:032x}"
    assert seen["x-b3-parentspanid"] == "1111111111111111"
    assert seen["x-b3-spanid"] == "2222222222222222"
    assert response.headers["traceresponse"] == f"00-{TRACE_ID:032x}-1111111111111111-01"
    ((exchange, _),) = reporter.submitted
    assert (exchange.name, exchange.status_code, exchange.error) == ("GET /vote", 200, None)
    assert (exchange.client_host, exchange.client_port) == UNTRUSTED_CLIENT


async def test_extra_propagation_formats_carry_the_same_context(gateway_factory):
    async with gateway_factory(sample_rate=1.0, propagation=["b3multi", "b3", "tracecontext"]) as (http, _, __):
        seen = upstream_headers(await http.get("/"))
    trace, span, parent = seen["x-b3-traceid"], seen["x-b3-spanid"], seen["x-b3-parentspanid"]
    assert seen["b3"] == f"{trace}-{span}-1-{parent}"
    # 03: sampled, and the Random flag of an id the gateway made (W3C Trace Context Level 2).
    assert seen["traceparent"] == f"00-{trace.rjust(32, '0')}-{span}-03"
    assert seen["tracestate"] == "ot=th:0", "sampled at rate 1.0: threshold 0"


async def test_per_route_sample_rates_override_the_global_rate(tmp_path, upstream_url):
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"routes:\n"
        f"  - {{name: votes, path_prefix: /api/vote, upstream: '{upstream_url}', sample_rate: 1.0}}\n"
        f"  - {{name: rest, path_prefix: /, upstream: '{upstream_url}'}}\n"
    )
    settings = Settings(routes_file=routes, sample_rate=0.0, upstream_url=upstream_url)
    reporter = RecordingReporter()
    app = create_app(settings, metrics=Metrics(), reporter=reporter)
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app, client=UNTRUSTED_CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            voted = upstream_headers(await http.get("/api/vote?choice=x"))
            listed = upstream_headers(await http.get("/api/list"))
    finally:
        await app.shutdown()
    assert (voted["x-b3-sampled"], listed["x-b3-sampled"]) == ("1", "0")
    # A named route names its spans; only the GATEWAY_UPSTREAM_URL fallback is named by the request's path.
    assert [exchange.name for exchange, _ in reporter.submitted] == ["GET votes"]


async def test_the_fallback_route_names_spans_by_path_even_beside_a_route_called_default(tmp_path, upstream_url):
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"routes:\n  - {{name: default, path_prefix: /api, upstream: '{upstream_url}'}}\n")
    reporter = RecordingReporter()
    app = create_app(
        Settings(routes_file=routes, upstream_url=upstream_url, sample_rate=1.0), metrics=Metrics(), reporter=reporter
    )
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app, client=UNTRUSTED_CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            await http.get("/api/list")
            await http.get("/elsewhere")
    finally:
        await app.shutdown()
    assert [exchange.name for exchange, _ in reporter.submitted] == ["GET default", "GET /elsewhere"]


async def test_a_request_no_route_matches_gets_404_with_an_unsampled_traceresponse(tmp_path, upstream_url):
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"routes:\n  - {{name: api, path_prefix: /api, upstream: '{upstream_url}'}}\n")
    reporter = RecordingReporter()
    app = create_app(Settings(routes_file=routes, sample_rate=1.0), metrics=Metrics(), reporter=reporter)
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app, client=UNTRUSTED_CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            response = await http.get("/elsewhere")
    finally:
        await app.shutdown()
    assert response.status_code == 404
    version, trace_id, span_id, flags = response.headers["traceresponse"].split("-")
    assert (version, len(trace_id), len(span_id), flags) == ("00", 32, 16, "00")
    assert reporter.submitted == []
    assert counted(app, "gateway_upstream_errors_total", kind="no_route") == 1


# A trace id whose rightmost 56 bits fall under rate 0.5's threshold (2^55): the id alone is not sampled.
UNSAMPLED_BY_ID = 0x463AC35C9F6413AD4800000000000001


async def test_a_trusted_rv_decides_a_deferred_trace_and_the_threshold_goes_upstream(gateway_factory):
    # B3 without a decision defers it to the gateway; the traceparent of the same trace brings the `ot` entry.
    headers = {
        "x-b3-traceid": f"{UNSAMPLED_BY_ID:032x}",
        "x-b3-spanid": "1111111111111111",
        "traceparent": f"00-{UNSAMPLED_BY_ID:032x}-1111111111111111-00",
        "tracestate": "rojo=1,ot=rv:80000000000000",
    }
    env = {"trust_incoming_trace": True, "propagation": ["b3multi", "tracecontext"], "sample_rate": 0.5}
    async with gateway_factory(client=TRUSTED_CLIENT, **env) as (http, _, reporter):
        seen = upstream_headers(await http.get("/", headers=headers))
        assert seen["x-b3-sampled"] == "1", "rv 0x80000000000000 reaches th:8, whatever the trace id says"
        assert seen["tracestate"] == "ot=th:8;rv:80000000000000,rojo=1"
        assert seen["traceparent"].endswith("-01"), "not the gateway's id: no Random flag"
        ((exchange, reserved),) = reporter.submitted
        assert reserved and ("w3c.tracestate", "ot=th:8;rv:80000000000000,rojo=1") in exchange.tags

        headers["tracestate"] = "ot=rv:7fffffffffffff"
        seen = upstream_headers(await http.get("/", headers=headers))
        assert seen["x-b3-sampled"] == "0"
        assert seen["tracestate"] == "ot=rv:7fffffffffffff", "rv stays; no th on an unsampled trace"

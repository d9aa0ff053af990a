"""Routes and their policy in the request flow: the app in-process against real loopback upstreams."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from gateway.app import Gateway
from gateway.settings import Settings
from tests.integration.test_request_flow import (
    TRUSTED_CLIENT,
    UNTRUSTED_CLIENT,
    RecordingReporter,
    counted,
    serve,
    upstream_headers,
)
from tests.support import ThreadedServer

pytestmark = pytest.mark.anyio

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


async def upstream_app(scope, receive, send):
    """<anything>/slow?seconds=S answers after S seconds; anything else echoes the path and headers as JSON."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"].endswith("/slow"):
        query = parse_qs(scope["query_string"].decode())
        await asyncio.sleep(float(query["seconds"][0]))
    body = json.dumps(
        {"path": scope["path"], "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]]}
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def upstream_url():
    with ThreadedServer(upstream_app) as server:
        yield server.url


@pytest.fixture
def gateway_with_routes(tmp_path: Path, upstream_url: str, upstream_client: str) -> Callable[..., Any]:
    @asynccontextmanager
    async def make(
        routes: str, client: tuple[str, int] = UNTRUSTED_CLIENT, **env: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, RecordingReporter]]:
        path = tmp_path / "routes.yaml"
        path.write_text(routes.replace("UPSTREAM", upstream_url))
        settings = Settings(routes_file=path, upstream_client=upstream_client, routes_reload_interval=0, **env)
        async with serve(settings, client, RecordingReporter()) as running:
            yield running

    return make


async def test_a_routes_span_name_and_tags_reach_its_spans(gateway_with_routes):
    routes = """
routes:
  - name: votes
    path_prefix: /api/vote
    upstream: UPSTREAM
    sample_rate: 1.0
    span_name: "vote {method} {path}"
    tags: {team: voting, tier: 1}
  - name: rest
    upstream: UPSTREAM
    sample_rate: 1.0
"""
    async with gateway_with_routes(routes) as (http, _, reporter):
        await http.post("/api/vote/7")
        await http.get("/index.html")
    (vote, _), (rest, _) = reporter.submitted
    assert (vote.name, vote.tags) == ("vote POST /api/vote/7", (("team", "voting"), ("tier", "1")))
    assert (rest.name, rest.tags) == ("GET rest", ())


async def test_a_routes_timeout_replaces_the_gateways(gateway_with_routes):
    routes = """
routes:
  - {name: impatient, path_prefix: /impatient, upstream: UPSTREAM, timeout: 0.2}
  - {name: patient, upstream: UPSTREAM}
"""
    async with gateway_with_routes(routes, upstream_timeout=30) as (http, app, _):
        impatient = await http.get("/impatient/slow", params={"seconds": "2"})
        patient = await http.get("/slow", params={"seconds": "0.5"})
    assert impatient.status_code == 504
    assert patient.status_code == 200
    assert counted(app, "gateway_upstream_errors_total", kind="timeout") == 1


async def test_the_status_of_an_unrouted_request_is_configurable_and_it_is_not_sampled(gateway_with_routes):
    routes = "routes:\n  - {name: api, path_prefix: /api, upstream: UPSTREAM, sample_rate: 1.0}\n"
    async with gateway_with_routes(routes, no_route_status=421) as (http, app, reporter):
        response = await http.get("/elsewhere")
    assert response.status_code == 421
    assert response.headers["traceresponse"].endswith("-00")
    assert reporter.submitted == []
    assert counted(app, "gateway_requests_total") == 0


async def test_decisions_are_counted_by_route_and_reason(gateway_with_routes):
    routes = """
routes:
  - {name: capped, path_prefix: /capped, upstream: UPSTREAM, sample_rate: 1.0, max_traces_per_second: 2}
  - {name: never, path_prefix: /never, upstream: UPSTREAM, sample_rate: 0.0}
  - {name: rest, upstream: UPSTREAM, sample_rate: 1.0}
"""
    async with gateway_with_routes(routes, max_traces_per_second=4) as (http, app, _):
        capped = [upstream_headers(await http.get("/capped"))["x-b3-sampled"] for _ in range(4)]
        never = [upstream_headers(await http.get("/never"))["x-b3-sampled"] for _ in range(3)]
        rest = [upstream_headers(await http.get("/rest"))["x-b3-sampled"] for _ in range(4)]
    assert capped == ["1", "1", "0", "0"]
    assert never == ["0"] * 3
    # The process cap of 4 had 2 tokens left after the capped route took its 2.
    assert rest == ["1", "1", "0", "0"]
    assert counted(app, "gateway_requests_total", route="capped", decision="sampled", reason="ratio") == 2
    assert counted(app, "gateway_requests_total", route="capped", reason="route_rate_limited") == 2
    assert counted(app, "gateway_requests_total", route="never", decision="not_sampled", reason="ratio") == 3
    assert counted(app, "gateway_requests_total", route="rest", reason="rate_limited") == 2
    assert counted(app, "gateway_route_sample_rate", route="never") == 0.0
    assert counted(app, "gateway_route_sample_rate", route="capped") == 1.0


async def test_a_trusted_clients_tracestate_goes_on_with_its_traceparent(gateway_with_routes):
    routes = "routes:\n  - {name: api, upstream: UPSTREAM, sample_rate: 0.0}\n"
    headers = {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"}
    env = {"trust_incoming_trace": True, "propagation": ["b3multi", "tracecontext"]}
    async with gateway_with_routes(routes, client=TRUSTED_CLIENT, **env) as (http, _, reporter):
        seen = upstream_headers(await http.get("/", headers=headers))
    assert seen["x-b3-traceid"] == TRACE
    assert seen["x-b3-sampled"] == "1"
    assert seen["traceparent"] == f"00-{TRACE}-{seen['x-b3-spanid']}-01"
    assert seen["tracestate"] == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    [(exchange, _)] = reporter.submitted
    assert exchange.parent_id == int(PARENT, 16)


@pytest.mark.parametrize(
    ("client", "env", "headers"),
    [
        pytest.param(UNTRUSTED_CLIENT, {"propagation": ["b3multi", "tracecontext"]}, {}, id="untrusted-client"),
        pytest.param(TRUSTED_CLIENT, {"trust_incoming_trace": True}, {}, id="tracecontext-not-emitted"),
        pytest.param(
            TRUSTED_CLIENT,
            {"trust_incoming_trace": True, "propagation": ["tracecontext"]},
            {"tracestate": "Bad Key=1"},
            id="invalid-tracestate",
        ),
    ],
)
async def test_no_tracestate_goes_upstream_unless_trusted_valid_and_emitted(gateway_with_routes, client, env, headers):
    routes = "routes:\n  - {name: api, upstream: UPSTREAM}\n"
    sent = {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "congo=t61rcWkgMzE", **headers}
    async with gateway_with_routes(routes, client=client, **env) as (http, app, _):
        seen = upstream_headers(await http.get("/", headers=sent))
    assert "tracestate" not in seen
    if headers:
        assert counted(app, "gateway_trace_headers_ignored_total", reason="malformed_tracestate") == 1
        assert seen["x-b3-traceid"] == TRACE, "a bad tracestate must not spoil its traceparent"


async def test_a_reload_swaps_the_table_and_keeps_the_routes_state(gateway_with_routes, tmp_path):
    routes = "routes:\n  - {name: api, path_prefix: /api, upstream: UPSTREAM, max_traces_per_second: 1}\n"
    async with gateway_with_routes(routes, sample_rate=1.0) as (http, app, _):
        first = upstream_headers(await http.get("/api/x"))
        before = app.routing
        (tmp_path / "routes.yaml").write_text(
            routes.replace("UPSTREAM", "http://127.0.0.1:9")
            + f"  - {{name: new, path_prefix: /new, upstream: '{app.routing.routes[0].upstream.url}'}}\n"
        )
        assert await app.reload_routes() is True
        assert app.routing is not before
        assert [route.name for route in app.routing.routes] == ["api", "new"]
        # The capped route's bucket was kept: its one token is still spent.
        assert app.routing.routes[0].cap is before.routes[0].cap
        second = await http.get("/new/y")
        (tmp_path / "routes.yaml").write_text("routes: [")
        assert await app.reload_routes() is False
        assert [route.name for route in app.routing.routes] == ["api", "new"]
        view = app.config_view()
    assert first["x-b3-sampled"] == "1"
    assert second.status_code == 200
    assert view["last_reload"]["outcome"] == "rejected"
    assert view["last_reload"]["reason"].startswith(f"{tmp_path / 'routes.yaml'}:1:")
    assert counted(app, "gateway_route_reloads_total", outcome="ok") == 1
    assert counted(app, "gateway_route_reloads_total", outcome="rejected") == 1


async def test_the_access_line_names_the_route(gateway_with_routes, caplog, capfd):
    # The access lines are written to fd 2 by a thread of their own, not as records, when the logger is enabled.
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with gateway_with_routes("routes:\n  - {name: api, upstream: UPSTREAM}\n") as (http, _, __):
        await http.get("/x")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"gateway.access"' in line]
    [line] = [line for line in lines if line["logger"] == "gateway.access"]
    assert (line["route"], line["path"], line["status"]) == ("api", "/x", 200)


@pytest.mark.parametrize(("access_log", "level"), [(False, logging.INFO), (True, logging.WARNING)])
async def test_no_access_line_when_it_is_off_or_the_level_is_above_info(
    gateway_with_routes, caplog, capfd, access_log, level
):
    caplog.set_level(level, logger="gateway.access")
    routes = "routes:\n  - {name: api, upstream: UPSTREAM}\n"
    async with gateway_with_routes(routes, access_log=access_log) as (http, _, __):
        assert (await http.get("/x")).status_code == 200
    assert '"gateway.access"' not in capfd.readouterr().err

"""A well-behaved mesh: every service joins the caller's trace and honours its sampling decision."""

from __future__ import annotations

import httpx
import pytest

from gateway_devtools.mesh.app import WEB, ServiceConfig, create_app
from tests.integration.mesh.conftest import VOTE, VOTE_SPANS, MeshFactory, b3
from tests.integration.mesh.traces import ZipkinReader, assert_connected, poll, remote_service, service, services
from tests.support import LOOPBACK, ThreadedServer, free_port

# (path, services that take part, spans: web's SERVER span, one CLIENT span per call, one SERVER span per call)
REQUESTS = [
    ("/api/list", {"web", "emoji"}, 3),
    (VOTE, {"web", "emoji", "voting"}, VOTE_SPANS),
    ("/api/leaderboard", {"web", "emoji", "voting"}, 5),
]


@pytest.mark.parametrize(("path", "expected_services", "span_count"), REQUESTS)
def test_sampled_request_is_one_connected_tree(
    start_mesh: MeshFactory, zipkin: ZipkinReader, path: str, expected_services: set[str], span_count: int
) -> None:
    mesh = start_mesh()
    headers, trace_id, caller_span = b3()
    assert mesh.get(path, headers).status_code == 200

    spans = zipkin.wait_for_trace(trace_id, span_count)

    assert len(spans) == span_count, spans
    assert services(spans) == expected_services
    root = assert_connected(spans, root_parent=caller_span)
    assert (service(root), root["kind"], root["name"]) == ("web", "SERVER", f"get {path.partition('?')[0]}")
    assert all(span["traceId"] == trace_id for span in spans)
    assert {remote_service(span) for span in spans if span["kind"] == "CLIENT"} == expected_services - {"web"}
    assert all(span["tags"]["http.status_code"] == "200" and "error" not in span["tags"] for span in spans)


def test_unsampled_request_reports_no_span(start_mesh: MeshFactory, zipkin: ZipkinReader) -> None:
    mesh = start_mesh()
    headers, unsampled_trace, _ = b3(sampled="0")
    assert mesh.get(VOTE, headers).status_code == 200

    barrier = mesh.barrier()

    assert zipkin.trace(unsampled_trace) == []
    for name in ("web", "emoji", "voting"):
        assert [trace[0]["traceId"] for trace in zipkin.traces(name)] == [barrier]


def test_debug_flag_is_honoured_and_reported(start_mesh: MeshFactory, zipkin: ZipkinReader) -> None:
    mesh = start_mesh()
    headers, trace_id, caller_span = b3(sampled=None, **{"X-B3-Flags": "1"})
    assert mesh.get(VOTE, headers).status_code == 200

    spans = zipkin.wait_for_trace(trace_id, VOTE_SPANS)

    assert len(spans) == VOTE_SPANS
    assert_connected(spans, root_parent=caller_span)
    assert all(span.get("debug") is True for span in spans), spans


def test_without_trace_headers_web_starts_the_trace(start_mesh: MeshFactory, zipkin: ZipkinReader) -> None:
    mesh = start_mesh()
    assert mesh.get(VOTE).status_code == 200

    [trace] = poll(lambda: zipkin.traces("web"), lambda traces: sum(map(len, traces)) >= VOTE_SPANS, 10.0)

    root = assert_connected(trace, root_parent=None)
    assert service(root) == "web"


def test_failed_vote_marks_the_error_on_every_span_of_its_path(start_mesh: MeshFactory, zipkin: ZipkinReader) -> None:
    mesh = start_mesh()
    headers, trace_id, caller_span = b3()
    response = mesh.get("/api/vote?choice=:doughnut:", headers)
    assert response.status_code == 500

    spans = zipkin.wait_for_trace(trace_id, VOTE_SPANS)

    assert_connected(spans, root_parent=caller_span)
    failed = {(service(span), span["kind"], span["tags"].get("error")) for span in spans if "error" in span["tags"]}
    broken = "voting for :doughnut: is broken, as in emojivoto"
    assert failed == {
        ("voting", "SERVER", broken),
        ("web", "CLIENT", "500"),
        ("web", "SERVER", f"voting answered 500: {broken}"),
    }
    assert response.json() == {"error": f"voting answered 500: {broken}"}


def test_leaderboard_joins_voting_results_with_emojis(start_mesh: MeshFactory) -> None:
    mesh = start_mesh()
    for choice in (":rocket:", ":joy:", ":rocket:"):
        assert mesh.get(f"/api/vote?choice={choice}").status_code == 200
    assert mesh.get("/api/vote?choice=:nope:").status_code == 400

    board = mesh.get("/api/leaderboard").json()

    assert board == [
        {"shortcode": ":rocket:", "votes": 2, "unicode": "🚀"},
        {"shortcode": ":joy:", "votes": 1, "unicode": "😂"},
    ]


def test_an_unreachable_downstream_is_a_502_and_an_error_span(zipkin: ZipkinReader) -> None:
    closed = f"http://{LOOPBACK}:{free_port()}"
    port = free_port()
    config = ServiceConfig(
        WEB, LOOPBACK, port, zipkin_url=f"{zipkin.base_url}/api/v2/spans", emoji_url=closed, voting_url=closed
    )
    headers, trace_id, caller_span = b3()
    with ThreadedServer(create_app(config), port) as web:
        response = httpx.get(f"{web.url}/api/list", headers=headers, timeout=10, trust_env=False)
        spans = zipkin.wait_for_trace(trace_id, 2)

    assert response.status_code == 502
    assert response.json() == {"error": "emoji unreachable: ConnectError"}
    server, client = sorted(spans, key=lambda span: span["kind"], reverse=True)
    assert (server["kind"], server.get("parentId"), server["tags"]["http.status_code"]) == (
        "SERVER",
        caller_span,
        "502",
    )
    assert (client["kind"], client["parentId"], client["tags"]) == (
        "CLIENT",
        server["id"],
        {"http.method": "GET", "http.path": "/list", "error": "emoji unreachable: ConnectError"},
    )

"""Each misbehaviour flag breaks the trace in exactly the way a badly instrumented service would."""

from __future__ import annotations

import time

from gateway_devtools.mesh.tracing import Misbehaviour
from tests.integration.mesh.conftest import FLUSH_INTERVAL, VOTE, VOTE_SPANS, MeshFactory, b3
from tests.integration.mesh.traces import (
    Span,
    ZipkinReader,
    assert_connected,
    childless_clients,
    orphans,
    poll,
    remote_service,
    service,
    services,
)


def settle() -> None:
    # Ample time for a span that should not exist to arrive: services flush every FLUSH_INTERVAL.
    time.sleep(FLUSH_INTERVAL * 10)


def test_drop_spans_on_voting_leaves_its_spans_out(start_mesh: MeshFactory, zipkin: ZipkinReader) -> None:
    mesh = start_mesh(voting=Misbehaviour.DROP_SPANS)
    headers, trace_id, caller_span = b3()
    assert mesh.get(VOTE, headers).status_code == 200

    spans = zipkin.wait_for_trace(trace_id, VOTE_SPANS - 1)
    settle()
    spans = zipkin.trace(trace_id)

    assert services(spans) == {"web", "emoji"}
    assert len(spans) == VOTE_SPANS - 1
    # Still one tree, but web's call to voting has no answer in it.
    assert [span.get("parentId") for span in orphans(spans)] == [caller_span]
    assert [remote_service(span) for span in childless_clients(spans)] == ["voting"]
    assert zipkin.traces("voting") == []


def test_drop_spans_on_web_leaves_the_downstream_spans_without_parents(
    start_mesh: MeshFactory, zipkin: ZipkinReader
) -> None:
    mesh = start_mesh(web=Misbehaviour.DROP_SPANS)
    headers, trace_id, caller_span = b3()
    assert mesh.get(VOTE, headers).status_code == 200

    spans = zipkin.wait_for_trace(trace_id, 2)
    settle()
    spans = zipkin.trace(trace_id)

    # web still propagated the decision and its CLIENT span ids, but never reported those spans.
    assert sorted((service(span), span["kind"]) for span in spans) == [("emoji", "SERVER"), ("voting", "SERVER")]
    assert orphans(spans) == spans
    assert caller_span not in {span.get("parentId") for span in spans}


def test_ignore_decision_on_voting_reports_a_span_whose_parent_was_never_sampled(
    start_mesh: MeshFactory, zipkin: ZipkinReader
) -> None:
    mesh = start_mesh(voting=Misbehaviour.IGNORE_DECISION)
    headers, trace_id, _ = b3(sampled="0")
    assert mesh.get(VOTE, headers).status_code == 200

    [voting_span] = zipkin.wait_for_trace(trace_id, 1)
    mesh.barrier()

    assert zipkin.trace(trace_id) == [voting_span]
    assert (service(voting_span), voting_span["kind"]) == ("voting", "SERVER")
    assert orphans([voting_span]) == [voting_span]
    assert voting_span.get("parentId") is not None


def test_ignore_decision_on_web_starts_a_trace_the_gateway_did_not_sample(
    start_mesh: MeshFactory, zipkin: ZipkinReader
) -> None:
    mesh = start_mesh(web=Misbehaviour.IGNORE_DECISION)
    headers, trace_id, caller_span = b3(sampled="0")
    assert mesh.get(VOTE, headers).status_code == 200

    spans = zipkin.wait_for_trace(trace_id, VOTE_SPANS)

    # web sampled it and sent "sampled" on: a whole tree whose root hangs from a gateway span that was never reported.
    assert services(spans) == {"web", "emoji", "voting"}
    root = assert_connected(spans, root_parent=caller_span)
    assert service(root) == "web"


def test_no_propagate_on_web_splits_the_request_into_three_traces(
    start_mesh: MeshFactory, zipkin: ZipkinReader
) -> None:
    mesh = start_mesh(web=Misbehaviour.NO_PROPAGATE)
    headers, trace_id, caller_span = b3()
    assert mesh.get(VOTE, headers).status_code == 200

    spans = zipkin.wait_for_trace(trace_id, 3)
    others = {name: _traces_of(zipkin, name) for name in ("emoji", "voting")}
    settle()

    # web's own spans: its SERVER span and two CLIENT spans nobody answered in this trace.
    spans = zipkin.trace(trace_id)
    assert sorted((service(span), span["kind"]) for span in spans) == [
        ("web", "CLIENT"),
        ("web", "CLIENT"),
        ("web", "SERVER"),
    ]
    assert sorted(remote_service(span) for span in childless_clients(spans)) == ["emoji", "voting"]
    # emoji and voting got no trace headers: each started a trace of its own, with itself as the root.
    for name, traces in others.items():
        [[span]] = traces
        assert span["traceId"] != trace_id
        assert (service(span), span["kind"], span.get("parentId")) == (name, "SERVER", None)


def _traces_of(zipkin: ZipkinReader, name: str) -> list[list[Span]]:
    traces: list[list[Span]] = poll(lambda: zipkin.traces(name), lambda found: len(found) >= 1, 10.0)
    return traces

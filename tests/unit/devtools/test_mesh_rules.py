"""The mesh's pure rules, without servers: decisions, ids, headers, spans, votes, the bot's choices, batching."""

from __future__ import annotations

import gzip
import json
import random

import pytest
from py_zipkin.encoding import Span

from gateway.context import Extracted, TraceContext
from gateway.sampling import RatioSampler
from gateway.span_sender import RetryableError
from gateway.spans import local_endpoint
from gateway.zipkin_json import encode_spans
from gateway_devtools.mesh.reporting import SpanBatcher
from gateway_devtools.mesh.tracing import HttpCall, Misbehaviour, Tracer
from gateway_devtools.mesh.votebot import DOUGHNUT_SHARE, Tally, pick_choice
from gateway_devtools.mesh.voting import Ballot, BrokenChoiceError
from tests.support import FixedIds

TRACE, CALLER, SERVER_ID, CLIENT_ID = 0xA1, 0xB2, 0xC3, 0xD4
LOCAL = local_endpoint("web", "127.0.0.1", 8081)
NONE, IGNORE, DROP, NO_PROPAGATE = (
    Misbehaviour.NONE,
    Misbehaviour.IGNORE_DECISION,
    Misbehaviour.DROP_SPANS,
    Misbehaviour.NO_PROPAGATE,
)


def tracer(rate: float = 1.0, misbehaviour: Misbehaviour = NONE) -> Tracer:
    return Tracer(LOCAL, RatioSampler(rate), misbehaviour, FixedIds([0xE5], [SERVER_ID, CLIENT_ID]))


def incoming(sampled: bool | None, debug: bool = False) -> Extracted:
    return Extracted(TraceContext(TRACE, CALLER, None, sampled, debug), sampled, debug)


@pytest.mark.parametrize(
    ("extracted", "rate", "misbehaviour", "expected"),
    [
        # The caller's decision wins over the service's own rate...
        (incoming(True), 0.0, NONE, TraceContext(TRACE, SERVER_ID, CALLER, True)),
        (incoming(False), 1.0, NONE, TraceContext(TRACE, SERVER_ID, CALLER, False)),
        (incoming(True, debug=True), 0.0, NONE, TraceContext(TRACE, SERVER_ID, CALLER, True, True)),
        # ...the rate decides only when there is none...
        (incoming(None), 1.0, NONE, TraceContext(TRACE, SERVER_ID, CALLER, True)),
        (incoming(None), 0.0, NONE, TraceContext(TRACE, SERVER_ID, CALLER, False)),
        (Extracted(), 1.0, NONE, TraceContext(0xE5, SERVER_ID, None, True)),
        # ...a decision without ids is still a decision, for a new trace...
        (Extracted(sampled=False), 1.0, NONE, TraceContext(0xE5, SERVER_ID, None, False)),
        # ...and a service that ignores decisions goes by its rate alone.
        (incoming(False), 1.0, IGNORE, TraceContext(TRACE, SERVER_ID, CALLER, True)),
        (incoming(True, debug=True), 0.0, IGNORE, TraceContext(TRACE, SERVER_ID, CALLER, False)),
        # The other misbehaviours do not touch the decision.
        (incoming(False), 1.0, DROP, TraceContext(TRACE, SERVER_ID, CALLER, False)),
        (incoming(True), 0.0, NO_PROPAGATE, TraceContext(TRACE, SERVER_ID, CALLER, True)),
    ],
)
def test_server_context(extracted: Extracted, rate: float, misbehaviour: Misbehaviour, expected: TraceContext):
    assert tracer(rate, misbehaviour).server_context(extracted) == expected


def test_client_context_is_a_child_of_the_server_span_with_its_decision():
    mesh_tracer = tracer()
    server = mesh_tracer.server_context(incoming(True, debug=True))

    assert mesh_tracer.client_context(server) == TraceContext(TRACE, CLIENT_ID, SERVER_ID, True, True)


@pytest.mark.parametrize(
    ("misbehaviour", "expected"),
    [
        (
            NONE,
            [
                (b"x-b3-traceid", b"00000000000000a1"),
                (b"x-b3-spanid", b"00000000000000d4"),
                (b"x-b3-parentspanid", b"00000000000000c3"),
                (b"x-b3-sampled", b"0"),
            ],
        ),
        (NO_PROPAGATE, []),
    ],
)
def test_outgoing_headers(misbehaviour: Misbehaviour, expected: list[tuple[bytes, bytes]]):
    client = TraceContext(TRACE, CLIENT_ID, SERVER_ID, False)

    assert tracer(misbehaviour=misbehaviour).outgoing_headers(client) == expected


@pytest.mark.parametrize(
    ("sampled", "misbehaviour", "reports"),
    [(True, NONE, True), (False, NONE, False), (True, DROP, False), (True, IGNORE, True), (True, NO_PROPAGATE, True)],
)
def test_reports_only_sampled_spans_unless_dropping(sampled: bool, misbehaviour: Misbehaviour, reports: bool):
    assert tracer(misbehaviour=misbehaviour).reports(TraceContext(TRACE, SERVER_ID, CALLER, sampled)) is reports


def test_spans_encode_as_zipkin_v2_with_http_tags():
    context = TraceContext(TRACE, CLIENT_ID, SERVER_ID, True)
    remote = local_endpoint("voting", "127.0.0.1", 8083)
    call = HttpCall("POST", "/vote", start=1700000000.25, duration=0.0015, status_code=500, remote=remote)

    [encoded] = json.loads(encode_spans([tracer().client_span(context, call)]))

    assert encoded == {
        "traceId": "00000000000000a1",
        "id": "00000000000000d4",
        "parentId": "00000000000000c3",
        "kind": "CLIENT",
        "name": "POST /vote",
        "timestamp": 1700000000250000,
        "duration": 1500,
        "localEndpoint": {"serviceName": "web", "ipv4": "127.0.0.1", "port": 8081},
        "remoteEndpoint": {"serviceName": "voting", "ipv4": "127.0.0.1", "port": 8083},
        "tags": {"http.method": "POST", "http.path": "/vote", "http.status_code": "500", "error": "500"},
    }


@pytest.mark.parametrize(
    ("status_code", "error", "expected"),
    [
        (200, None, None),
        (302, None, None),
        (404, None, "404"),
        (500, "broken", "broken"),
        (None, "timed out", "timed out"),
    ],
)
def test_error_tag_follows_brave(status_code: int | None, error: str | None, expected: str | None):
    call = HttpCall("GET", "/", 0.0, 0.001, status_code, error)

    span = tracer().server_span(TraceContext(TRACE, SERVER_ID, None, True), call)

    assert (span.tags or {}).get("error") == expected


def test_ballot_counts_votes_and_refuses_doughnut_like_emojivoto():
    ballot = Ballot()
    for shortcode in (":joy:", ":rocket:", ":joy:", ":dog:"):
        ballot.vote(shortcode)

    with pytest.raises(BrokenChoiceError):
        ballot.vote(":doughnut:")
    assert ballot.results(2) == [(":joy:", 2), (":rocket:", 1)]


def test_vote_bot_votes_for_doughnut_about_15_percent_of_the_time():
    rng = random.Random(7)

    choices = [pick_choice([":joy:", ":dog:"], rng) for _ in range(2000)]

    assert choices.count(":doughnut:") / len(choices) == pytest.approx(DOUGHNUT_SHARE, abs=0.03)
    assert {":joy:", ":dog:"} <= set(choices)


def test_vote_bot_summary():
    tally = Tally()
    for outcome in ("ok", "ok", "/api/vote 500", "ok", "/api/vote 500", "/api/list ConnectError"):
        tally.record(outcome)

    assert tally.summary(10.0) == (
        "vote-bot: 6 requests in the last 10s, 3 ok; failed: /api/list ConnectError x1, /api/vote 500 x2"
    )


class FakeSender:
    def __init__(self, fail: bool = False) -> None:
        self.payloads: list[list[dict[str, object]]] = []
        self.fail = fail
        self.closed = False

    async def send(self, payload: bytes) -> None:
        if self.fail:
            raise RetryableError("collector answered 503")
        self.payloads.append(json.loads(gzip.decompress(payload)))

    async def aclose(self) -> None:
        self.closed = True


def spans(count: int) -> list[Span]:
    server = TraceContext(TRACE, SERVER_ID, None, True)
    return [tracer().server_span(server, HttpCall("GET", f"/{index}", 1.0, 0.001)) for index in range(count)]


@pytest.mark.anyio
async def test_batcher_sends_in_batches_and_drains_on_stop():
    sender = FakeSender()
    batcher = SpanBatcher(sender, batch_size=3, flush_interval=60.0)
    await batcher.start()

    batcher.submit(spans(2))
    batcher.submit(spans(5))
    await batcher.stop(deadline=5.0)

    assert [len(payload) for payload in sender.payloads] == [3, 3, 1]
    assert sender.closed
    assert batcher.dropped == 0


@pytest.mark.anyio
async def test_batcher_drops_a_whole_request_when_full_and_survives_failures():
    sender = FakeSender(fail=True)
    batcher = SpanBatcher(sender, max_queue=4, batch_size=100, flush_interval=60.0)
    await batcher.start()

    batcher.submit(spans(3))
    batcher.submit(spans(2))  # does not fit: both dropped, none queued
    await batcher.stop(deadline=5.0)

    assert batcher.dropped == 2 + 3  # the full queue's, then the failed batch's
    assert sender.payloads == []

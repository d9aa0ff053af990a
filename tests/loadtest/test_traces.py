"""The verdict on each trace, from hand-built spans: complete, unsampled, missing, partial, leaked, orphan."""

from __future__ import annotations

import threading

import pytest

from loadtest.expectations import DEFAULT_FILE, Expectations, load_expectations
from loadtest.rates import RateGroup
from loadtest.traces import (
    RatePolicy,
    Record,
    RecordBatch,
    Recorder,
    Recording,
    SpanView,
    Status,
    classify_announced,
    classify_unannounced,
    group_by_trace,
    judge,
    span_from_json,
    summary,
    trace_hex,
    tree_problems,
)

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
OTHER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
GATEWAY = "ingress-gateway"
# The expectations the locustfile uses by default: the demo mesh's.
EXPECT = load_expectations(DEFAULT_FILE)
# The gateway's SERVER span, whose id the response announces.
ROOT_ID = 0x1


def span(
    id: int,
    parent: int | None,
    service: str,
    kind: str = "SERVER",
    name: str = "get /",
    path: str | None = None,
    trace: int = TRACE,
    remote: str | None = None,
) -> SpanView:
    return SpanView(trace, id, parent, kind, service, name, path, remote)


def list_trace(trace: int = TRACE) -> list[SpanView]:
    """A whole /api/list trace: gateway SERVER -> gateway CLIENT -> web SERVER -> web CLIENT -> emoji SERVER."""
    return [
        span(ROOT_ID, None, GATEWAY, "SERVER", "get /api/list", "/api/list", trace),
        span(0x2, ROOT_ID, GATEWAY, "CLIENT", "get /api/list", "/api/list", trace),
        span(0x3, 0x2, "web", "SERVER", "get /api/list", "/api/list", trace),
        span(0x4, 0x3, "web", "CLIENT", "get /list", "/list", trace, remote="emoji"),
        span(0x5, 0x4, "emoji", "SERVER", "get /list", "/list", trace),
    ]


def vote_trace() -> list[SpanView]:
    """A whole /api/vote trace: web asks emoji, then voting."""
    return [
        span(ROOT_ID, None, GATEWAY, "SERVER", "get /api/vote", "/api/vote"),
        span(0x2, ROOT_ID, GATEWAY, "CLIENT", "get /api/vote", "/api/vote"),
        span(0x3, 0x2, "web", "SERVER", "get /api/vote", "/api/vote"),
        span(0x4, 0x3, "web", "CLIENT", "get /find", "/find", remote="emoji"),
        span(0x5, 0x4, "emoji", "SERVER", "get /find", "/find"),
        span(0x6, 0x3, "web", "CLIENT", "post /vote", "/vote", remote="voting"),
        span(0x7, 0x6, "voting", "SERVER", "post /vote", "/vote"),
    ]


def record(
    sampled: bool = True, endpoint: str = "/api/list", trace: int = TRACE, span_id: int = ROOT_ID, hostile: bool = False
) -> Record:
    return Record(trace, span_id, sampled, endpoint, 1_700_000_000.0, hostile)


def without(spans: list[SpanView], *ids: int) -> list[SpanView]:
    return [each for each in spans if each.id not in ids]


# --- one announced trace -----------------------------------------------------------------------------------


def test_whole_sampled_trace_is_complete():
    verdict = classify_announced(record(), list_trace(), EXPECT)
    assert verdict.status is Status.COMPLETE
    assert verdict.problems == ()
    assert verdict.endpoint == "/api/list"


def test_whole_vote_trace_with_emoji_and_voting_is_complete():
    assert classify_announced(record(endpoint="/api/vote"), vote_trace(), EXPECT).status is Status.COMPLETE


def test_unsampled_trace_without_spans_is_clean():
    verdict = classify_announced(record(sampled=False), [], EXPECT)
    assert verdict.status is Status.UNSAMPLED
    assert verdict.problems == ()


def test_sampled_trace_without_spans_is_missing():
    verdict = classify_announced(record(), [], EXPECT)
    assert verdict.status is Status.MISSING
    assert verdict.problems == ("sampled, yet the trace backend holds no span of it",)


def test_unsampled_trace_with_spans_is_leaked_and_names_who_reported():
    # web ignored the decision: its spans hang from the gateway's CLIENT span, which was never reported.
    spans = without(list_trace(), ROOT_ID, 0x2)
    verdict = classify_announced(record(sampled=False), spans, EXPECT)
    assert verdict.status is Status.LEAKED
    assert verdict.problems == ("not sampled, yet reported by emoji, web",)


@pytest.mark.parametrize(
    ("endpoint", "spans", "problems"),
    [
        pytest.param(
            "/api/vote",
            without(vote_trace(), 0x7),
            ("missing voting SERVER",),
            id="a service dropped its spans",
        ),
        pytest.param(
            "/api/vote",
            [*without(vote_trace(), 0x6, 0x7), span(0x6, 0x3, "web", "CLIENT", "post /vote")],
            ("missing web CLIENT -> voting, voting SERVER",),
            id="a call whose callee is not named, and no span from the callee",
        ),
        pytest.param(
            "/api/list",
            without(list_trace(), 0x2),
            ("missing parent of web SERVER 'get /api/list'", "missing ingress-gateway CLIENT"),
            id="the gateway's CLIENT span is missing",
        ),
        pytest.param(
            "/api/list",
            without(list_trace(), ROOT_ID, 0x2),
            (
                "no root span",
                "missing parent of web SERVER 'get /api/list'",
                "missing ingress-gateway SERVER, ingress-gateway CLIENT",
            ),
            id="the gateway reported nothing",
        ),
        pytest.param(
            "/api/list",
            [*without(list_trace(), 0x5), span(0x5, None, "emoji", name="get /list")],
            ("2 root spans: emoji SERVER 'get /list', ingress-gateway SERVER 'get /api/list'",),
            id="a service started its own trace with the same id",
        ),
        pytest.param(
            "/api/list",
            [span(0x3, None, "web", name="get /api/list"), *without(list_trace(), ROOT_ID, 0x2, 0x3)],
            (
                "the root is web SERVER 'get /api/list', not the gateway's SERVER span",
                "missing ingress-gateway SERVER, ingress-gateway CLIENT",
            ),
            id="the root is not the gateway's",
        ),
        pytest.param(
            "/api/list",
            [
                *without(list_trace(), 0x4, 0x5),
                span(0x4, 0x5, "web", "CLIENT", remote="emoji"),
                span(0x5, 0x4, "emoji"),
            ],
            ("not connected to the root: emoji SERVER 'get /', web CLIENT 'get /'",),
            id="a cycle of parents",
        ),
        pytest.param(
            "/api/list",
            [span(ROOT_ID, None, GATEWAY, "CLIENT", "get /api/list"), *list_trace()[1:]],
            (
                "the root is ingress-gateway CLIENT 'get /api/list', not the gateway's SERVER span",
                "missing ingress-gateway SERVER",
            ),
            id="the gateway's root is not a SERVER span",
        ),
    ],
)
def test_broken_sampled_trace_is_partial(endpoint, spans, problems):
    verdict = classify_announced(record(endpoint=endpoint), spans, EXPECT)
    assert verdict.status is Status.PARTIAL
    assert verdict.problems == problems


def test_root_other_than_the_announced_server_span_is_partial():
    verdict = classify_announced(record(span_id=0x99), list_trace(), EXPECT)
    assert verdict.status is Status.PARTIAL
    assert verdict.problems == ("the root is not the SERVER span the response announced",)


def test_many_broken_spans_are_described_by_a_few():
    spans = [span(ROOT_ID, None, GATEWAY, "SERVER", "get /api/list")] + [
        span(0x10 + n, 0x99, "web", name=f"get /{n}") for n in range(5)
    ]
    problems = tree_problems(spans, Expectations(), "/x", ROOT_ID)
    described = "web SERVER 'get /0', web SERVER 'get /1', web SERVER 'get /2' and 2 more"
    assert problems == (f"missing parent of {described}", "missing ingress-gateway CLIENT")


def test_an_endpoint_without_expectations_needs_only_the_gateway():
    spans = [span(ROOT_ID, None, GATEWAY, "SERVER", "get /health"), span(0x2, ROOT_ID, GATEWAY, "CLIENT")]
    assert classify_announced(record(endpoint="/health"), spans, EXPECT).status is Status.COMPLETE
    verdict = classify_announced(record(endpoint="/health"), spans[:1], EXPECT)
    assert verdict.problems == ("missing ingress-gateway CLIENT",)


def test_spans_beyond_the_expected_ones_are_allowed():
    # A mesh's proxies add spans of their own between the services'.
    spans = [*list_trace(), span(0x6, 0x5, "linkerd-proxy", "CLIENT", "get /db")]
    assert classify_announced(record(), spans, EXPECT).status is Status.COMPLETE


def test_gateway_service_name_is_configurable_and_case_insensitive():
    spans = [span(ROOT_ID, None, "edge", "SERVER"), span(0x2, ROOT_ID, "edge", "CLIENT")]
    expectations = Expectations(gateway_service="Edge")
    assert classify_announced(record(endpoint="/x"), spans, expectations).status is Status.COMPLETE
    assert classify_announced(record(endpoint="/x"), spans, Expectations()).status is Status.PARTIAL


# --- traces no response announced ----------------------------------------------------------------------------


def test_unannounced_trace_started_by_a_service_is_an_orphan():
    spans = [span(0x5, None, "emoji", name="get /list", path="/list")]
    verdict = classify_unannounced(OTHER_TRACE, spans, EXPECT)
    assert verdict.status is Status.ORPHAN
    assert verdict.problems == ("announced by no response, started by emoji SERVER 'get /list'",)
    assert verdict.endpoint == "/list"
    assert not verdict.announced


def test_unannounced_trace_without_root_is_an_orphan():
    verdict = classify_unannounced(TRACE, without(list_trace(), ROOT_ID, 0x2), EXPECT)
    assert verdict.status is Status.ORPHAN
    assert verdict.problems == ("announced by no response, without a root span; reported by emoji, web",)


def test_unannounced_gateway_trace_is_judged_by_the_endpoint_of_its_root():
    assert classify_unannounced(TRACE, list_trace(), EXPECT).status is Status.COMPLETE
    verdict = classify_unannounced(TRACE, without(list_trace(), 0x5), EXPECT)
    assert verdict.status is Status.PARTIAL
    assert verdict.problems == ("missing emoji SERVER",)


# --- a whole run ------------------------------------------------------------------------------------------------


def run_of(*records: Record) -> Recording:
    return Recording(records=records, stopped=1_700_000_001.0)


def test_judge_counts_every_status_and_keeps_the_broken_traces():
    sampled, unsampled, lost, leaky = TRACE, OTHER_TRACE, 0xA1, 0xA2
    orphan = [span(0x9, None, "voting", name="get /results", trace=0xB1)]
    traces = {
        sampled: list_trace(sampled),
        leaky: without(list_trace(leaky), ROOT_ID, 0x2),
        0xB1: orphan,
        0xB2: list_trace(0xB2),  # the gateway's, announced by no recorded response
    }
    recording = run_of(
        record(trace=sampled),
        record(sampled=False, trace=unsampled),
        record(trace=lost),
        record(sampled=False, trace=leaky),
    )
    report = judge(recording, traces, EXPECT)
    assert report.counts == {
        Status.COMPLETE: 2,
        Status.UNSAMPLED: 1,
        Status.MISSING: 1,
        Status.LEAKED: 1,
        Status.ORPHAN: 1,
    }
    assert {(verdict.trace_id, verdict.status) for verdict in report.broken} == {
        (lost, Status.MISSING),
        (leaky, Status.LEAKED),
        (0xB1, Status.ORPHAN),
    }
    assert report.unannounced_complete == 1
    assert (report.responses, report.sampled) == (4, 2)
    assert not report.passed


def test_judge_passes_a_run_of_whole_and_clean_traces():
    report = judge(run_of(record(), record(sampled=False, trace=OTHER_TRACE)), {TRACE: list_trace()}, EXPECT)
    assert report.passed
    assert report.broken == ()
    assert report.problems == ()


def test_judge_only_announced_ignores_other_traces():
    traces = {TRACE: list_trace(), OTHER_TRACE: [span(0x9, None, "emoji", trace=OTHER_TRACE)]}
    assert not judge(run_of(record()), traces, EXPECT).passed
    report = judge(run_of(record()), traces, EXPECT, check_unannounced=False)
    assert report.passed
    assert report.counts == {Status.COMPLETE: 1}


@pytest.mark.parametrize(
    ("recording", "truncated", "problem"),
    [
        (Recording(), False, "no response announced a trace: nothing was checked"),
        (
            Recording((record(),), dropped=3),
            False,
            "3 responses beyond the recorder's bound: their traces went unchecked",
        ),
        (
            Recording((record(),), without_traceresponse=2),
            False,
            "2 responses carried no valid traceresponse header",
        ),
        (
            Recording((record(), record(sampled=False))),
            False,
            "1 responses announced a trace already announced with another span or decision",
        ),
        (
            Recording((record(),)),
            True,
            "the trace backend listed as many traces as asked for: traces of the run may have gone unseen",
        ),
    ],
)
def test_judge_fails_a_run_it_cannot_vouch_for(recording, truncated, problem):
    report = judge(recording, {TRACE: list_trace()}, EXPECT, listing_truncated=truncated)
    assert report.problems == (problem,)
    assert not report.passed


def test_same_announcement_twice_is_no_conflict():
    report = judge(run_of(record(), record()), {TRACE: list_trace()}, EXPECT)
    assert report.passed
    assert report.counts == {Status.COMPLETE: 1}


def test_unanswered_requests_are_reported_but_do_not_fail_the_run():
    report = judge(Recording((record(),), unanswered=4), {TRACE: list_trace()}, EXPECT)
    assert report.passed
    assert report.unanswered == 4
    assert "4 requests got no response" in summary(report)


def test_summary_and_json_name_each_broken_trace_and_what_it_lacks():
    traces = {TRACE: without(vote_trace(), 0x7)}
    report = judge(run_of(record(endpoint="/api/vote"), record(sampled=False, trace=OTHER_TRACE)), traces, EXPECT)
    text = summary(report)
    assert text.splitlines()[0] == "Trace check: FAILED"
    assert "Broken traces (the first 1 of 1):" in text
    assert f"  partial  {trace_hex(TRACE)} /api/vote: missing voting SERVER" in text
    # With few broken traces, each is listed: no need to group them by problem.
    assert "by problem" not in text
    document = report.as_json()
    assert document["passed"] is False
    assert document["counts"] == {
        "complete": 0,
        "unsampled": 1,
        "missing": 0,
        "partial": 1,
        "leaked": 0,
        "orphan": 0,
    }
    assert document["trace_problems"] == [
        {"problem": "partial: missing voting SERVER", "traces": 1, "example": trace_hex(TRACE)}
    ]
    assert document["broken"] == [
        {
            "trace_id": trace_hex(TRACE),
            "status": "partial",
            "endpoint": "/api/vote",
            "announced": True,
            "problems": ["missing voting SERVER"],
        }
    ]
    assert document["broken_total"] == 1


def test_summary_of_many_broken_traces_lists_a_few_and_groups_the_rest_by_problem():
    traces = {trace: without(list_trace(trace), 0x5) for trace in range(1, 9)}
    report = judge(run_of(*(record(trace=trace) for trace in range(1, 9))), traces, EXPECT)
    text = summary(report, listed=3)
    assert "Broken traces (the first 3 of 8):" in text
    assert text.count("missing emoji SERVER") == 4  # three listed, one group
    assert "        8 x partial: missing emoji SERVER" in text
    assert f"e.g. {trace_hex(1)} /api/list" in text


def test_summary_of_a_passing_run():
    report = judge(run_of(record()), {TRACE: list_trace()}, EXPECT)
    lines = summary(report).splitlines()
    assert lines[0] == "Trace check: PASSED"
    assert lines[1].split()[:2] == ["responses", "1"]
    assert not any("e.g." in line for line in lines)


# --- spans from JSON --------------------------------------------------------------------------------------------


def test_span_from_json_reads_ids_kind_service_and_path():
    data = {
        "traceId": "a3ce929d0e0e4736",
        "parentId": "00f067aa0ba902b7",
        "id": "00f067aa0ba902b8",
        "kind": "CLIENT",
        "name": "get /list",
        "localEndpoint": {"serviceName": "Web", "ipv4": "10.0.0.1"},
        "tags": {"http.path": "/list", "http.method": "GET"},
    }
    data["remoteEndpoint"] = {"serviceName": "Emoji", "port": 8080}
    assert span_from_json(data) == SpanView(
        0xA3CE929D0E0E4736, 0x00F067AA0BA902B8, 0x00F067AA0BA902B7, "CLIENT", "web", "get /list", "/list", "emoji"
    )


def test_span_from_json_leaves_absent_fields_out():
    assert span_from_json({"traceId": "1", "id": "2"}) == SpanView(1, 2)


@pytest.mark.parametrize(
    "data",
    [{}, {"traceId": "abc"}, {"traceId": "xyz", "id": "1"}, {"traceId": 12, "id": "1"}, {"traceId": "1", "id": ""}],
)
def test_span_from_json_rejects_what_is_not_a_span(data):
    with pytest.raises(ValueError, match="not a Zipkin v2 span"):
        span_from_json(data)


def test_group_by_trace_and_trace_hex():
    grouped = group_by_trace([*list_trace(), *list_trace(OTHER_TRACE)[:2]])
    assert {trace: len(spans) for trace, spans in grouped.items()} == {TRACE: 5, OTHER_TRACE: 2}
    assert trace_hex(0xA3CE929D0E0E4736) == "a3ce929d0e0e4736"
    assert trace_hex(0x1) == "0000000000000001"
    assert trace_hex(TRACE) == "4bf92f3577b34da6a3ce929d0e0e4736"


# --- recording ----------------------------------------------------------------------------------------------------


SAMPLED_HEADER = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000001-01"


def test_recorder_keeps_announcements_and_counts_the_rest():
    recorder = Recorder(max_records=2)
    recorder.response("/api/list", 10.0, SAMPLED_HEADER)
    recorder.response("/api/vote", 11.0, "00-0af7651916cd43dd8448eb211c80319c-0000000000000002-00")
    recorder.response("/api/list", 12.0, SAMPLED_HEADER)  # beyond the bound
    recorder.response("/api/list", 13.0, None)
    recorder.response("/api/list", 14.0, "garbage")
    recorder.unanswered()
    recording = recorder.recording(stopped=20.0)
    assert recording.records == (
        Record(TRACE, 1, True, "/api/list", 10.0),
        Record(OTHER_TRACE, 2, False, "/api/vote", 11.0),
    )
    assert (recording.dropped, recording.without_traceresponse, recording.unanswered) == (1, 2, 1)
    assert recording.window() == (10.0, 20.0)
    recorder.clear()
    assert recorder.recording() == Recording()


def test_recorder_is_safe_across_threads():
    recorder = Recorder(max_records=10_000)
    per_thread, threads = 500, 8

    def record_many() -> None:
        for n in range(per_thread):
            recorder.response("/api/list", float(n), SAMPLED_HEADER)

    workers = [threading.Thread(target=record_many) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert len(recorder.recording().records) == per_thread * threads


def test_recorder_refuses_a_bound_below_one():
    with pytest.raises(ValueError, match="max_records"):
        Recorder(max_records=0)


def test_recordings_of_several_workers_merge():
    first = Recording((record(),), dropped=1, without_traceresponse=2, unanswered=3, stopped=5.0)
    second = Recording((record(trace=OTHER_TRACE),), dropped=1, stopped=7.0)
    merged = Recording.merge([first, second])
    assert merged.records == (record(), record(trace=OTHER_TRACE))
    assert (merged.dropped, merged.without_traceresponse, merged.unanswered, merged.stopped) == (2, 2, 3, 7.0)
    assert Recording.merge([]) == Recording()


def test_window_without_a_stop_time_ends_with_the_last_request():
    recording = Recording((Record(TRACE, 1, True, "/", 3.0), Record(OTHER_TRACE, 1, True, "/", 1.0)))
    assert recording.window() == (1.0, 3.0)
    assert Recording().window() is None


# --- one trace id, forged ids, the sample rate --------------------------------------------------------------------


def test_spans_under_the_low_half_of_a_128_bit_trace_id_make_it_partial():
    # emoji kept only the low 64 bits of the trace id it was given: its span is in a trace of its own.
    low = TRACE & ((1 << 64) - 1)
    strays = [span(0x5, 0x4, "emoji", "SERVER", "get /list", "/list", trace=low)]
    report = judge(run_of(record()), {TRACE: without(list_trace(), 0x5), low: strays}, EXPECT)
    [verdict] = report.broken
    assert verdict.status is Status.PARTIAL
    assert verdict.problems == (
        "missing emoji SERVER",
        "spans under another trace id (the same low 64 bits) from emoji",
    )
    # Accounted for as part of the announced trace, not as an orphan besides it.
    assert report.counts == {Status.PARTIAL: 1}


def test_an_unsampled_trace_with_spans_under_its_low_half_has_leaked():
    low = TRACE & ((1 << 64) - 1)
    report = judge(run_of(record(sampled=False)), {low: [span(0x5, 0x4, "emoji", trace=low)]}, EXPECT)
    assert report.counts == {Status.LEAKED: 1}


def test_a_forged_trace_id_in_a_response_or_the_backend_fails_the_run():
    forged_in_backend, forged_announced, forged_unseen = 0xF1, 0xF2, 0xF3
    recording = Recording(
        (record(), record(trace=forged_announced, sampled=False, hostile=True)),
        forged=(forged_in_backend, forged_announced, forged_unseen),
        forged_sent=3,
    )
    traces = {TRACE: list_trace(), forged_in_backend: list_trace(forged_in_backend)}
    report = judge(recording, traces, EXPECT, check_unannounced=False)
    assert report.forged_seen == (forged_in_backend, forged_announced)
    assert report.problems == (
        f"2 forged trace ids reached a response or the trace backend: {trace_hex(forged_in_backend)}",
    )
    assert not report.passed
    assert (report.hostile, report.hostile_sampled, report.forged_checked) == (1, 0, 3)
    assert "2 of the 3 forged trace ids reached a response" in summary(report)


def test_forged_ids_seen_nowhere_pass():
    recording = Recording((record(hostile=True),), forged=(0xF1,), forged_sent=1)
    report = judge(recording, {TRACE: list_trace()}, EXPECT)
    assert report.passed
    assert "none of the 1 forged trace ids reached a response or the trace backend" in summary(report)
    assert report.as_json()["hostile"] == {
        "responses": 1,
        "sampled": 1,
        "forged_trace_ids_checked": 1,
        "forged_trace_ids_seen": [],
    }


def test_a_sampled_fraction_off_the_configured_rate_fails_the_run_though_every_trace_is_whole():
    sampled = [record(trace=trace) for trace in range(1, 11)]
    traces = {trace: list_trace(trace) for trace in range(1, 11)}
    recording = run_of(*sampled, *(record(sampled=False, trace=trace) for trace in range(11, 21)))
    assert judge(recording, traces, EXPECT, rates=RatePolicy(0.5)).passed
    report = judge(recording, traces, EXPECT, rates=RatePolicy(0.1))
    assert report.broken == ()
    assert report.problems == ()
    assert not report.rate_ok
    assert not report.passed
    assert report.rates == (RateGroup("all requests", 0.1, 20, 10),)
    text = summary(report)
    assert "Sample rate: NOT as configured" in text
    assert "BAD all requests: 10 of 20 sampled (50.0%), expected 10.0%: OUTSIDE" in text
    assert report.as_json()["rate_ok"] is False


def test_without_a_configured_rate_nothing_is_checked():
    report = judge(run_of(record()), {TRACE: list_trace()}, EXPECT, rates=RatePolicy())
    assert report.rates == ()
    assert "Sample rate" not in summary(report)


def test_hostile_requests_are_a_rate_group_of_their_own():
    # A gateway that let forged headers force sampling: every hostile request sampled, at a rate of 0.
    recording = run_of(
        *(record(sampled=False, trace=trace) for trace in range(1, 11)),
        record(trace=TRACE, hostile=True),
    )
    report = judge(recording, {TRACE: list_trace()}, EXPECT, rates=RatePolicy(0.0))
    assert [(group.name, group.ok) for group in report.rates] == [
        ("all requests", True),
        ("all requests (forged trace headers)", False),
    ]


def test_run_problems_from_the_caller_fail_the_run():
    report = judge(run_of(record()), {TRACE: list_trace()}, EXPECT, run_problems=("worker w1 never sent",))
    assert report.problems == ("worker w1 never sent",)
    assert not report.passed


def test_unfetched_traces_fail_the_run():
    report = judge(run_of(record()), {TRACE: list_trace()}, EXPECT, unfetched=7)
    assert report.problems == ("7 traces could not be asked for before the check's timeout: they went unchecked",)


def test_workers_are_named_in_the_summary():
    report = judge(run_of(record()), {TRACE: list_trace()}, EXPECT, workers=2)
    assert "(1 sampled, 100.0%, from 2 workers)" in summary(report)
    assert report.as_json()["workers"] == 2


# --- streaming records from workers ------------------------------------------------------------------------------


def test_recorder_hands_out_what_came_in_since_the_last_batch():
    recorder = Recorder()
    recorder.response("/api/list", 10.0, SAMPLED_HEADER)
    recorder.forged(0xF1)
    recorder.unanswered()
    first = recorder.batch()
    assert first == RecordBatch((Record(TRACE, 1, True, "/api/list", 10.0),), (0xF1,), 0, 0, 1, 1)
    assert recorder.batch() == RecordBatch()
    recorder.response("/api/vote", 11.0, None)
    recorder.response("/api/vote", 12.0, SAMPLED_HEADER, hostile=True)
    second = recorder.batch()
    assert second.records == (Record(TRACE, 1, True, "/api/vote", 12.0, True),)
    assert second.without_traceresponse == 1
    # Everything stays in the recording.
    assert len(recorder.recording().records) == 2
    assert recorder.tally() == (2, 2, 1)


def test_record_batches_cross_the_wire_and_merge_in_the_masters_recorder():
    worker = Recorder()
    worker.response("/api/list", 10.0, SAMPLED_HEADER, hostile=True)
    worker.forged(0xF1)
    worker.response("/api/list", 11.0, "garbage")
    master = Recorder(max_records=2)
    for _ in range(2):
        master.absorb(RecordBatch.from_wire(worker.batch().to_wire()))
        worker.response("/api/vote", 12.0, SAMPLED_HEADER)
    master.absorb(RecordBatch.from_wire(worker.batch().to_wire()))
    recording = master.recording()
    assert [record.endpoint for record in recording.records] == ["/api/list", "/api/vote"]
    assert recording.records[0].hostile
    # The master's bound holds: the third record is counted, not kept.
    assert (recording.dropped, recording.without_traceresponse, recording.forged, recording.forged_sent) == (
        1,
        1,
        (0xF1,),
        1,
    )
    assert master.tally() == (2, 2, 1)


@pytest.mark.parametrize(
    "data",
    [None, {}, {"records": [], "forged": [], "counts": [0, 0]}, {"records": [["x"]], "forged": [], "counts": [0] * 4}],
)
def test_record_batches_that_cannot_be_read_are_refused(data):
    with pytest.raises(ValueError, match="bad record batch"):
        RecordBatch.from_wire(data)


def test_records_keep_at_most_max_forged_forged_ids_but_count_them_all():
    recorder = Recorder(max_forged=2)
    for trace_id in (1, 2, 3):
        recorder.forged(trace_id)
    recording = recorder.recording()
    assert (recording.forged, recording.forged_sent) == ((1, 2), 3)

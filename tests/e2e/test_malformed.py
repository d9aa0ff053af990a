"""Malformed trace headers are no context at all: never a 5xx, never passed on, always a fresh valid trace."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import (
    HEX_SPAN_ID,
    HEX_TRACE_ID,
    Collector,
    Echo,
    Gateway,
    Upstream,
    gateway_env,
    padded,
    run_gateway,
    traceresponse,
)

pytestmark = pytest.mark.e2e

TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
Headers = list[tuple[str, str]] | list[tuple[bytes, bytes]]

# Each row: headers a client sends, and the trace id the upstream must NOT see (None: no id to check).
MALFORMED: list[tuple[str, Headers, str | None]] = [
    ("non-hex trace id", [("X-B3-TraceId", "z" * 32), ("X-B3-SpanId", SPAN)], None),
    ("all-zero trace id", [("X-B3-TraceId", "0" * 32), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "1")], "0" * 32),
    ("all-zero span id", [("X-B3-TraceId", TRACE), ("X-B3-SpanId", "0" * 16), ("X-B3-Sampled", "1")], TRACE),
    ("15-hex trace id", [("X-B3-TraceId", TRACE[:15]), ("X-B3-SpanId", SPAN)], None),
    ("33-hex trace id", [("X-B3-TraceId", TRACE + "a"), ("X-B3-SpanId", SPAN)], TRACE + "a"),
    ("20-hex trace id", [("X-B3-TraceId", TRACE[:20]), ("X-B3-SpanId", SPAN)], TRACE[:20]),
    ("17-hex span id", [("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN + "b"), ("X-B3-Sampled", "1")], TRACE),
    ("oversized trace id", [("X-B3-TraceId", "a" * 6000), ("X-B3-SpanId", SPAN)], None),
    ("trace id without span id", [("X-B3-TraceId", TRACE), ("X-B3-Sampled", "1")], TRACE),
    ("span id without trace id", [("X-B3-SpanId", SPAN), ("X-B3-Sampled", "1")], None),
    (
        "duplicated trace id",
        [("X-B3-TraceId", TRACE), ("X-B3-TraceId", "5af7183fb1d4cf5f5af7183fb1d4cf5f"), ("X-B3-SpanId", SPAN)],
        TRACE,
    ),
    ("bad parent id", [("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-ParentSpanId", "xyz")], None),
    ("sampled '2'", [("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "2")], None),
    ("flags '2' alone", [("X-B3-Flags", "2")], None),
    ("whitespace ids", [("X-B3-TraceId", f"{TRACE[:8]} {TRACE[8:]}"), ("X-B3-SpanId", SPAN)], None),
    ("non-ascii trace id", [(b"X-B3-TraceId", b"\xff\xfe" * 16), (b"X-B3-SpanId", SPAN.encode())], None),
    ("b3 garbage", [("b3", "garbage")], None),
    ("b3 dash", [("b3", "-")], None),
    ("b3 zeros", [("b3", "0-0-0")], None),
    ("b3 trace id only", [("b3", TRACE)], TRACE),
    ("b3 bad sampling state", [("b3", f"{TRACE}-{SPAN}-x")], TRACE),
    ("b3 too many fields", [("b3", f"{TRACE}-{SPAN}-1-{SPAN}-extra")], TRACE),
    ("b3 oversized", [("b3", f"{TRACE}-{SPAN}-1-" + "f" * 5000)], TRACE),
    ("b3 duplicated", [("b3", f"{TRACE}-{SPAN}-1"), ("b3", f"5af7183fb1d4cf5f5af7183fb1d4cf5f-{SPAN}-1")], TRACE),
    ("traceparent garbage", [("traceparent", "00-zz-yy-01"), ("tracestate", "=,=,=")], None),
    ("traceparent version ff", [("traceparent", f"ff-{TRACE}-{SPAN}-01")], TRACE),
    ("traceparent zero trace id", [("traceparent", f"00-{'0' * 32}-{SPAN}-01")], "0" * 32),
]


@pytest.fixture(scope="module", params=["trusted", "untrusted"])
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: Upstream,
    session_collector: Collector,
) -> Iterator[Gateway]:
    trust = request.param == "trusted"
    env = gateway_env(upstream, session_collector, sample_rate=0.5, trust_incoming_trace=trust)
    with run_gateway(tmp_path_factory.mktemp("malformed"), env) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15) as client:
        yield client


@pytest.mark.parametrize(("headers", "refused_trace_id"), [row[1:] for row in MALFORMED], ids=[r[0] for r in MALFORMED])
def test_malformed_trace_headers_start_a_fresh_trace(
    gateway: Gateway, http: httpx.Client, headers: Headers, refused_trace_id: str | None
) -> None:
    echo = assert_fresh_valid_trace(gateway, http, headers)
    if refused_trace_id is not None:
        assert echo.one("x-b3-traceid") != refused_trace_id


def test_malformed_headers_are_counted_by_reason(gateway: Gateway, http: httpx.Client) -> None:
    for _, headers, _ in MALFORMED:
        assert_fresh_valid_trace(gateway, http, headers)
    metrics = gateway.metrics()
    ignored = [s for s in metrics.samples if s.name == "gateway_trace_headers_ignored_total" and s.value > 0]
    if gateway.env["GATEWAY_TRUST_INCOMING_TRACE"] == "true":
        assert {s.labels["reason"] for s in ignored} - {"untrusted"}, f"no malformed-header reason counted: {ignored}"
    else:
        assert metrics.value("gateway_trace_headers_ignored_total", reason="untrusted") >= len(MALFORMED)


TRACE_HEADER_NAMES = ["X-B3-TraceId", "X-B3-SpanId", "X-B3-ParentSpanId", "X-B3-Sampled", "X-B3-Flags", "b3"]
HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)
NEAR_MISS = st.sampled_from([TRACE, SPAN, "0" * 16, "1", "0", "d", "-", TRACE.upper(), f"{TRACE}-{SPAN}"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.lists(
        st.tuples(st.sampled_from([*TRACE_HEADER_NAMES, "traceparent"]), st.one_of(HEADER_TEXT, NEAR_MISS)),
        max_size=6,
    )
)
def test_arbitrary_trace_headers_never_fail_the_request(
    gateway: Gateway, http: httpx.Client, headers: list[tuple[str, str]]
) -> None:
    assert_fresh_valid_trace(gateway, http, list(headers), fresh=False)


def assert_fresh_valid_trace(gateway: Gateway, http: httpx.Client, headers: Headers, fresh: bool = True) -> Echo:
    """The request succeeds and the upstream gets exactly one well-formed B3 context, the one the client is told.

    `fresh`: the sent headers may not contain a valid context, so nothing of them may reach the upstream.
    """
    response = http.get(f"{gateway.url}/malformed", headers=headers)
    assert response.status_code == 200, (headers, response.status_code, response.text[:300])
    echo = Echo.of(response)
    trace_id, span_id, parent_id = echo.one("x-b3-traceid"), echo.one("x-b3-spanid"), echo.one("x-b3-parentspanid")
    assert HEX_TRACE_ID.fullmatch(trace_id) and int(trace_id, 16) != 0, trace_id
    assert HEX_SPAN_ID.fullmatch(span_id) and int(span_id, 16) != 0, span_id
    assert HEX_SPAN_ID.fullmatch(parent_id) and int(parent_id, 16) != 0, parent_id
    assert echo.one("x-b3-sampled") in ("0", "1")
    assert echo.all("x-b3-flags") in ([], ["1"])
    assert traceresponse(response)[:2] == (padded(trace_id), parent_id)
    if fresh:
        # Short values ("1", "0") may be the gateway's own decision; longer ones can only be the client's.
        sent = {value.decode("latin-1") if isinstance(value, bytes) else value for _, value in headers}
        reached = [(name, value) for name, value in echo.headers if value in sent and len(value) > 2]
        assert reached == [], f"malformed client headers reached the upstream: {reached}"
    return echo

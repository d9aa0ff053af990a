from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given

from gateway.context import NO_CONTEXT, Extracted, TraceContext
from gateway.propagation import INVALID_REASONS, TRACE_HEADERS, b3, extract_context, is_trace_header, w3c

from .strategies import header_lists

B3_TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
W3C_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
W3C_SPAN = "00f067aa0ba902b7"

B3_SINGLE = (b"b3", f"{B3_TRACE}-{SPAN}-1".encode())
B3_MULTI = [(b"x-b3-traceid", B3_TRACE.encode()), (b"x-b3-spanid", SPAN.encode()), (b"x-b3-sampled", b"0")]
TRACEPARENT = (b"traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-01".encode())

B3_CTX = TraceContext(int(B3_TRACE, 16), int(SPAN, 16), None, True)
B3_MULTI_CTX = TraceContext(int(B3_TRACE, 16), int(SPAN, 16), None, False)
W3C_CTX = TraceContext(int(W3C_TRACE, 16), int(W3C_SPAN, 16), None, True)


def found(ctx: TraceContext) -> Extracted:
    return Extracted(context=ctx, sampled=ctx.sampled, debug=ctx.debug)


def test_trace_headers_lists_every_forgeable_name():
    assert TRACE_HEADERS == {
        b"b3",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"x-b3-sampled",
        b"x-b3-flags",
        b"traceparent",
        b"tracestate",
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (b"b3", True),
        (b"x-b3-traceid", True),
        (b"x-b3-flags", True),
        (b"x-b3-anything-else", True),
        (b"traceparent", True),
        (b"tracestate", True),
        (b"host", False),
        (b"b3-extra", False),
        (b"x-b3", False),
        (b"x-request-id", False),
    ],
)
def test_is_trace_header(name, expected):
    assert is_trace_header(name) is expected


def test_invalid_reasons_cover_both_formats_once():
    assert set(INVALID_REASONS) == set(b3.INVALID_REASONS) | set(w3c.INVALID_REASONS)
    assert len(INVALID_REASONS) == len(set(INVALID_REASONS))
    assert all(reason.isidentifier() and reason.islower() for reason in INVALID_REASONS)


CASES = [
    pytest.param([], NO_CONTEXT, id="nothing"),
    pytest.param([(b"host", b"example.com")], NO_CONTEXT, id="no-trace-headers"),
    pytest.param([B3_SINGLE], found(B3_CTX), id="b3-single"),
    pytest.param(B3_MULTI, found(B3_MULTI_CTX), id="b3-multi"),
    pytest.param([TRACEPARENT], found(W3C_CTX), id="traceparent"),
    pytest.param([TRACEPARENT, B3_SINGLE], found(B3_CTX), id="b3-single-before-traceparent"),
    pytest.param([TRACEPARENT, *B3_MULTI], found(B3_MULTI_CTX), id="b3-multi-before-traceparent"),
    pytest.param([TRACEPARENT, (b"b3", b"0")], Extracted(sampled=False), id="b3-sampling-only-before-traceparent"),
    pytest.param([TRACEPARENT, (b"b3", b"nope")], found(W3C_CTX), id="invalid-b3-falls-back-to-traceparent"),
    pytest.param(
        [TRACEPARENT, (b"x-b3-traceid", B3_TRACE.encode())],
        found(W3C_CTX),
        id="invalid-multi-falls-back-to-traceparent",
    ),
    pytest.param(
        [(b"b3", b"nope"), (b"traceparent", b"ff-garbage")],
        Extracted(invalid="malformed_b3"),
        id="both-invalid-report-b3",
    ),
    pytest.param([(b"b3", b"nope")], Extracted(invalid="malformed_b3"), id="invalid-b3-alone"),
    pytest.param(
        [(b"traceparent", f"ff-{W3C_TRACE}-{W3C_SPAN}-01".encode())],
        Extracted(invalid="unsupported_version"),
        id="invalid-traceparent-alone",
    ),
    pytest.param([TRACEPARENT, TRACEPARENT], Extracted(invalid="duplicate_header"), id="duplicate-traceparent"),
    pytest.param([(b"traceparent", b"")], NO_CONTEXT, id="empty-traceparent-is-absent"),
    pytest.param(
        [TRACEPARENT, (b"tracestate", b"congo=t61rcWkgMzE")],
        replace(found(W3C_CTX), tracestate="congo=t61rcWkgMzE"),
        id="tracestate-comes-with-its-traceparent",
    ),
    pytest.param(
        [(b"tracestate", b"rojo=00f067aa0ba902b7"), TRACEPARENT, (b"tracestate", b" congo=t61rcWkgMzE ,")],
        replace(found(W3C_CTX), tracestate="rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        id="tracestate-headers-combine-in-order",
    ),
    pytest.param(
        [TRACEPARENT, (b"tracestate", b"Bad Key=1")],
        replace(found(W3C_CTX), tracestate_invalid=True),
        id="invalid-tracestate-discarded-context-kept",
    ),
    pytest.param([TRACEPARENT, (b"tracestate", b"")], found(W3C_CTX), id="empty-tracestate-is-absent"),
    pytest.param([(b"tracestate", b"congo=t61rcWkgMzE")], NO_CONTEXT, id="tracestate-without-traceparent-dropped"),
    pytest.param(
        [B3_SINGLE, (b"traceparent", f"00-{B3_TRACE}-{W3C_SPAN}-01".encode()), (b"tracestate", b"congo=1")],
        replace(found(B3_CTX), tracestate="congo=1"),
        id="tracestate-kept-when-b3-wins-for-the-same-trace",
    ),
    pytest.param(
        [B3_SINGLE, TRACEPARENT, (b"tracestate", b"congo=1")],
        found(B3_CTX),
        id="tracestate-of-another-trace-dropped",
    ),
    pytest.param(
        [B3_SINGLE, (b"traceparent", b"garbage"), (b"tracestate", b"congo=1")],
        found(B3_CTX),
        id="tracestate-of-an-invalid-traceparent-dropped",
    ),
    pytest.param([B3_SINGLE, B3_SINGLE, TRACEPARENT], found(W3C_CTX), id="duplicate-b3-falls-back-to-traceparent"),
]


@pytest.mark.parametrize(("headers", "expected"), CASES)
def test_extract_context(headers, expected):
    assert extract_context(headers) == expected


@given(header_lists)
def test_extract_context_never_raises_on_arbitrary_headers(headers):
    extracted = extract_context(headers)
    if extracted.invalid is not None:
        assert extracted.invalid in INVALID_REASONS
        assert extracted == Extracted(invalid=extracted.invalid)
    if extracted.context is not None:
        assert extracted.sampled == extracted.context.sampled

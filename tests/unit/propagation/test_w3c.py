from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.context import Extracted, TraceContext
from gateway.propagation import w3c
from gateway.propagation.w3c import format_traceparent, format_traceresponse, parse_traceparent

from .strategies import contexts

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7


def found(sampled: bool) -> Extracted:
    return Extracted(context=TraceContext(TRACE_ID, SPAN_ID, None, sampled), sampled=sampled)


VALID = [
    pytest.param(f"00-{TRACE}-{SPAN}-01", found(True), id="sampled"),
    pytest.param(f"00-{TRACE}-{SPAN}-00", found(False), id="not-sampled"),
    pytest.param(f"00-{TRACE}-{SPAN}-03", found(True), id="other-flags-ignored-sampled"),
    pytest.param(f"00-{TRACE}-{SPAN}-fe", found(False), id="other-flags-ignored-not-sampled"),
    pytest.param(f"01-{TRACE}-{SPAN}-01", found(True), id="higher-version-same-shape"),
    pytest.param(f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like", found(True), id="higher-version-extra"),
    pytest.param(f"fe-{TRACE}-{SPAN}-00-", found(False), id="highest-version-trailing-dash"),
    pytest.param(
        f"00-{'0' * 16}{SPAN}-{SPAN}-01",
        Extracted(context=TraceContext(SPAN_ID, SPAN_ID, None, True), sampled=True),
        id="64-bit-trace-id-left-padded",
    ),
]


@pytest.mark.parametrize(("value", "expected"), VALID)
def test_parse_traceparent_valid(value, expected):
    assert parse_traceparent(value) == expected


INVALID = [
    pytest.param("", "malformed_traceparent", id="empty"),
    pytest.param(f"00-{TRACE}-{SPAN}-0", "malformed_traceparent", id="54-chars"),
    pytest.param(f"00-{TRACE}-{SPAN}-01-", "malformed_traceparent", id="version-00-trailing-dash"),
    pytest.param(f"00-{TRACE}-{SPAN}-01-extra", "malformed_traceparent", id="version-00-extra-field"),
    pytest.param(f"00-{TRACE}-{SPAN}-010", "malformed_traceparent", id="version-00-3-char-flags"),
    pytest.param(f"01-{TRACE}-{SPAN}-01x", "malformed_traceparent", id="higher-version-no-dash-after-flags"),
    pytest.param(f"00_{TRACE}-{SPAN}-01", "malformed_traceparent", id="bad-first-delimiter"),
    pytest.param(f"00-{TRACE}_{SPAN}-01", "malformed_traceparent", id="bad-second-delimiter"),
    pytest.param(f"00-{TRACE}-{SPAN}_01", "malformed_traceparent", id="bad-third-delimiter"),
    pytest.param(f"00-{TRACE[:-1]}-{SPAN}0-01", "malformed_traceparent", id="shifted-fields"),
    pytest.param(f"ff-{TRACE}-{SPAN}-01", "unsupported_version", id="version-ff"),
    pytest.param(f"0g-{TRACE}-{SPAN}-01", "unsupported_version", id="version-non-hex"),
    pytest.param(f"0A-{TRACE}-{SPAN}-01", "unsupported_version", id="version-uppercase"),
    pytest.param(f"00-{TRACE.upper()}-{SPAN}-01", "malformed_trace_id", id="trace-uppercase"),
    pytest.param(f"00-{'0' * 32}-{SPAN}-01", "malformed_trace_id", id="trace-zero"),
    pytest.param(f"00-{TRACE[:-1]}x-{SPAN}-01", "malformed_trace_id", id="trace-non-hex"),
    pytest.param(f"00-{TRACE}-{SPAN.upper()}-01", "malformed_span_id", id="span-uppercase"),
    pytest.param(f"00-{TRACE}-{'0' * 16}-01", "malformed_span_id", id="span-zero"),
    pytest.param(f"00-{TRACE}-{SPAN[:-1]} -01", "malformed_span_id", id="span-space"),
    pytest.param(f"00-{TRACE}-{SPAN}-0x", "malformed_flags", id="flags-non-hex"),
    pytest.param(f"00-{TRACE}-{SPAN}-0A", "malformed_flags", id="flags-uppercase"),
    pytest.param(f"01-{TRACE}-{SPAN}-01-" + "x" * 73, "oversized_header", id="oversized"),
]


@pytest.mark.parametrize(("value", "reason"), INVALID)
def test_parse_traceparent_invalid_to_no_context(value, reason):
    assert parse_traceparent(value) == Extracted(invalid=reason)


def test_parse_traceparent_length_bound_is_inclusive():
    value = f"01-{TRACE}-{SPAN}-01-"
    assert parse_traceparent(value + "x" * (w3c.MAX_VALUE_LENGTH - len(value))) == found(True)


FORMAT_CASES = [
    pytest.param(TraceContext(TRACE_ID, SPAN_ID, None, True), f"00-{TRACE}-{SPAN}-01", id="sampled"),
    pytest.param(TraceContext(TRACE_ID, SPAN_ID, 7, False), f"00-{TRACE}-{SPAN}-00", id="not-sampled-parent-unsent"),
    pytest.param(TraceContext(TRACE_ID, SPAN_ID, None, True, True), f"00-{TRACE}-{SPAN}-01", id="debug-is-sampled"),
    pytest.param(TraceContext(TRACE_ID, SPAN_ID, None, None), f"00-{TRACE}-{SPAN}-00", id="deferred-is-not-sampled"),
    pytest.param(TraceContext(0xABC, 1, None, True), f"00-{'0' * 29}abc-{'0' * 15}1-01", id="64-bit-padded"),
]


@pytest.mark.parametrize(("ctx", "expected"), FORMAT_CASES)
def test_format_traceparent(ctx, expected):
    assert format_traceparent(ctx) == expected


def test_format_traceresponse():
    assert format_traceresponse(TRACE_ID, SPAN_ID, True) == f"00-{TRACE}-{SPAN}-01"
    assert (
        format_traceresponse(0x463AC35C9F6413AD, 2, False) == "00-0000000000000000463ac35c9f6413ad-0000000000000002-00"
    )


@given(contexts(parent=False, deferred=False, debug=False))
def test_traceparent_round_trip(ctx):
    assert parse_traceparent(format_traceparent(ctx)) == Extracted(context=ctx, sampled=ctx.sampled)


@given(st.text() | st.from_regex(r"[0-9a-f]{2}-[0-9a-fA-F]{32}-[0-9a-f]{16}-[0-9a-fx]{2}.{0,80}", fullmatch=True))
def test_parse_traceparent_never_raises(value):
    extracted = parse_traceparent(value)
    if extracted.invalid is not None:
        assert extracted.invalid in w3c.INVALID_REASONS
        assert extracted == Extracted(invalid=extracted.invalid)
    else:
        assert extracted.context is not None
        assert extracted.sampled == extracted.context.sampled

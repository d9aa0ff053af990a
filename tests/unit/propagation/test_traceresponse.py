"""parse_traceresponse: what a client (the load test, the tests) reads back from the gateway's `traceresponse`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.propagation.w3c import format_traceresponse, parse_traceresponse

from .strategies import span_ids, trace_ids

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", (TRACE, SPAN, True)),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", (TRACE, SPAN, False)),
        # A 64-bit trace id arrives left-padded with zeros.
        ("00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-01", (0xA3CE929D0E0E4736, SPAN, True)),
        # Only the sampled bit is read.
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", (TRACE, SPAN, True)),
        (" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ", (TRACE, SPAN, True)),
    ],
)
def test_parse_traceresponse_reads_trace_span_and_sampled_flag(value, expected):
    assert parse_traceresponse(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # 31 hex
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",  # a field more than version 00 has
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    ],
)
def test_parse_traceresponse_rejects_malformed_values(value):
    assert parse_traceresponse(value) is None


@given(trace_ids, span_ids, st.booleans())
def test_traceresponse_round_trip(trace_id, span_id, sampled):
    assert parse_traceresponse(format_traceresponse(trace_id, span_id, sampled)) == (trace_id, span_id, sampled)


@given(st.text(alphabet="0123456789abcdefABCDEF- ", max_size=80))
def test_parse_traceresponse_never_raises(value):
    parsed = parse_traceresponse(value)
    assert parsed is None or parsed[0] > 0 and parsed[1] > 0

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


# --- the W3C trace-context test suite (w3c/trace-context, test/test.py): what a vendor must accept or refuse ---

SUITE_TRACE = "12345678901234567890123456789012"
SUITE_SPAN = "1234567890123456"
SUITE_FOUND = Extracted(context=TraceContext(int(SUITE_TRACE, 16), int(SUITE_SPAN, 16), None, True), sampled=True)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN}-01", id="version-00"),
        pytest.param(f"cc-{SUITE_TRACE}-{SUITE_SPAN}-01", id="version-0xcc"),
        pytest.param(f"cc-{SUITE_TRACE}-{SUITE_SPAN}-01-what-the-future-will-be-like", id="version-0xcc-extra-field"),
        pytest.param(f" 00-{SUITE_TRACE}-{SUITE_SPAN}-01", id="ows-leading-space"),
        pytest.param(f"\t00-{SUITE_TRACE}-{SUITE_SPAN}-01", id="ows-leading-tab"),
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN}-01 ", id="ows-trailing-space"),
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN}-01\t", id="ows-trailing-tab"),
        pytest.param(f"\t 00-{SUITE_TRACE}-{SUITE_SPAN}-01 \t", id="ows-both-sides"),
    ],
)
def test_w3c_suite_valid_traceparent(value):
    assert parse_traceparent(value) == SUITE_FOUND


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN}-01.", id="version-00-trailing-character"),
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN}-01-what-the-future-will-be-like", id="version-00-extra-field"),
        pytest.param(f"cc-{SUITE_TRACE}-{SUITE_SPAN}-01.what-the-future-will-be-like", id="version-0xcc-no-dash"),
        pytest.param(f"ff-{SUITE_TRACE}-{SUITE_SPAN}-01", id="version-0xff"),
        pytest.param(f".0-{SUITE_TRACE}-{SUITE_SPAN}-01", id="version-illegal-first"),
        pytest.param(f"0.-{SUITE_TRACE}-{SUITE_SPAN}-01", id="version-illegal-second"),
        pytest.param(f"000-{SUITE_TRACE}-{SUITE_SPAN}-01", id="version-3-digits"),
        pytest.param(f"0000-{SUITE_TRACE}-{SUITE_SPAN}-01", id="version-4-digits"),
        pytest.param(f"0-{SUITE_TRACE}-{SUITE_SPAN}-01", id="version-1-digit"),
        pytest.param(f"00-{'0' * 32}-{SUITE_SPAN}-01", id="trace-id-all-zero"),
        pytest.param(f"00-.{SUITE_TRACE[1:]}-{SUITE_SPAN}-01", id="trace-id-illegal-first"),
        pytest.param(f"00-{SUITE_TRACE[:-1]}.-{SUITE_SPAN}-01", id="trace-id-illegal-last"),
        pytest.param(f"00-{SUITE_TRACE}3-{SUITE_SPAN}-01", id="trace-id-33-digits"),
        pytest.param(f"00-{SUITE_TRACE[:-1]}-{SUITE_SPAN}-01", id="trace-id-31-digits"),
        pytest.param(f"00-{SUITE_TRACE}-{'0' * 16}-01", id="parent-id-all-zero"),
        pytest.param(f"00-{SUITE_TRACE}-.{SUITE_SPAN[1:]}-01", id="parent-id-illegal-first"),
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN[:-1]}.-01", id="parent-id-illegal-last"),
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN}7-01", id="parent-id-17-digits"),
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN[:-1]}-01", id="parent-id-15-digits"),
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN}-.0", id="flags-illegal-first"),
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN}-0.", id="flags-illegal-second"),
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN}-001", id="flags-3-digits"),
        pytest.param(f"00-{SUITE_TRACE}-{SUITE_SPAN}-1", id="flags-1-digit"),
        pytest.param("asdf", id="not-a-traceparent"),
    ],
)
def test_w3c_suite_invalid_traceparent(value):
    extracted = parse_traceparent(value)
    assert extracted.context is None
    assert extracted.invalid in w3c.INVALID_REASONS


KEY = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
VALUE = "".join(map(chr, [*range(0x20, 0x2C), *range(0x2D, 0x3D), *range(0x3E, 0x7F)]))
THIRTY_TWO = [
    ",".join(f"bar{n:02}={n:02}" for n in range(1, 11)),
    ",".join(f"bar{n:02}={n:02}" for n in range(11, 21)),
    ",".join(f"bar{n:02}={n:02}" for n in range(21, 31)),
    "bar31=31,bar32=32",
]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(["foo=1,bar=2"], "foo=1,bar=2", id="inherited"),
        pytest.param(
            ["foo=1,bar=2", "rojo=1,congo=2", "baz=3"], "foo=1,bar=2,rojo=1,congo=2,baz=3", id="headers-combine"
        ),
        pytest.param([""], "", id="empty-header"),
        pytest.param(["foo=1", ""], "foo=1", id="empty-header-after"),
        pytest.param(["", "foo=1"], "foo=1", id="empty-header-before"),
        pytest.param([f"{KEY}={VALUE}"], f"{KEY}={VALUE}", id="all-allowed-characters"),
        pytest.param([f"{KEY}@a-z0-9_-*/={VALUE}"], f"{KEY}@a-z0-9_-*/={VALUE}", id="all-allowed-vendor-key"),
        pytest.param(["foo=1 \t , \t bar=2, \t baz=3"], "foo=1,bar=2,baz=3", id="ows-around-members"),
        pytest.param(["foo=1\t \t,\t \tbar=2,\t \tbaz=3"], "foo=1,bar=2,baz=3", id="ows-tabs"),
        pytest.param([" foo=1"], "foo=1", id="ows-leading-space"),
        pytest.param(["\tfoo=1"], "foo=1", id="ows-leading-tab"),
        pytest.param(["foo=1 "], "foo=1", id="ows-trailing-space"),
        pytest.param(["foo=1\t"], "foo=1", id="ows-trailing-tab"),
        pytest.param(["\t foo=1 \t"], "foo=1", id="ows-both"),
        pytest.param(THIRTY_TWO, ",".join(THIRTY_TWO), id="32-members"),
        pytest.param(["foo=1", "z" * 256 + "=1"], "foo=1," + "z" * 256 + "=1", id="key-256"),
        pytest.param(["foo=1", "t" * 241 + "@" + "v" * 14 + "=1"], "foo=1," + "t" * 241 + "@" + "v" * 14 + "=1"),
        pytest.param(["foo=1,,bar=2"], "foo=1,bar=2", id="empty-member"),
    ],
)
def test_w3c_suite_valid_tracestate(values, expected):
    assert w3c.parse_tracestate(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(["foo=1,foo=1"], id="duplicate-key"),
        pytest.param(["foo=1,foo=2"], id="duplicate-key-other-value"),
        pytest.param(["foo=1", "foo=1"], id="duplicate-key-across-headers"),
        pytest.param(["foo=1", "foo=2"], id="duplicate-key-other-value-across-headers"),
        pytest.param(["foo =1"], id="key-space"),
        pytest.param(["FOO=1"], id="key-uppercase"),
        pytest.param(["foo.bar=1"], id="key-dot"),
        pytest.param(["foo@=1,bar=2"], id="vendor-empty"),
        pytest.param(["@foo=1,bar=2"], id="tenant-empty"),
        pytest.param(["foo@@bar=1,bar=2"], id="double-at"),
        pytest.param(["foo@bar@baz=1,bar=2"], id="two-ats"),
        pytest.param([*THIRTY_TWO[:3], "bar31=31,bar32=32,bar33=33"], id="33-members"),
        pytest.param(["foo=1", "z" * 257 + "=1"], id="key-257"),
        pytest.param(["foo=1", "t" * 242 + "@v=1"], id="tenant-242"),
        pytest.param(["foo=1", "t@" + "v" * 15 + "=1"], id="vendor-15"),
        pytest.param(["foo=bar=baz"], id="value-with-equals"),
        pytest.param(["foo=,bar=3"], id="value-empty"),
        pytest.param(["foo"], id="no-equals"),
        pytest.param(["foo=" + "v" * 257], id="value-257"),
        pytest.param(["a=1," * 10_000], id="oversized"),
    ],
)
def test_w3c_suite_invalid_tracestate_is_discarded(values):
    assert w3c.parse_tracestate(values) is None


# Members near the grammar (valid ones, with now and then a bad character or a repeated key) reach further into
# the parser than arbitrary text.
_MEMBERS = st.from_regex(r"[a-z][a-z0-9_*/@-]{0,6}=[ -+\--<>-~]{0,6}[!-+\--<>-~]", fullmatch=True)
_LISTS = st.lists(_MEMBERS | st.text(max_size=12), max_size=40).map(",".join)


@given(st.lists(st.text(max_size=60) | _LISTS, max_size=5))
def test_parse_tracestate_never_raises_and_keeps_only_valid_members(values):
    parsed = w3c.parse_tracestate(values)
    if parsed is None:
        return
    assert parsed == ",".join(
        member.strip(" \t") for value in values for member in value.split(",") if member.strip(" \t")
    )
    if parsed:
        members = parsed.split(",")
        assert len(members) <= w3c.MAX_TRACESTATE_MEMBERS
        assert len({member.partition("=")[0] for member in members}) == len(members)
        assert w3c.parse_tracestate([parsed]) == parsed

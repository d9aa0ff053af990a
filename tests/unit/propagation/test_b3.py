from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.context import NO_CONTEXT, Extracted, TraceContext
from gateway.propagation import b3
from gateway.propagation.b3 import (
    extract,
    format_multi,
    format_single,
    parse_multi,
    parse_single,
)

from .strategies import contexts, header_lists

TRACE_64 = "463ac35c9f6413ad"
TRACE_128 = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
PARENT = "0020000000000001"
ZEROS_16 = "0" * 16


def found(context: TraceContext) -> Extracted:
    return Extracted(context=context, sampled=context.sampled, debug=context.debug)


def invalid(reason: str) -> Extracted:
    return Extracted(invalid=reason)


# parse_multi(trace_id, span_id, parent_id, sampled, flags)
VALID_MULTI = [
    pytest.param(
        (TRACE_64, SPAN, None, "1", None),
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True)),
        id="64-bit-sampled",
    ),
    pytest.param(
        (TRACE_128, SPAN, PARENT, "0", None),
        found(TraceContext(0x463AC35C9F6413AD48485A3953BB6124, 0xA2FB4A1D1A96D312, 0x20000000000001, False)),
        id="128-bit-with-parent-not-sampled",
    ),
    pytest.param(
        (TRACE_128.upper(), SPAN.upper(), PARENT, "1", None),
        found(TraceContext(0x463AC35C9F6413AD48485A3953BB6124, 0xA2FB4A1D1A96D312, 0x20000000000001, True)),
        id="uppercase-hex",
    ),
    pytest.param(
        (TRACE_64, SPAN, None, None, None),
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, None)),
        id="deferred",
    ),
    pytest.param(
        (TRACE_64, SPAN, None, None, "1"),
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True, True)),
        id="debug-implies-sampled",
    ),
    pytest.param(
        (TRACE_64, SPAN, None, "0", "1"),
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True, True)),
        id="debug-overrides-not-sampled",
    ),
    pytest.param(
        (TRACE_64, SPAN, None, "1", "0"),
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True)),
        id="flags-0-is-not-debug",
    ),
    pytest.param(
        (TRACE_64, SPAN, None, "1", "2"),
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True)),
        id="unknown-flags-ignored",
    ),
    pytest.param(
        (TRACE_64, SPAN, None, "true", None),
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True)),
        id="legacy-true",
    ),
    pytest.param(
        (TRACE_64, SPAN, None, "False", None),
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, False)),
        id="legacy-false-any-case",
    ),
    pytest.param(
        ("0" * 16 + TRACE_64, SPAN, None, "1", None),
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True)),
        id="128-bit-with-zero-high-bits",
    ),
    pytest.param(
        (TRACE_64, SPAN, "", "", ""),
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, None)),
        id="empty-values-are-absent",
    ),
    pytest.param((None, None, None, "1", None), Extracted(sampled=True), id="sampled-only"),
    pytest.param((None, None, None, "0", None), Extracted(sampled=False), id="not-sampled-only"),
    pytest.param((None, None, None, None, "1"), Extracted(sampled=True, debug=True), id="debug-only"),
    pytest.param((None, None, None, None, None), NO_CONTEXT, id="nothing"),
    pytest.param(("", "", "", "", ""), NO_CONTEXT, id="all-empty"),
    pytest.param((None, None, None, None, "0"), NO_CONTEXT, id="lone-flags-0"),
]


@pytest.mark.parametrize(("args", "expected"), VALID_MULTI)
def test_parse_multi_valid(args, expected):
    assert parse_multi(*args) == expected


INVALID_MULTI = [
    pytest.param((TRACE_64[:-1], SPAN, None, "1", None), "malformed_trace_id", id="trace-15-hex"),
    pytest.param((TRACE_64 + "a", SPAN, None, "1", None), "malformed_trace_id", id="trace-17-hex"),
    pytest.param((TRACE_128[:-1], SPAN, None, "1", None), "malformed_trace_id", id="trace-31-hex"),
    pytest.param((TRACE_128 + "ab", SPAN, None, "1", None), "malformed_trace_id", id="trace-34-hex"),
    pytest.param(("463ac35c9f6413ag", SPAN, None, "1", None), "malformed_trace_id", id="trace-non-hex"),
    pytest.param(("0x63ac35c9f6413ad", SPAN, None, "1", None), "malformed_trace_id", id="trace-0x-prefix"),
    pytest.param(("463ac35c_f6413ad", SPAN, None, "1", None), "malformed_trace_id", id="trace-underscore"),
    pytest.param((" 463ac35c9f6413a", SPAN, None, "1", None), "malformed_trace_id", id="trace-space"),
    pytest.param(("+463ac35c9f6413a", SPAN, None, "1", None), "malformed_trace_id", id="trace-plus"),
    pytest.param((ZEROS_16, SPAN, None, "1", None), "malformed_trace_id", id="trace-zero-64"),
    pytest.param(("0" * 32, SPAN, None, "1", None), "malformed_trace_id", id="trace-zero-128"),
    pytest.param(("४" * 16, SPAN, None, "1", None), "malformed_trace_id", id="trace-unicode-digits"),
    pytest.param((TRACE_64, SPAN[:-1], None, "1", None), "malformed_span_id", id="span-15-hex"),
    pytest.param((TRACE_64, TRACE_128, None, "1", None), "malformed_span_id", id="span-32-hex"),
    pytest.param((TRACE_64, ZEROS_16, None, "1", None), "malformed_span_id", id="span-zero"),
    pytest.param((TRACE_64, "a2fb4a1d1a96d31z", None, "1", None), "malformed_span_id", id="span-non-hex"),
    pytest.param((TRACE_64, SPAN, ZEROS_16, "1", None), "malformed_parent_id", id="parent-zero"),
    pytest.param((TRACE_64, SPAN, PARENT[:-1], "1", None), "malformed_parent_id", id="parent-15-hex"),
    pytest.param((TRACE_64, SPAN, "x" * 16, "1", None), "malformed_parent_id", id="parent-non-hex"),
    pytest.param((TRACE_64, SPAN, None, "2", None), "malformed_sampled", id="sampled-2"),
    pytest.param((TRACE_64, SPAN, None, "yes", None), "malformed_sampled", id="sampled-yes"),
    pytest.param((TRACE_64, SPAN, None, "d", None), "malformed_sampled", id="sampled-d-is-single-only"),
    pytest.param((None, None, None, "on", None), "malformed_sampled", id="lone-sampled-malformed"),
    pytest.param((None, SPAN, None, "1", None), "missing_trace_id", id="span-without-trace"),
    pytest.param((None, None, PARENT, None, None), "missing_trace_id", id="parent-alone"),
    pytest.param((TRACE_64, None, None, "1", None), "missing_span_id", id="trace-without-span"),
    pytest.param((TRACE_64, "", None, "1", None), "missing_span_id", id="trace-with-empty-span"),
    pytest.param(("a" * 129, SPAN, None, "1", None), "oversized_header", id="oversized-trace"),
    pytest.param((TRACE_64, SPAN, None, "1", "1" * 129), "oversized_header", id="oversized-flags"),
]


@pytest.mark.parametrize(("args", "reason"), INVALID_MULTI)
def test_parse_multi_invalid_to_no_context(args, reason):
    assert parse_multi(*args) == invalid(reason)


VALID_SINGLE = [
    pytest.param(
        f"{TRACE_64}-{SPAN}-1",
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True)),
        id="64-bit-sampled",
    ),
    pytest.param(
        f"{TRACE_128}-{SPAN}-0-{PARENT}",
        found(TraceContext(0x463AC35C9F6413AD48485A3953BB6124, 0xA2FB4A1D1A96D312, 0x20000000000001, False)),
        id="128-bit-not-sampled-with-parent",
    ),
    pytest.param(
        f"{TRACE_128}-{SPAN}-d-{PARENT}",
        found(TraceContext(0x463AC35C9F6413AD48485A3953BB6124, 0xA2FB4A1D1A96D312, 0x20000000000001, True, True)),
        id="debug",
    ),
    pytest.param(
        f"{TRACE_64}-{SPAN}",
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, None)),
        id="deferred",
    ),
    pytest.param(
        f"{TRACE_64}-{SPAN}-{PARENT}",
        found(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, 0x20000000000001, None)),
        id="deferred-with-parent",
    ),
    pytest.param(
        f"{TRACE_128.upper()}-{SPAN.upper()}-1",
        found(TraceContext(0x463AC35C9F6413AD48485A3953BB6124, 0xA2FB4A1D1A96D312, None, True)),
        id="uppercase-hex",
    ),
    pytest.param("1", Extracted(sampled=True), id="sampled-only"),
    pytest.param("0", Extracted(sampled=False), id="not-sampled-only"),
    pytest.param("d", Extracted(sampled=True, debug=True), id="debug-only"),
]


@pytest.mark.parametrize(("value", "expected"), VALID_SINGLE)
def test_parse_single_valid(value, expected):
    assert parse_single(value) == expected


INVALID_SINGLE = [
    pytest.param("", "malformed_b3", id="empty"),
    pytest.param("2", "malformed_sampled", id="lone-2"),
    pytest.param("D", "malformed_sampled", id="lone-uppercase-d"),
    pytest.param("true", "malformed_b3", id="lone-true"),
    pytest.param(TRACE_64, "malformed_b3", id="trace-only"),
    pytest.param(f"{TRACE_64}-{SPAN}-1-{PARENT}-extra", "malformed_b3", id="five-fields"),
    pytest.param(f"{TRACE_64}-{SPAN}-", "malformed_sampled", id="trailing-dash"),
    pytest.param(f"{TRACE_64}-{SPAN}-2", "malformed_sampled", id="sampling-2"),
    pytest.param(f"{TRACE_64}-{SPAN}-true", "malformed_sampled", id="sampling-true"),
    pytest.param(f"{TRACE_64}-{SPAN}-x-{PARENT}", "malformed_sampled", id="sampling-x-with-parent"),
    pytest.param(f"{TRACE_64}-{SPAN}-{PARENT[:-1]}x", "malformed_parent_id", id="deferred-parent-non-hex"),
    pytest.param(f"{TRACE_64}-{SPAN}-1-{ZEROS_16}", "malformed_parent_id", id="parent-zero"),
    pytest.param(f"{TRACE_64}-{SPAN}-1-{PARENT[:-1]}", "malformed_parent_id", id="parent-short"),
    pytest.param(f"{TRACE_64}-{SPAN}-1-", "malformed_parent_id", id="parent-empty"),
    pytest.param(f"{ZEROS_16}-{SPAN}-1", "malformed_trace_id", id="trace-zero"),
    pytest.param(f"{TRACE_64[:-1]}-{SPAN}-1", "malformed_trace_id", id="trace-15-hex"),
    pytest.param(f"{TRACE_128}a-{SPAN}-1", "malformed_trace_id", id="trace-33-hex"),
    pytest.param(f"-{SPAN}-1", "malformed_trace_id", id="trace-empty"),
    pytest.param(f"{TRACE_64}-{ZEROS_16}-1", "malformed_span_id", id="span-zero"),
    pytest.param(f"{TRACE_64}-{SPAN}a-1", "malformed_span_id", id="span-17-hex"),
    pytest.param(f"{TRACE_64}--1", "malformed_span_id", id="span-empty"),
    pytest.param(f" {TRACE_64}-{SPAN}-1", "malformed_trace_id", id="leading-space"),
    pytest.param(f"{TRACE_64}-{SPAN}-1 ", "malformed_sampled", id="trailing-space"),
    pytest.param(f"{TRACE_128}-{SPAN}-1-{PARENT}" + "0" * 61, "oversized_header", id="oversized"),
]


@pytest.mark.parametrize(("value", "reason"), INVALID_SINGLE)
def test_parse_single_invalid_to_no_context(value, reason):
    assert parse_single(value) == invalid(reason)


def test_parse_single_length_bound_is_inclusive():
    value = f"{TRACE_128}-{SPAN}-1-{PARENT}"
    padded = value + "-" * (b3.MAX_VALUE_LENGTH - len(value))
    assert parse_single(padded).invalid == "malformed_b3"
    assert parse_single(padded + "-").invalid == "oversized_header"


def headers(**values: str | bytes) -> list[tuple[bytes, bytes]]:
    """Raw ASGI headers from keyword arguments: x_b3_traceid="..." -> (b"x-b3-traceid", b"...")."""
    return [
        (name.replace("_", "-").encode(), value if isinstance(value, bytes) else value.encode("latin-1"))
        for name, value in values.items()
    ]


CTX_64 = TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True)
CTX_128 = TraceContext(0x463AC35C9F6413AD48485A3953BB6124, 0xA2FB4A1D1A96D312, 0x20000000000001, False)


def test_extract_multi_headers():
    assert extract(headers(x_b3_traceid=TRACE_64, x_b3_spanid=SPAN, x_b3_sampled="1")) == found(CTX_64)


def test_extract_single_header():
    assert extract(headers(b3=f"{TRACE_128}-{SPAN}-0-{PARENT}")) == found(CTX_128)


def test_extract_ignores_other_headers():
    raw = [(b"host", b"example.com"), *headers(x_b3_traceid=TRACE_64, x_b3_spanid=SPAN, x_b3_sampled="1")]
    raw.append((b"x-b3-something", b"else"))
    assert extract(raw) == found(CTX_64)


def test_extract_single_takes_precedence_over_multi():
    raw = headers(b3=f"{TRACE_128}-{SPAN}-0-{PARENT}", x_b3_traceid=TRACE_64, x_b3_spanid=SPAN, x_b3_sampled="1")
    assert extract(raw) == found(CTX_128)


def test_extract_sampling_only_single_takes_precedence_over_multi():
    raw = headers(b3="0", x_b3_traceid=TRACE_64, x_b3_spanid=SPAN, x_b3_sampled="1")
    assert extract(raw) == Extracted(sampled=False)


def test_extract_invalid_single_falls_back_to_valid_multi():
    raw = headers(b3="garbage", x_b3_traceid=TRACE_64, x_b3_spanid=SPAN, x_b3_sampled="1")
    assert extract(raw) == found(CTX_64)


def test_extract_invalid_single_and_invalid_multi_report_single():
    raw = headers(b3=f"{ZEROS_16}-{SPAN}", x_b3_traceid=TRACE_64, x_b3_spanid="nope")
    assert extract(raw) == invalid("malformed_trace_id")


def test_extract_invalid_single_alone_reports_single():
    assert extract(headers(b3="1-2-3")) == invalid("malformed_trace_id")


def test_extract_empty_single_is_absent():
    raw = headers(b3="", x_b3_traceid=TRACE_64, x_b3_spanid=SPAN, x_b3_sampled="1")
    assert extract(raw) == found(CTX_64)
    assert extract(headers(b3="")) == NO_CONTEXT


def test_extract_nothing_to_no_context():
    assert extract([]) == NO_CONTEXT
    assert extract([(b"host", b"example.com"), (b"traceparent", b"00-whatever")]) == NO_CONTEXT


def test_extract_sampled_only():
    assert extract(headers(x_b3_sampled="1")) == Extracted(sampled=True)
    assert extract(headers(x_b3_flags="1")) == Extracted(sampled=True, debug=True)


@pytest.mark.parametrize("name", sorted(b3.MULTI_NAMES))
def test_extract_duplicate_multi_header_to_no_context(name):
    raw = headers(x_b3_traceid=TRACE_64, x_b3_spanid=SPAN, x_b3_parentspanid=PARENT, x_b3_sampled="1", x_b3_flags="0")
    value = dict(raw)[name]
    raw.append((name, value))
    assert extract(raw) == invalid("duplicate_header")


def test_extract_duplicate_multi_header_even_when_repeated_three_times():
    raw = headers(x_b3_traceid=TRACE_64, x_b3_spanid=SPAN) + [(b"x-b3-spanid", SPAN.encode())] * 2
    assert extract(raw) == invalid("duplicate_header")


def test_extract_duplicate_single_header_falls_back_to_multi():
    value = f"{TRACE_128}-{SPAN}-0"
    raw = headers(b3=value, x_b3_traceid=TRACE_64, x_b3_spanid=SPAN, x_b3_sampled="1") + [(b"b3", value.encode())]
    assert extract(raw) == found(CTX_64)
    assert extract(headers(b3=value) + [(b"b3", b"1")]) == invalid("duplicate_header")


def test_extract_oversized_header_to_no_context():
    assert extract(headers(x_b3_traceid="a" * 10_000, x_b3_spanid=SPAN)) == invalid("oversized_header")
    assert extract(headers(b3="1" * 10_000)) == invalid("oversized_header")


def test_extract_undecodable_bytes_to_no_context():
    raw = [(b"x-b3-traceid", b"\xff\xfe" * 8), (b"x-b3-spanid", SPAN.encode())]
    assert extract(raw) == invalid("malformed_trace_id")
    assert extract([(b"b3", b"\x80\x81\x82")]) == invalid("malformed_b3")


def test_extract_accepts_any_iterable():
    raw = iter(headers(x_b3_traceid=TRACE_64, x_b3_spanid=SPAN, x_b3_sampled="1"))
    assert extract(raw) == found(CTX_64)


def test_find_headers_marks_duplicates_as_none():
    raw = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", b"4")]
    assert b3.find_headers(raw, frozenset({b"a", b"b"})) == {b"a": None, b"b": b"2"}


FORMAT_CASES = [
    pytest.param(
        TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True),
        [(b"x-b3-traceid", b"463ac35c9f6413ad"), (b"x-b3-spanid", b"a2fb4a1d1a96d312"), (b"x-b3-sampled", b"1")],
        "463ac35c9f6413ad-a2fb4a1d1a96d312-1",
        id="64-bit-sampled",
    ),
    pytest.param(
        TraceContext(0x463AC35C9F6413AD48485A3953BB6124, 0xA2FB4A1D1A96D312, 0x20000000000001, False),
        [
            (b"x-b3-traceid", b"463ac35c9f6413ad48485a3953bb6124"),
            (b"x-b3-spanid", b"a2fb4a1d1a96d312"),
            (b"x-b3-parentspanid", b"0020000000000001"),
            (b"x-b3-sampled", b"0"),
        ],
        "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-0-0020000000000001",
        id="128-bit-not-sampled-with-parent",
    ),
    pytest.param(
        TraceContext(1, 2, 3, True, True),
        [
            (b"x-b3-traceid", b"0000000000000001"),
            (b"x-b3-spanid", b"0000000000000002"),
            (b"x-b3-parentspanid", b"0000000000000003"),
            (b"x-b3-sampled", b"1"),
            (b"x-b3-flags", b"1"),
        ],
        "0000000000000001-0000000000000002-d-0000000000000003",
        id="debug-zero-padded",
    ),
    pytest.param(
        TraceContext(2**64, 2, None, None),
        [(b"x-b3-traceid", b"00000000000000010000000000000000"), (b"x-b3-spanid", b"0000000000000002")],
        "00000000000000010000000000000000-0000000000000002",
        id="deferred-just-over-64-bits",
    ),
    pytest.param(
        TraceContext(2**64 - 1, 2, 5, None),
        [
            (b"x-b3-traceid", b"ffffffffffffffff"),
            (b"x-b3-spanid", b"0000000000000002"),
            (b"x-b3-parentspanid", b"0000000000000005"),
        ],
        "ffffffffffffffff-0000000000000002-0000000000000005",
        id="deferred-with-parent-max-64-bits",
    ),
]


@pytest.mark.parametrize(("ctx", "multi", "single"), FORMAT_CASES)
def test_format(ctx, multi, single):
    assert format_multi(ctx) == multi
    assert format_single(ctx) == single


@given(contexts())
def test_multi_round_trip(ctx):
    assert extract(format_multi(ctx)) == found(ctx)


@given(contexts())
def test_single_round_trip(ctx):
    assert parse_single(format_single(ctx)) == found(ctx)
    assert extract([(b"b3", format_single(ctx).encode())]) == found(ctx)


def check_invariants(extracted: Extracted) -> None:
    assert extracted.invalid is None or extracted.invalid in b3.INVALID_REASONS
    if extracted.invalid is not None:
        assert extracted == Extracted(invalid=extracted.invalid)
    if extracted.debug:
        assert extracted.sampled is True
    if extracted.context is not None:
        ctx = extracted.context
        assert (extracted.sampled, extracted.debug) == (ctx.sampled, ctx.debug)
        assert 0 < ctx.trace_id < 2**128
        assert 0 < ctx.span_id < 2**64
        assert ctx.parent_id is None or 0 < ctx.parent_id < 2**64


@given(header_lists)
def test_extract_never_raises_on_arbitrary_headers(raw):
    check_invariants(extract(raw))


@given(st.text())
def test_parse_single_never_raises(value):
    check_invariants(parse_single(value))


@given(st.lists(st.none() | st.text(max_size=40), min_size=5, max_size=5))
def test_parse_multi_never_raises(values):
    check_invariants(parse_multi(*values))

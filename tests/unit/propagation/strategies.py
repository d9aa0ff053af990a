"""Hypothesis strategies shared by the propagation tests."""

from __future__ import annotations

from hypothesis import strategies as st

from gateway.context import MAX_64BIT, MAX_128BIT, TraceContext
from gateway.propagation import TRACE_HEADERS
from gateway.propagation.b3 import format_multi, format_single
from gateway.propagation.w3c import format_traceparent

trace_ids = st.one_of(st.integers(1, MAX_64BIT), st.integers(1, MAX_128BIT))
span_ids = st.integers(1, MAX_64BIT)


@st.composite
def contexts(draw: st.DrawFn, parent: bool = True, deferred: bool = True, debug: bool = True) -> TraceContext:
    is_debug = draw(st.booleans()) if debug else False
    choices: list[bool | None] = [True, False, None] if deferred else [True, False]
    sampled = True if is_debug else draw(st.sampled_from(choices))
    parent_id = draw(st.none() | span_ids) if parent else None
    return TraceContext(draw(trace_ids), draw(span_ids), parent_id, sampled, is_debug)


# Text near the valid forms reaches deeper into the parsers than arbitrary text does.
_NEAR_HEX = st.text(alphabet="0123456789abcdefABCDEF-dx ", max_size=80)
header_values = st.one_of(st.binary(max_size=200), _NEAR_HEX.map(lambda text: text.encode("latin-1")))
header_names = st.one_of(st.sampled_from(sorted(TRACE_HEADERS)), st.binary(max_size=20))
_random_header_lists = st.lists(st.tuples(header_names, header_values), max_size=12)
# Valid headers among random ones: duplicates, conflicts and fallbacks between formats.
_valid_headers = st.one_of(
    contexts().map(format_multi),
    contexts().map(lambda ctx: [(b"b3", format_single(ctx).encode())]),
    contexts().map(lambda ctx: [(b"traceparent", format_traceparent(ctx).encode())]),
)
header_lists = st.one_of(
    _random_header_lists,
    st.tuples(_valid_headers, _valid_headers, _random_header_lists).flatmap(
        lambda parts: st.permutations([*parts[0], *parts[1], *parts[2]])
    ),
)

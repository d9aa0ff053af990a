from __future__ import annotations

import random

import pytest

from gateway.context import MAX_64BIT, MAX_128BIT, NO_CONTEXT, Extracted, RandomIdGenerator, TraceContext

DRAWS = 2_000


def test_128bit_trace_ids_use_all_128_bits():
    ids = [RandomIdGenerator(trace_id_128bit=True).new_trace_id() for _ in range(DRAWS)]
    assert all(0 < trace_id <= MAX_128BIT for trace_id in ids)
    # Each id exceeds 64 bits with probability 1 - 2**-64; a 64-bit generator would fail this.
    assert all(trace_id > MAX_64BIT for trace_id in ids)
    assert any(trace_id >= 2**127 for trace_id in ids)


def test_64bit_trace_ids_fit_in_64_bits():
    ids = [RandomIdGenerator(trace_id_128bit=False).new_trace_id() for _ in range(DRAWS)]
    assert all(0 < trace_id <= MAX_64BIT for trace_id in ids)
    assert any(trace_id >= 2**63 for trace_id in ids)


@pytest.mark.parametrize("trace_id_128bit", [True, False])
def test_span_ids_are_64_bit(trace_id_128bit):
    ids = [RandomIdGenerator(trace_id_128bit).new_span_id() for _ in range(DRAWS)]
    assert all(0 < span_id <= MAX_64BIT for span_id in ids)
    assert any(span_id >= 2**63 for span_id in ids)


def test_ids_are_not_repeated():
    generator = RandomIdGenerator()
    assert len({generator.new_trace_id() for _ in range(DRAWS)}) == DRAWS
    assert len({generator.new_span_id() for _ in range(DRAWS)}) == DRAWS


def test_zero_is_drawn_again(monkeypatch):
    draws = iter([0, 0, 42, 0, 7])
    monkeypatch.setattr(random, "getrandbits", lambda bits: next(draws))
    generator = RandomIdGenerator()
    assert generator.new_trace_id() == 42
    assert generator.new_span_id() == 7


def test_default_generator_makes_128bit_trace_ids(monkeypatch):
    widths = []

    def getrandbits(bits):
        widths.append(bits)
        return 1

    monkeypatch.setattr(random, "getrandbits", getrandbits)
    RandomIdGenerator().new_trace_id()
    RandomIdGenerator(trace_id_128bit=False).new_trace_id()
    RandomIdGenerator().new_span_id()
    assert widths == [128, 64, 64]


def test_values_are_frozen_and_compare_by_value():
    ctx = TraceContext(1, 2)
    assert (ctx.parent_id, ctx.sampled, ctx.debug) == (None, None, False)
    assert ctx == TraceContext(1, 2, None, None, False)
    with pytest.raises(AttributeError):
        ctx.sampled = True  # type: ignore[misc]
    assert NO_CONTEXT == Extracted(None, None, False, None)

"""Trace context values and the ids that make them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

MAX_64BIT = 2**64 - 1
MAX_128BIT = 2**128 - 1


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One span's place in a trace. Ids are ints inside; hex only on the wire.

    ``sampled`` is None when the decision is deferred (B3's absent sampling state);
    ``debug`` implies sampled.
    """

    trace_id: int
    span_id: int
    parent_id: int | None = None
    sampled: bool | None = None
    debug: bool = False


@dataclass(frozen=True, slots=True)
class Extracted:
    """What a request's headers said about its trace, once parsed.

    ``context`` holds usable ids, or None. A header may carry a sampling decision without ids
    (``b3: 0``, a lone ``X-B3-Sampled: 1``), hence ``sampled``/``debug`` apart from ``context``.
    ``invalid`` is a short metrics label (e.g. ``"malformed_trace_id"``) when trace headers were
    present but unusable; the request then carries no context at all.

    ``tracestate`` is the W3C vendor state that came with a ``traceparent`` of the same trace, to pass on
    with it; ``tracestate_invalid`` says one came and was discarded, without spoiling the context.
    """

    context: TraceContext | None = None
    sampled: bool | None = None
    debug: bool = False
    invalid: str | None = None
    tracestate: str | None = None
    tracestate_invalid: bool = False


NO_CONTEXT = Extracted()


class IdGenerator(Protocol):
    def new_trace_id(self) -> int: ...

    def new_span_id(self) -> int: ...


class RandomIdGenerator:
    """Random non-zero ids, as OpenTelemetry's RandomIdGenerator: not cryptographic, and fast."""

    def __init__(self, trace_id_128bit: bool = True) -> None:
        self._trace_id_bits = 128 if trace_id_128bit else 64

    def new_trace_id(self) -> int:
        return _non_zero(self._trace_id_bits)

    def new_span_id(self) -> int:
        return _non_zero(64)


def _non_zero(bits: int) -> int:
    value = random.getrandbits(bits)
    while value == 0:
        value = random.getrandbits(bits)
    return value

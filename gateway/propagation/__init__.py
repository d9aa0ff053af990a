"""Trace-context wire formats: B3 (multi and single header) and W3C trace context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gateway.context import NO_CONTEXT, Extracted
from gateway.propagation import b3, w3c

TRACE_HEADERS = frozenset((*b3.NAMES, w3c.TRACEPARENT_BYTES, w3c.TRACESTATE_BYTES))
# Every label of an ignored trace header (`Extracted.invalid`, a bad tracestate), so that metric children can be
# created up front.
INVALID_REASONS = tuple(dict.fromkeys((*b3.INVALID_REASONS, *w3c.INVALID_REASONS)))

_B3_PREFIX = b"x-b3-"
_EXTRACTED = b3.NAMES | {w3c.TRACEPARENT_BYTES}


def is_trace_header(name: bytes) -> bool:
    """Whether a client could forge trace context with this (lowercase) header name."""
    return name in TRACE_HEADERS or name.startswith(_B3_PREFIX)


def extract_context(headers: Sequence[tuple[bytes, bytes]]) -> Extracted:
    """The trace context a trusted client sent: B3 (single, then multi) first, else ``traceparent``.

    An unusable format gives way to a usable one, as `b3.extract_found` does within B3; the first
    format's reason is reported only when neither is usable. A ``tracestate`` comes along when a valid
    ``traceparent`` of the context's trace was sent: the spec ties the two together.
    """
    found = b3.find_headers(headers, _EXTRACTED)
    extracted = b3.extract_found(found)
    if extracted.context is not None or extracted.sampled is not None or w3c.TRACEPARENT_BYTES not in found:
        if extracted.context is not None and found.get(w3c.TRACEPARENT_BYTES):
            return _with_tracestate(extracted, _from_traceparent(found[w3c.TRACEPARENT_BYTES]), headers)
        return extracted
    traceparent = _from_traceparent(found[w3c.TRACEPARENT_BYTES])
    if traceparent.context is not None:
        return _with_tracestate(traceparent, traceparent, headers)
    if extracted.invalid is None:
        return traceparent
    return extracted


def _from_traceparent(raw: bytes | None) -> Extracted:
    if raw is None:
        return Extracted(invalid=w3c.DUPLICATE_HEADER)
    # As with B3, an empty value counts as absent.
    if not raw:
        return NO_CONTEXT
    return w3c.parse_traceparent(raw.decode("latin-1"))


def _with_tracestate(extracted: Extracted, traceparent: Extracted, headers: Sequence[tuple[bytes, bytes]]) -> Extracted:
    if extracted.context is None or traceparent.context is None:
        return extracted
    if traceparent.context.trace_id != extracted.context.trace_id:
        return extracted
    values = [value.decode("latin-1") for name, value in headers if name == w3c.TRACESTATE_BYTES]
    if not values:
        return extracted
    tracestate = w3c.parse_tracestate(values)
    if tracestate is None:
        return replace(extracted, tracestate_invalid=True)
    return replace(extracted, tracestate=tracestate or None)

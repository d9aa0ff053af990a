"""Trace-context wire formats: B3 (multi and single header) and W3C trace context."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.context import NO_CONTEXT, Extracted
from gateway.propagation import b3, w3c

TRACE_HEADERS = frozenset((*b3.NAMES, w3c.TRACEPARENT_BYTES, w3c.TRACESTATE_BYTES))
# Every label `Extracted.invalid` can take, so that metric children can be created up front.
INVALID_REASONS = tuple(dict.fromkeys((*b3.INVALID_REASONS, *w3c.INVALID_REASONS)))

_B3_PREFIX = b"x-b3-"
_EXTRACTED = b3.NAMES | {w3c.TRACEPARENT_BYTES}


def is_trace_header(name: bytes) -> bool:
    """Whether a client could forge trace context with this (lowercase) header name."""
    return name in TRACE_HEADERS or name.startswith(_B3_PREFIX)


def extract_context(headers: Sequence[tuple[bytes, bytes]]) -> Extracted:
    """The trace context a trusted client sent: B3 (single, then multi) first, else ``traceparent``.

    An unusable format gives way to a usable one, as `b3.extract_found` does within B3; the first
    format's reason is reported only when neither is usable.
    """
    found = b3.find_headers(headers, _EXTRACTED)
    extracted = b3.extract_found(found)
    if extracted.context is not None or extracted.sampled is not None or w3c.TRACEPARENT_BYTES not in found:
        return extracted
    traceparent = _from_traceparent(found[w3c.TRACEPARENT_BYTES])
    if traceparent.context is not None or extracted.invalid is None:
        return traceparent
    return extracted


def _from_traceparent(raw: bytes | None) -> Extracted:
    if raw is None:
        return Extracted(invalid=w3c.DUPLICATE_HEADER)
    # As with B3, an empty value counts as absent.
    if not raw:
        return NO_CONTEXT
    return w3c.parse_traceparent(raw.decode("latin-1"))

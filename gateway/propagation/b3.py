"""B3 propagation: the X-B3-* headers and the single ``b3`` header.

See https://github.com/openzipkin/b3-propagation. Parsing is lenient where Brave is (``true``/``false``
sampled values, any X-B3-Flags other than ``1`` ignored) and otherwise strict: a header that cannot be
used makes the whole format count as absent, with the reason in ``Extracted.invalid``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

from gateway.context import MAX_64BIT, NO_CONTEXT, Extracted, TraceContext

B3 = "b3"
TRACE_ID = "x-b3-traceid"
SPAN_ID = "x-b3-spanid"
PARENT_SPAN_ID = "x-b3-parentspanid"
SAMPLED = "x-b3-sampled"
FLAGS = "x-b3-flags"

B3_BYTES = B3.encode("ascii")
TRACE_ID_BYTES = TRACE_ID.encode("ascii")
SPAN_ID_BYTES = SPAN_ID.encode("ascii")
PARENT_SPAN_ID_BYTES = PARENT_SPAN_ID.encode("ascii")
SAMPLED_BYTES = SAMPLED.encode("ascii")
FLAGS_BYTES = FLAGS.encode("ascii")

MULTI_NAMES = (TRACE_ID_BYTES, SPAN_ID_BYTES, PARENT_SPAN_ID_BYTES, SAMPLED_BYTES, FLAGS_BYTES)
NAMES = frozenset((B3_BYTES, *MULTI_NAMES))

# The longest valid value is a single header with a 128-bit trace id: 32+1+16+1+1+1+16 = 68 characters.
MAX_VALUE_LENGTH = 128

DUPLICATE_HEADER = "duplicate_header"
OVERSIZED_HEADER = "oversized_header"
MALFORMED_B3 = "malformed_b3"
MALFORMED_TRACE_ID = "malformed_trace_id"
MALFORMED_SPAN_ID = "malformed_span_id"
MALFORMED_PARENT_ID = "malformed_parent_id"
MALFORMED_SAMPLED = "malformed_sampled"
MISSING_TRACE_ID = "missing_trace_id"
MISSING_SPAN_ID = "missing_span_id"
INVALID_REASONS = (
    DUPLICATE_HEADER,
    OVERSIZED_HEADER,
    MALFORMED_B3,
    MALFORMED_TRACE_ID,
    MALFORMED_SPAN_ID,
    MALFORMED_PARENT_ID,
    MALFORMED_SAMPLED,
    MISSING_TRACE_ID,
    MISSING_SPAN_ID,
)

_TRACE_ID_HEX = re.compile(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}")
_SPAN_ID_HEX = re.compile(r"[0-9a-fA-F]{16}")
# X-B3-Sampled values as single-header sampling states. Brave still accepts the "true"/"false" that
# instrumentation sent before the B3 spec.
_SAMPLED_VALUES = {"1": "1", "0": "0", "true": "1", "false": "0"}
_SAMPLING_ONLY = {"1": Extracted(sampled=True), "0": Extracted(sampled=False), "d": Extracted(sampled=True, debug=True)}
_INVALID = {reason: Extracted(invalid=reason) for reason in INVALID_REASONS}


def parse_multi(
    trace_id: str | None,
    span_id: str | None,
    parent_id: str | None,
    sampled: str | None,
    flags: str | None,
) -> Extracted:
    """Parse the X-B3-* header values; None or an empty string means the header was absent.

    X-B3-Sampled takes ``1``/``0`` and, as Brave does, ``true``/``false`` in any case. X-B3-Flags ``1``
    means debug, which implies sampled; Brave ignores any other flags value, and so does this. A
    sampling state or debug flag without ids is a decision for a new trace.
    """
    for value in (trace_id, span_id, parent_id, sampled, flags):
        if value is not None and len(value) > MAX_VALUE_LENGTH:
            return _INVALID[OVERSIZED_HEADER]
    state = None
    if sampled:
        state = _SAMPLED_VALUES.get(sampled.lower())
        if state is None:
            return _INVALID[MALFORMED_SAMPLED]
    if flags == "1":
        state = "d"
    if not (trace_id or span_id or parent_id):
        return NO_CONTEXT if state is None else _SAMPLING_ONLY[state]
    if not trace_id:
        return _INVALID[MISSING_TRACE_ID]
    if not span_id:
        return _INVALID[MISSING_SPAN_ID]
    return _context(trace_id, span_id, state, parent_id or None)


def parse_single(value: str) -> Extracted:
    """Parse a ``b3`` header: ``{traceid}-{spanid}[-{sampling}][-{parentspanid}]`` or a lone ``0``/``1``/``d``.

    The sampling state is ``1``, ``0`` or ``d`` (debug). As in Brave, a parent id may follow the span id
    directly when the sampling state is deferred (absent).
    """
    if len(value) > MAX_VALUE_LENGTH:
        return _INVALID[OVERSIZED_HEADER]
    if len(value) == 1:
        return _SAMPLING_ONLY.get(value, _INVALID[MALFORMED_SAMPLED])
    fields = value.split("-")
    if not 2 <= len(fields) <= 4:
        return _INVALID[MALFORMED_B3]
    sampling = parent_id = None
    if len(fields) == 4:
        sampling, parent_id = fields[2], fields[3]
    elif len(fields) == 3 and len(fields[2]) == 16:
        parent_id = fields[2]
    elif len(fields) == 3:
        sampling = fields[2]
    return _context(fields[0], fields[1], sampling, parent_id)


def extract(headers: Iterable[tuple[bytes, bytes]]) -> Extracted:
    """The B3 context in raw ASGI headers (lowercase names): see `extract_found`."""
    return extract_found(find_headers(headers, NAMES))


def extract_found(found: Mapping[bytes, bytes | None]) -> Extracted:
    """The B3 context in headers gathered by `find_headers`.

    The ``b3`` header takes precedence over the X-B3-* headers, as the B3 spec says. When ``b3`` is
    unusable and the X-B3-* headers are valid, they are used and nothing is reported invalid (Brave
    falls back the same way); the ``b3`` header's reason is reported only when no B3 context is usable.
    An empty value counts as absent; a header sent twice is invalid.
    """
    if not found:
        return NO_CONTEXT
    single = _single_from(found.get(B3_BYTES, b""))
    if _usable(single):
        return single
    multi = _multi_from(found)
    if _usable(multi) or single.invalid is None:
        return multi
    return single


def find_headers(headers: Iterable[tuple[bytes, bytes]], names: Collection[bytes]) -> dict[bytes, bytes | None]:
    """The value of each header in ``names`` that is present, or None for a header sent more than once."""
    found: dict[bytes, bytes | None] = {}
    for name, value in headers:
        if name in names:
            found[name] = None if name in found else value
    return found


def format_multi(ctx: TraceContext) -> list[tuple[bytes, bytes]]:
    """X-B3-* headers for ``ctx``; X-B3-Sampled is left out only when the decision is deferred.

    A debug context sends ``X-B3-Sampled: 1`` as well as ``X-B3-Flags: 1``: Linkerd's proxy looks at
    X-B3-Sampled alone.
    """
    headers = [
        (TRACE_ID_BYTES, _trace_id_hex(ctx.trace_id).encode("ascii")),
        (SPAN_ID_BYTES, f"{ctx.span_id:016x}".encode("ascii")),
    ]
    if ctx.parent_id is not None:
        headers.append((PARENT_SPAN_ID_BYTES, f"{ctx.parent_id:016x}".encode("ascii")))
    if ctx.debug:
        headers.append((SAMPLED_BYTES, b"1"))
        headers.append((FLAGS_BYTES, b"1"))
    elif ctx.sampled is not None:
        headers.append((SAMPLED_BYTES, b"1" if ctx.sampled else b"0"))
    return headers


def format_single(ctx: TraceContext) -> str:
    """A ``b3`` header value for ``ctx``; the sampling field is left out when the decision is deferred."""
    value = f"{_trace_id_hex(ctx.trace_id)}-{ctx.span_id:016x}"
    if ctx.debug:
        value += "-d"
    elif ctx.sampled is not None:
        value += "-1" if ctx.sampled else "-0"
    if ctx.parent_id is not None:
        value += f"-{ctx.parent_id:016x}"
    return value


def _single_from(raw: bytes | None) -> Extracted:
    if raw is None:
        return _INVALID[DUPLICATE_HEADER]
    return parse_single(raw.decode("latin-1")) if raw else NO_CONTEXT


def _multi_from(found: Mapping[bytes, bytes | None]) -> Extracted:
    values = [found.get(name, b"") for name in MULTI_NAMES]
    if None in values:
        return _INVALID[DUPLICATE_HEADER]
    trace_id, span_id, parent_id, sampled, flags = (_text(value) for value in values)
    return parse_multi(trace_id, span_id, parent_id, sampled, flags)


def _context(trace_hex: str, span_hex: str, sampling: str | None, parent_hex: str | None) -> Extracted:
    # Checked in the order of the single header's fields, so that the first bad one is reported.
    trace_id = _parse_id(_TRACE_ID_HEX, trace_hex)
    if trace_id is None:
        return _INVALID[MALFORMED_TRACE_ID]
    span_id = _parse_id(_SPAN_ID_HEX, span_hex)
    if span_id is None:
        return _INVALID[MALFORMED_SPAN_ID]
    if sampling is not None and sampling not in _SAMPLING_ONLY:
        return _INVALID[MALFORMED_SAMPLED]
    parent_id = None
    if parent_hex is not None:
        parent_id = _parse_id(_SPAN_ID_HEX, parent_hex)
        if parent_id is None:
            return _INVALID[MALFORMED_PARENT_ID]
    sampled = None if sampling is None else sampling != "0"
    debug = sampling == "d"
    context = TraceContext(trace_id, span_id, parent_id, sampled, debug)
    return Extracted(context=context, sampled=sampled, debug=debug)


def _parse_id(pattern: re.Pattern[str], text: str) -> int | None:
    # int(text, 16) alone would also take "0x", "_", "+" and surrounding whitespace; all-zero ids are invalid.
    if pattern.fullmatch(text) is None:
        return None
    return int(text, 16) or None


def _trace_id_hex(trace_id: int) -> str:
    return f"{trace_id:016x}" if trace_id <= MAX_64BIT else f"{trace_id:032x}"


def _text(value: bytes | None) -> str | None:
    # latin-1 maps every byte to a character, so decoding never fails and keeps the length.
    return value.decode("latin-1") if value else None


def _usable(extracted: Extracted) -> bool:
    return extracted.context is not None or extracted.sampled is not None

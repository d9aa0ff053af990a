"""W3C Trace Context: the ``traceparent`` and ``tracestate`` request headers and the ``traceresponse`` response header.

See https://www.w3.org/TR/trace-context/ and https://w3c.github.io/trace-context/#traceresponse-header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.context import Extracted, TraceContext

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACERESPONSE = "traceresponse"
TRACEPARENT_BYTES = TRACEPARENT.encode("ascii")
TRACESTATE_BYTES = TRACESTATE.encode("ascii")
TRACERESPONSE_BYTES = TRACERESPONSE.encode("ascii")

# Version 00 is 55 characters; later versions may append fields, so leave them room.
MAX_VALUE_LENGTH = 128

DUPLICATE_HEADER = "duplicate_header"
OVERSIZED_HEADER = "oversized_header"
MALFORMED_TRACEPARENT = "malformed_traceparent"
UNSUPPORTED_VERSION = "unsupported_version"
MALFORMED_TRACE_ID = "malformed_trace_id"
MALFORMED_SPAN_ID = "malformed_span_id"
MALFORMED_FLAGS = "malformed_flags"
# A bad tracestate does not spoil the traceparent beside it (the spec: discard the tracestate only).
MALFORMED_TRACESTATE = "malformed_tracestate"
INVALID_REASONS = (
    DUPLICATE_HEADER,
    OVERSIZED_HEADER,
    MALFORMED_TRACEPARENT,
    UNSUPPORTED_VERSION,
    MALFORMED_TRACE_ID,
    MALFORMED_SPAN_ID,
    MALFORMED_FLAGS,
    MALFORMED_TRACESTATE,
)
# The spec's limit of list members; each is at most 256 + 1 + 256 characters, and commas and spaces come between.
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE_LENGTH = 32 * 1024

_VERSION_00_LENGTH = 55
_SAMPLED_FLAG = 0x01
# W3C Trace Context Level 2: the trace id's rightmost 7 bytes are random (consistent sampling relies on it).
_RANDOM_FLAG = 0x02
# The spec's HEXDIGLC: upper-case hex is invalid.
_HEX2 = re.compile(r"[0-9a-f]{2}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_INVALID = {reason: Extracted(invalid=reason) for reason in INVALID_REASONS}
# The spec's key = simple-key / multi-tenant-key, and value = 0*255(chr) nblk-chr.
_KEY_CHARS = r"[a-z0-9_\-*/]"
_TRACESTATE_KEY = re.compile(rf"[a-z]{_KEY_CHARS}{{0,255}}|[a-z0-9]{_KEY_CHARS}{{0,240}}@[a-z]{_KEY_CHARS}{{0,13}}")
_TRACESTATE_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_OWS = " \t"


def parse_traceparent(value: str) -> Extracted:
    """Parse ``{version}-{trace-id}-{parent-id}-{flags}``; the parent-id becomes the context's span id.

    Version 00 must be exactly that. A higher version is read as the spec's "Versioning of traceparent"
    asks: the version 00 fields, then either the end of the value or a dash and whatever follows. Version
    ``ff`` is invalid. Only the sampled flag is read.
    """
    if len(value) > MAX_VALUE_LENGTH:
        return _INVALID[OVERSIZED_HEADER]
    # Optional whitespace around a field value is not part of it (RFC 9110 5.5); the spec's test suite sends some.
    value = value.strip(_OWS)
    if len(value) < _VERSION_00_LENGTH or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return _INVALID[MALFORMED_TRACEPARENT]
    version = value[:2]
    if _HEX2.fullmatch(version) is None or version == "ff":
        return _INVALID[UNSUPPORTED_VERSION]
    if len(value) > _VERSION_00_LENGTH and (version == "00" or value[_VERSION_00_LENGTH] != "-"):
        return _INVALID[MALFORMED_TRACEPARENT]
    trace_hex, span_hex, flags_hex = value[3:35], value[36:52], value[53:55]
    if _HEX32.fullmatch(trace_hex) is None or trace_hex == "0" * 32:
        return _INVALID[MALFORMED_TRACE_ID]
    if _HEX16.fullmatch(span_hex) is None or span_hex == "0" * 16:
        return _INVALID[MALFORMED_SPAN_ID]
    if _HEX2.fullmatch(flags_hex) is None:
        return _INVALID[MALFORMED_FLAGS]
    sampled = bool(int(flags_hex, 16) & _SAMPLED_FLAG)
    return Extracted(context=TraceContext(int(trace_hex, 16), int(span_hex, 16), None, sampled), sampled=sampled)


def parse_tracestate(values: Sequence[str]) -> str | None:
    """The list members of every ``tracestate`` header, in order and joined by commas ("" for none), or None
    when the list is invalid and, as the spec asks, to be discarded: a member that is not ``key=value`` by the
    spec's grammar, a key given twice, more than 32 members.
    """
    if sum(len(value) for value in values) > MAX_TRACESTATE_LENGTH:
        return None
    members: list[str] = []
    keys: set[str] = set()
    for value in values:
        for raw_member in value.split(","):
            member = raw_member.strip(_OWS)
            if not member:
                continue  # the spec allows empty list members, and drops them
            key, equals, member_value = member.partition("=")
            if (
                not equals
                or _TRACESTATE_KEY.fullmatch(key) is None
                or _TRACESTATE_VALUE.fullmatch(member_value) is None
            ):
                return None
            if key in keys:
                return None
            keys.add(key)
            members.append(member)
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    return ",".join(members)


def format_traceparent(ctx: TraceContext, random: bool = False) -> str:
    """A version 00 ``traceparent`` for ``ctx``; W3C has no deferred decision, so a deferred one is ``00``.

    ``random`` sets Level 2's Random flag (``03`` sampled, ``02`` not): only for a trace id the gateway made.
    """
    flags = (_SAMPLED_FLAG if ctx.sampled or ctx.debug else 0) | (_RANDOM_FLAG if random else 0)
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags:02x}"


def format_traceresponse(trace_id: int, span_id: int, sampled: bool) -> str:
    return _format(trace_id, span_id, sampled)


def parse_traceresponse(value: str) -> tuple[int, int, bool] | None:
    """(trace id, span id, sampled) from a version 00 ``traceresponse``, as a client reads what the gateway announced
    (the load test, the tests); None when it is malformed or an id is zero. Only the sampled flag is read."""
    version, _, rest = value.strip().partition("-")
    trace_hex, _, rest = rest.partition("-")
    span_hex, _, flags = rest.partition("-")
    if version != "00" or not (_HEX32.fullmatch(trace_hex) and _HEX16.fullmatch(span_hex) and _HEX2.fullmatch(flags)):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(flags, 16) & _SAMPLED_FLAG)


def _format(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"

"""Consistent probability sampling: OpenTelemetry's threshold rule and its ``ot`` tracestate entry (no I/O).

A trace is sampled at probability p when its randomness R (the trace id's rightmost 56 bits, or a trusted
``rv``) is at least the threshold T = (1 - p) x 2^56. Every sampler of the pipeline compares the same R, so a
later one at a lower probability (a higher T) keeps a subset of what an earlier one kept, and a collector can
weight each kept span by 2^56 / (2^56 - T), its adjusted count. See OpenTelemetry's "TraceState: Probability
Sampling" (specification/trace/tracestate-probability-sampling.md) and W3C Trace Context Level 2's Random flag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RANDOMNESS_BITS = 56
# T = 2^56 samples nothing (R is at most 2^56 - 1); it has no ``th`` encoding, as no span is ever recorded with it.
NEVER = 1 << RANDOMNESS_BITS
ALWAYS = 0
MAX_RANDOMNESS = NEVER - 1
TH_DIGITS = RANDOMNESS_BITS // 4

OT_KEY = "ot"
_TH_VALUE = re.compile(r"[0-9a-f]{1,14}")
_RV_VALUE = re.compile(r"[0-9a-f]{14}")
# An ``ot`` value is ``key:value`` sub-keys joined by ``;`` (the spec's grammar, which leaves room for more keys).
_SUB_KEY = re.compile(r"[a-z][a-z0-9]*")
_SUB_VALUE = re.compile(r"[a-zA-Z0-9._\-]*")


def threshold_for(probability: float) -> int:
    """The threshold T for a probability, rounded to the nearest of the 2^56 representable ones.

    Computed as 2^56 - round(p x 2^56) rather than round((1 - p) x 2^56): the two are equal in exact arithmetic,
    but ``1 - 2**-56`` is 1.0 in a float, and p x 2^56 is exact (a power of two scales without rounding). A
    probability under 2^-57 rounds to T = 2^56: nothing is sampled, as at 0.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"sample rate must be within [0.0, 1.0], got {probability!r}")
    return NEVER - round(probability * NEVER)


def probability_of(threshold: int) -> float:
    """The sampling probability a threshold stands for: (2^56 - T) / 2^56."""
    return (NEVER - threshold) / NEVER


def randomness(trace_id: int) -> int:
    """R from the trace id: its rightmost 56 bits, which W3C Level 2's Random flag says are random."""
    return trace_id & MAX_RANDOMNESS


def is_sampled(threshold: int, random_value: int) -> bool:
    return random_value >= threshold


def format_th(threshold: int) -> str:
    """``th``'s value: T as 14 lower-case hex digits with the trailing zeros dropped ("0" for T = 0)."""
    if not ALWAYS <= threshold < NEVER:
        raise ValueError(f"threshold must be within [0, 2**56), got {threshold!r}")
    return f"{threshold:014x}".rstrip("0") or "0"


def parse_th(value: str) -> int | None:
    """T from a ``th`` value (1 to 14 hex digits, zeros added on the right), or None when it is not one."""
    if _TH_VALUE.fullmatch(value) is None:
        return None
    return int(value.ljust(TH_DIGITS, "0"), 16)


def parse_rv(value: str) -> int | None:
    """R from an ``rv`` value (exactly 14 hex digits), or None when it is not one."""
    return int(value, 16) if _RV_VALUE.fullmatch(value) is not None else None


@dataclass(frozen=True, slots=True)
class OtState:
    """The ``ot`` entry of a tracestate: its threshold and randomness, if valid, and its other sub-keys kept in order.

    A malformed ``th`` or ``rv`` is dropped and the rest kept (the spec: an invalid value is as if absent).
    """

    threshold: int | None = None
    random_value: int | None = None
    others: tuple[tuple[str, str], ...] = ()

    def value(self) -> str:
        """The ``ot`` entry's value, ``th`` then ``rv`` then the rest; "" when it has nothing to say."""
        parts: list[str] = []
        if self.threshold is not None:
            parts.append(f"th:{format_th(self.threshold)}")
        if self.random_value is not None:
            parts.append(f"rv:{self.random_value:014x}")
        parts.extend(f"{key}:{value}" for key, value in self.others)
        return ";".join(parts)


NO_OT = OtState()


def parse_ot(tracestate: str | None) -> OtState:
    """The ``ot`` entry of an already validated tracestate (``gateway.propagation.w3c.parse_tracestate``)."""
    value = _ot_value(tracestate)
    if value is None:
        return NO_OT
    threshold: int | None = None
    random_value: int | None = None
    others: list[tuple[str, str]] = []
    for part in value.split(";"):
        key, colon, sub_value = part.partition(":")
        if not colon or _SUB_KEY.fullmatch(key) is None or _SUB_VALUE.fullmatch(sub_value) is None:
            continue
        if key == "th":
            threshold = parse_th(sub_value)
        elif key == "rv":
            random_value = parse_rv(sub_value)
        elif all(key != seen for seen, _ in others):
            others.append((key, sub_value))
    return OtState(threshold, random_value, tuple(others))


def with_ot(tracestate: str | None, ot: OtState) -> str:
    """``tracestate`` with its ``ot`` entry replaced by ``ot`` and moved to the front, as W3C asks of a changed
    entry; every other vendor's entry kept in order. Without anything to say, the ``ot`` entry is removed."""
    others = [member for member in (tracestate or "").split(",") if member and _key(member) != OT_KEY]
    value = ot.value()
    members = ([f"{OT_KEY}={value}"] if value else []) + others
    # W3C allows 32 members: one added to a full list pushes out the last (the right-most) one.
    return ",".join(members[:32])


def _ot_value(tracestate: str | None) -> str | None:
    for member in (tracestate or "").split(","):
        if _key(member) == OT_KEY:
            return member.partition("=")[2]
    return None


def _key(member: str) -> str:
    return member.partition("=")[0].strip()

"""Forged and malformed trace headers, as an untrusted client on the internet could send them (no I/O).

Each forgery tries one way to make the gateway join a trace of the client's choosing or force a sampling decision:
B3 multi and single headers with sampled or debug flags, W3C `traceparent` (which Linkerd's proxy reads before B3)
with `tracestate`, a decision without ids, and malformed values of every kind. Unless the client is trusted, the
gateway must drop them all: its response announces a fresh trace id, sampled by its own rate.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

MAX_128 = (1 << 128) - 1
MAX_64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Forgery:
    """Headers to send, and the trace ids they carry (even malformed around them), which no response and no trace
    backend may ever show."""

    name: str
    headers: dict[str, str]
    trace_ids: tuple[int, ...] = ()


def forge(rng: random.Random) -> Forgery:
    """One forgery, chosen at random."""
    return rng.choice(FORGERIES)(rng)


def _ids(rng: random.Random) -> tuple[int, int]:
    return rng.randint(1, MAX_128), rng.randint(1, MAX_64)


def _b3_sampled(rng: random.Random) -> Forgery:
    trace, span = _ids(rng)
    headers = {"X-B3-TraceId": f"{trace:032x}", "X-B3-SpanId": f"{span:016x}", "X-B3-Sampled": "1"}
    return Forgery("b3 multi, sampled", headers, (trace,))


def _b3_debug(rng: random.Random) -> Forgery:
    trace, span = _ids(rng)
    parent = rng.randint(1, MAX_64)
    headers = {
        "X-B3-TraceId": f"{trace:032x}",
        "X-B3-SpanId": f"{span:016x}",
        "X-B3-ParentSpanId": f"{parent:016x}",
        "X-B3-Flags": "1",
    }
    return Forgery("b3 multi, debug", headers, (trace,))


def _b3_64bit(rng: random.Random) -> Forgery:
    # A 64-bit id whose low bits any rate above 0 samples: a gateway that joined it would also sample it.
    trace, span = rng.randint(1, 1 << 32), rng.randint(1, MAX_64)
    headers = {"X-B3-TraceId": f"{trace:016x}", "X-B3-SpanId": f"{span:016x}", "X-B3-Sampled": "true"}
    return Forgery("b3 multi, 64-bit id, sampled=true", headers, (trace,))


def _b3_single(rng: random.Random) -> Forgery:
    trace, span = _ids(rng)
    flag = rng.choice(("1", "d"))
    return Forgery(f"b3 single, {flag}", {"b3": f"{trace:032x}-{span:016x}-{flag}"}, (trace,))


def _traceparent(rng: random.Random) -> Forgery:
    trace, span = _ids(rng)
    headers = {"traceparent": f"00-{trace:032x}-{span:016x}-01", "tracestate": "forged=1,other=vendor"}
    return Forgery("traceparent, sampled, with tracestate", headers, (trace,))


def _conflicting(rng: random.Random) -> Forgery:
    # Two formats naming two traces: whichever a gateway read first, it must read neither.
    trace, span = _ids(rng)
    other, other_span = _ids(rng)
    headers = {
        "traceparent": f"00-{trace:032x}-{span:016x}-01",
        "X-B3-TraceId": f"{other:032x}",
        "X-B3-SpanId": f"{other_span:016x}",
        "X-B3-Sampled": "1",
    }
    return Forgery("traceparent and b3 naming different traces", headers, (trace, other))


def _decision_only(rng: random.Random) -> Forgery:
    headers = rng.choice(({"X-B3-Sampled": "1"}, {"b3": "1"}, {"b3": "d"}, {"X-B3-Flags": "1"}))
    return Forgery("a sampling decision without ids", headers)


def _malformed(rng: random.Random) -> Forgery:
    trace, span = _ids(rng)
    headers = rng.choice(
        (
            {"X-B3-TraceId": "not-a-trace-id", "X-B3-SpanId": f"{span:016x}", "X-B3-Sampled": "1"},
            {"X-B3-TraceId": f"{trace:032x}", "X-B3-SpanId": "0", "X-B3-Sampled": "1"},
            {"X-B3-TraceId": "0" * 32, "X-B3-SpanId": "0" * 16, "X-B3-Sampled": "1"},
            {"X-B3-TraceId": f"{trace:032x}", "X-B3-Sampled": "1"},
            {"X-B3-TraceId": f"{trace:032x}", "X-B3-SpanId": f"{span:016x}", "X-B3-Sampled": "yes-please"},
            {"X-B3-TraceId": f"{trace:032x}{trace:032x}", "X-B3-SpanId": f"{span:016x}", "X-B3-Sampled": "1"},
            {"b3": f"{trace:032x}-{span:016x}-1-{span:016x}-extra"},
            {"b3": "x" * 400},
            {"traceparent": f"ff-{trace:032x}-{span:016x}-01"},
            {"traceparent": f"00-{'0' * 32}-{span:016x}-01"},
            {"traceparent": f"00-{trace:032X}-{span:016X}-01"},
            {"traceparent": "00-garbage", "tracestate": "=" * 300},
            {"l5d-ctx-trace": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", "l5d-sample": "1.0"},
        )
    )
    carried = any(f"{trace:032x}" in value.lower() for value in headers.values())
    return Forgery("malformed trace headers", headers, (trace,) if carried else ())


FORGERIES: tuple[Callable[[random.Random], Forgery], ...] = (
    _b3_sampled,
    _b3_debug,
    _b3_64bit,
    _b3_single,
    _traceparent,
    _conflicting,
    _decision_only,
    _malformed,
)

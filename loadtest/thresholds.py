"""Do the sampling thresholds the gateway recorded (`ot=th:` on its spans) tell the truth? Per route, no I/O.

A collector weights each sampled span by its adjusted count, 1 / p with p = (2^56 - th) / 2^56 (OpenTelemetry's
consistent probability sampling). That is right only if each request was sampled with the probability its threshold
says. So, per route, over the requests a load run sent:

- one threshold recorded (a fixed rate): the sampled count must agree with it, binomially, as `rates.py` checks the
  configured rate (and it must be the configured rate's threshold, when the route file says one);
- several (an adaptive route): the weighted count, the sum of 1 / p over the sampled traces, must agree with the
  number of requests within `sigmas` of its estimated standard deviation (Horvitz-Thompson);
- a sampled trace with no threshold is one a limiting cap let through: its route is not held to a count (the
  gateway erases th there on purpose), only reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.threshold import probability_of, threshold_for

DEFAULT_SIGMAS = 4.0
# Fewer weighted samples than this and the Horvitz-Thompson variance estimate is too rough to judge by.
MIN_WEIGHTED_SAMPLES = 30


@dataclass(frozen=True, slots=True)
class ThresholdGroup:
    name: str
    requests: int
    sampled: int
    thresholds: tuple[int, ...]  # every distinct threshold recorded, in order
    unweighted: int  # sampled traces that recorded no threshold
    weighted_count: float  # sum of 1 / p over the sampled traces with a threshold
    variance: float  # its estimated variance, sum of (1 - p) / p^2
    configured: float | None = None  # the route file's rate, when it has a fixed one and no cap
    sigmas: float = DEFAULT_SIGMAS

    @property
    def verdict(self) -> str | None:
        """None when the thresholds agree with what was sampled; else why not (or why it cannot be said)."""
        if not self.thresholds:
            return None
        if self.configured is not None and self.thresholds != (threshold_for(self.configured),):
            rate = self.configured
            return f"recorded thresholds {self._shown()}, but the route's rate {rate:g} is th:{_th(rate)}"
        if self.unweighted:
            return None  # a limiting cap: the share is the traffic's, not a threshold's
        if len(self.thresholds) == 1:
            p = probability_of(self.thresholds[0])
            allowance = self.sigmas * math.sqrt(self.requests * p * (1.0 - p))
            if abs(self.sampled - self.requests * p) > allowance + 1e-9:
                return f"{self.sampled} of {self.requests} sampled, but th says {p:.2%} (+-{allowance:.0f})"
            return None
        if self.sampled < MIN_WEIGHTED_SAMPLES:
            return None
        allowance = self.sigmas * math.sqrt(self.variance)
        if abs(self.weighted_count - self.requests) > allowance + 1e-9:
            weighted = f"{self.weighted_count:.0f}"
            return f"the thresholds weigh {self.sampled} sampled traces as {weighted} requests, not {self.requests}"
        return None

    @property
    def ok(self) -> bool:
        return self.verdict is None

    def describe(self) -> str:
        head = f"{self.name}: {self.sampled} of {self.requests} sampled, th {self._shown()}"
        if self.unweighted:
            head += f", {self.unweighted} without th (a limiting cap)"
        return f"{head}: {'consistent' if self.ok else 'INCONSISTENT, ' + str(self.verdict)}"

    def as_json(self) -> dict[str, object]:
        return {
            "group": self.name,
            "requests": self.requests,
            "sampled": self.sampled,
            "thresholds": [f"{threshold:014x}" for threshold in self.thresholds],
            "without_threshold": self.unweighted,
            "weighted_count": self.weighted_count,
            "ok": self.ok,
            "summary": self.describe(),
        }

    def _shown(self) -> str:
        if not self.thresholds:
            return "none"
        shown = ", ".join(f"{probability_of(t):.2%}" for t in self.thresholds[:3])
        return shown + (f" and {len(self.thresholds) - 3} more" if len(self.thresholds) > 3 else "")


def threshold_groups(
    decisions: Iterable[tuple[str, bool, int | None]],
    configured: dict[str, float | None] | None = None,
    sigmas: float = DEFAULT_SIGMAS,
) -> list[ThresholdGroup]:
    """Groups (route, sampled, recorded threshold) by route; ``configured`` maps a route to its fixed, uncapped rate."""
    tallies: dict[str, list[float]] = {}
    seen: dict[str, dict[int, None]] = {}
    for route, sampled, threshold in decisions:
        tally = tallies.setdefault(route, [0, 0, 0, 0.0, 0.0])
        tally[0] += 1
        if not sampled:
            continue
        tally[1] += 1
        if threshold is None:
            tally[2] += 1
            continue
        seen.setdefault(route, {})[threshold] = None
        p = probability_of(threshold)
        tally[3] += 1.0 / p
        tally[4] += (1.0 - p) / (p * p)
    return [
        ThresholdGroup(
            route,
            int(requests),
            int(sampled),
            tuple(seen.get(route, {})),
            int(unweighted),
            weighted,
            variance,
            (configured or {}).get(route),
            sigmas,
        )
        for route, (requests, sampled, unweighted, weighted, variance) in sorted(tallies.items())
    ]


def _th(rate: float) -> str:
    threshold = threshold_for(rate)
    return f"{threshold:014x}".rstrip("0") or "0"

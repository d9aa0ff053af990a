"""The per-request cost of the request metrics: both latency histograms, from one observation (issues 21 and 22).

Usage: .venv/bin/python bench/metrics_cost.py [--number N] [--repeat R]

Times, in one process and without sockets, what a request adds to the metrics with each implementation of
gateway/request_metrics.py: `TalliedRequestLatency` (one worker: lists, written at collection) and
`PrometheusRequestLatency` (several workers: prometheus-client's Histogram objects), for an unsampled request and a
sampled one (whose exemplar the tally takes at most once a second per bucket). The best of R repeats is reported,
as `timeit` advises: the rest is other processes' noise. Beside them, `counter` is one prometheus-client
`Counter.inc`, the unit the gateway's other per-request counter costs.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable, Sequence
from functools import partial

from prometheus_client import CollectorRegistry

from gateway.metrics import Metrics

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


def cases() -> dict[str, Callable[[], None]]:
    tallied = Metrics(CollectorRegistry(), multiprocess=False)
    objects = Metrics(CollectorRegistry(), multiprocess=True)
    counter = tallied.requests.labels("sampled", "ratio", "web")
    cases: dict[str, Callable[[], None]] = {"counter": counter.inc}
    for name, metrics in (("tallied", tallied), ("prometheus", objects)):
        observe = metrics.request_latency.observe
        cases[f"{name} not_sampled"] = partial(observe, "web", "GET", 200, False, 0.0042, TRACE_ID)
        cases[f"{name} sampled"] = partial(observe, "web", "GET", 200, True, 0.0042, TRACE_ID)
    return cases


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    timings = {
        name: min(timeit.repeat(case, number=args.number, repeat=args.repeat)) / args.number * 1e9
        for name, case in cases().items()
    }
    for name, nanoseconds in timings.items():
        print(f"{name:24} {nanoseconds:8.0f} ns per request")
    for decision in ("not_sampled", "sampled"):
        ratio = timings[f"prometheus {decision}"] / timings[f"tallied {decision}"]
        print(f"{decision}: the tally costs 1/{ratio:.1f} of prometheus-client's histograms")


if __name__ == "__main__":
    main()

"""The per-request cost of the latency histogram by route, method, status class and decision (issue 21).

Usage: .venv/bin/python bench/metrics_cost.py [--number N] [--repeat R]

Times, in one process and without sockets, what a request adds to the metrics: the existing
`gateway_request_duration_seconds{decision}` observation (before), and that plus `RequestMetrics.observe` for an
unsampled request and for a sampled one (whose exemplar costs a trace id format, a dict and a clock read). The
best of R repeats is reported, as `timeit` advises: the rest is other processes' noise.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from gateway.metrics import Metrics
from gateway.request_metrics import RequestMetrics

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


def cases() -> dict[str, Callable[[], None]]:
    metrics = Metrics(CollectorRegistry())
    durations = {
        True: metrics.request_duration.labels("sampled"),
        False: metrics.request_duration.labels("not_sampled"),
    }
    observer = RequestMetrics(metrics.http_request_duration, exemplars=True)

    def before() -> None:
        durations[False].observe(0.0042)

    def not_sampled() -> None:
        durations[False].observe(0.0042)
        observer.observe("web", "GET", 200, False, 0.0042, TRACE_ID)

    def sampled() -> None:
        durations[True].observe(0.0042)
        observer.observe("web", "GET", 200, True, 0.0042, TRACE_ID)

    return {"before": before, "not_sampled": not_sampled, "sampled": sampled}


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
        added = nanoseconds - timings["before"]
        print(f"{name:12} {nanoseconds:8.0f} ns per request ({added:+.0f} ns over before)")


if __name__ == "__main__":
    main()

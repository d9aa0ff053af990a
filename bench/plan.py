"""What the benchmark measures: the targets, the two bodies and the thresholds of issue 22."""

from __future__ import annotations

from dataclasses import dataclass

UPSTREAM = "upstream"
NGINX = "nginx"
CEILING = "ceiling"
GATEWAY_RATE_0 = "gateway-0.0"
GATEWAY_RATE_1 = "gateway-1.0"
NGINX_2_WORKERS = "nginx-2w"
GATEWAY_2_WORKERS = "gateway-1.0-2w"

# The gateway reports a SERVER and a CLIENT span per sampled request (CONTRACT.md, "On the wire").
SPANS_PER_SAMPLED_REQUEST = 2

# Issue 22, "Targets": ratios within one run, the gateway's default settings, 1 worker.
MIN_FRACTION_OF_CEILING = 0.8
MIN_TRACED_TO_UNTRACED = 0.9
MAX_P99_TIMES_CEILING = 2.0
MAX_RSS_BYTES = 100 * 2**20
# "Returns to its start level": CPython keeps freed arenas for reuse, so a few MB above the start are
# not a leak; a leak of one object per request would be far above this after a run.
RSS_RETURN_SLACK_BYTES = 5 * 2**20
RSS_RETURN_SLACK_FRACTION = 0.10
# Beyond this share of the proxy's CPU busy with other processes, its figures measure the machine's
# other work as much as the proxy: the run is not valid.
MAX_OTHER_BUSY_PERCENT = 10.0
# Spans the sink must receive per sampled request for a traced run to count as tracing every request:
# a little below 2 because wrk's own count leaves out the requests in flight when it stops.
MIN_SPANS_FRACTION = 0.975


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    label: str
    workers: int
    sample_rate: float | None = None  # None: not the gateway, nothing is traced
    # On every CPU the benchmark uses, the load's included: the row of several workers on several cores, where
    # the load shares a core with the proxy and CPU time per request is the fair figure.
    every_cpu: bool = False

    @property
    def is_gateway(self) -> bool:
        return self.sample_rate is not None

    @property
    def spans_per_request(self) -> float | None:
        return None if self.sample_rate is None else SPANS_PER_SAMPLED_REQUEST * self.sample_rate


@dataclass(frozen=True, slots=True)
class Body:
    name: str
    path: str
    content: bytes


TARGETS = (
    Target(UPSTREAM, "upstream (nginx, direct)", 1),
    Target(NGINX, "nginx proxy_pass keepalive", 1),
    Target(CEILING, "Python ceiling (uvicorn + aiohttp)", 1),
    Target(GATEWAY_RATE_0, "gateway, rate 0.0", 1, 0.0),
    Target(GATEWAY_RATE_1, "gateway, rate 1.0", 1, 1.0),
    Target(NGINX_2_WORKERS, "nginx, 2 workers, every core", 2, every_cpu=True),
    Target(GATEWAY_2_WORKERS, "gateway, rate 1.0, 2 workers, every core", 2, 1.0, every_cpu=True),
)

BODIES = (
    Body("small", "/small", b"Hello, World!"),
    Body("16k", "/16k", b"0123456789abcdef" * 1024),
)

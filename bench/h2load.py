"""h2load (Debian's nghttp2-client), pinned to the load CPUs, and the figures of its report.

h2load drives HTTP/2: with prior knowledge for an http:// URL (h2c), through ALPN for https://. It prints no
percentiles, only the min, max, mean and standard deviation of the time per request.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services import run_to_completion

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1_000.0}
_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", re.MULTILINE)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
_STATUSES = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE)
_REQUEST_TIME = re.compile(
    r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", re.MULTILINE
)
_GRACE_SECONDS = 30


class H2loadError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class H2loadResult:
    requests: int  # succeeded (a 2xx or 3xx status)
    failed: int  # failed, errored or timed out, or answered 4xx/5xx
    seconds: float
    requests_per_second: float
    mean_ms: float
    max_ms: float


def parse(report: str) -> H2loadResult:
    finished, requests = _FINISHED.search(report), _REQUESTS.search(report)
    statuses, timing = _STATUSES.search(report), _REQUEST_TIME.search(report)
    if finished is None or requests is None or statuses is None or timing is None:
        raise H2loadError(f"unexpected h2load output:\n{report}")
    succeeded = int(requests[4])
    bad = int(statuses[3]) + int(statuses[4])
    return H2loadResult(
        requests=succeeded - bad,
        failed=int(requests[5]) + int(requests[6]) + int(requests[7]) + bad,
        seconds=_milliseconds(finished[1], finished[2]) / 1000,
        requests_per_second=float(finished[3]),
        mean_ms=_milliseconds(timing[5], timing[6]),
        max_ms=_milliseconds(timing[3], timing[4]),
    )


def command(
    url: str,
    *,
    cpus: Sequence[int],
    seconds: int | None,
    connections: int,
    streams: int,
    body: Path | None = None,
    headers: Sequence[str] = (),
    requests: int | None = None,
) -> list[str]:
    """`seconds` of load (`-D`), or a fixed number of `requests` (`-n`), for probes."""
    length = ["-D", str(seconds)] if seconds is not None else ["-n", str(requests or 1)]
    return [
        *("taskset", "--cpu-list", ",".join(map(str, cpus))),
        *("h2load", "-t1", f"-c{connections}", f"-m{streams}", *length),
        *(["-d", str(body)] if body is not None else []),
        *(item for header in headers for item in ("-H", header)),
        url,
    ]


def run(args: Sequence[str], timeout: float) -> tuple[H2loadResult, str]:
    """Run h2load to completion (bounded in time) and return its figures and its raw report."""
    try:
        status, report = run_to_completion(args, timeout + _GRACE_SECONDS)
    except subprocess.TimeoutExpired as exc:
        raise H2loadError(f"h2load did not finish within {timeout + _GRACE_SECONDS}s: {' '.join(args)}") from exc
    if status != 0:
        raise H2loadError(f"h2load exited with {status}:\n{report}")
    return parse(report), report


def _milliseconds(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]

"""wrk, pinned to the load CPUs, and the figures of its --latency report."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from services import run_to_completion

# wrk's format_time() units (src/units.c), in milliseconds.
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1_000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"
_PERCENTILE = re.compile(rf"^\s+(50|75|90|99)%\s+{_TIME}\s*$", re.MULTILINE)
_TOTAL = re.compile(rf"^\s+(\d+) requests in {_TIME},", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
# Printed only when not zero; wrk counts a status >= 400 as "non-2xx or 3xx".
_BAD_STATUS = re.compile(r"^\s+Non-2xx or 3xx responses: (\d+)", re.MULTILINE)
_SOCKET_ERROR_KINDS = ("connect", "read", "write", "timeout")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
# Beyond its duration wrk needs a moment to connect and to print; past this it is stuck.
_GRACE_SECONDS = 30


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    requests_per_second: float
    latency_ms: dict[str, float]  # percentile ("50", "75", "90", "99") -> milliseconds
    bad_status: int
    socket_errors: dict[str, int]  # connect, read, write, timeout

    @property
    def clean(self) -> bool:
        return self.bad_status == 0 and not any(self.socket_errors.values())


def parse(report: str) -> WrkResult:
    total, rate = _TOTAL.search(report), _RATE.search(report)
    percentiles = {match[1]: _milliseconds(match[2], match[3]) for match in _PERCENTILE.finditer(report)}
    if total is None or rate is None or len(percentiles) != 4:
        raise WrkError(f"unexpected wrk output (was --latency given?):\n{report}")
    bad_status = _BAD_STATUS.search(report)
    errors = _SOCKET_ERRORS.search(report)
    return WrkResult(
        requests=int(total[1]),
        seconds=_milliseconds(total[2], total[3]) / 1000,
        requests_per_second=float(rate[1]),
        latency_ms=percentiles,
        bad_status=int(bad_status[1]) if bad_status else 0,
        socket_errors=dict(zip(_SOCKET_ERROR_KINDS, map(int, errors.groups() if errors else "0000"), strict=True)),
    )


def command(url: str, *, cpus: Sequence[int], seconds: int, connections: int, threads: int) -> list[str]:
    # --timeout: a response slower than this counts as a timeout error instead of a latency sample.
    return [
        *("taskset", "--cpu-list", ",".join(map(str, cpus))),
        *("wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency", url),
    ]


def run(url: str, *, cpus: Sequence[int], seconds: int, connections: int, threads: int) -> tuple[WrkResult, str]:
    """Run wrk to completion (bounded in time) and return its figures and its raw report."""
    args = command(url, cpus=cpus, seconds=seconds, connections=connections, threads=threads)
    try:
        status, report = run_to_completion(args, seconds + _GRACE_SECONDS)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {seconds + _GRACE_SECONDS}s: {' '.join(args)}") from exc
    if status != 0:
        raise WrkError(f"wrk exited with {status}:\n{report}")
    return parse(report), report


def _milliseconds(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]

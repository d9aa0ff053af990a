"""From raw runs to figures: medians and spreads over rounds, ratios within rounds, issue 22's checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import median

from plan import (
    CEILING,
    GATEWAY_2_WORKERS,
    GATEWAY_RATE_0,
    GATEWAY_RATE_1,
    MAX_OTHER_BUSY_PERCENT,
    MAX_P99_TIMES_CEILING,
    MAX_RSS_BYTES,
    MIN_FRACTION_OF_CEILING,
    MIN_SPANS_FRACTION,
    MIN_TRACED_TO_UNTRACED,
    NGINX_2_WORKERS,
    RSS_RETURN_SLACK_BYTES,
    RSS_RETURN_SLACK_FRACTION,
    UPSTREAM,
    Target,
)
from wrk import WrkResult

WARMUP = -1  # the round number of a warm-up run, left out of every figure
# Round numbers from here on are the paired runs: gateway-0.0 and gateway-1.0 alternating in short runs after the
# rounds, pair i numbered PAIRED + i. They feed only `paired_ratio`, not the rounds' figures.
PAIRED = 1000
MB = 2**20
PASS, FAIL, NOT_AVAILABLE = "PASS", "FAIL", "N/A"
TARGET, VALIDITY = "target", "validity"


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    pid: int
    name: str
    start: int  # resident bytes just before wrk started
    peak: int  # the most seen while wrk ran, sampled
    end: int  # after the run, once the spans it caused were delivered


@dataclass(frozen=True, slots=True)
class Run:
    target: str
    body: str
    round: int
    wrk: WrkResult
    wrk_report: str
    cpu_seconds: float  # of the target's process tree, from wrk's start until its spans were delivered
    memory: tuple[ProcessMemory, ...]
    busy_percent: dict[int, float]  # per CPU while wrk ran
    load_busy_percent: float  # mean over the load generator's CPUs
    proxy_busy_percent: float  # mean over the target's CPUs
    # Of the target's CPUs, the part busy with other processes (or stolen by a hypervisor): noise.
    other_busy_percent: float
    spans: int | None  # received by the sink for this run; None when the target does not trace
    alive: bool  # the target still ran afterwards

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.cpu_seconds / max(self.wrk.requests, 1)

    @property
    def spans_per_request(self) -> float | None:
        return None if self.spans is None else self.spans / max(self.wrk.requests, 1)


@dataclass(frozen=True, slots=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        ordered = sorted(values)
        return cls(median(ordered), ordered[0], ordered[-1])


@dataclass(frozen=True, slots=True)
class Summary:
    target: str
    body: str
    rounds: int
    requests_per_second: Spread
    p50_ms: Spread
    p99_ms: Spread
    cpu_us_per_request: Spread
    load_busy_percent: Spread
    proxy_busy_percent: Spread
    other_busy_percent: Spread
    memory: tuple[ProcessMemory, ...]  # per process over the rounds: first start, highest peak, last end


@dataclass(frozen=True, slots=True)
class Check:
    kind: str  # TARGET (issue 22's goals) or VALIDITY (the run measured what it claims to)
    name: str
    status: str  # PASS, FAIL or NOT_AVAILABLE
    detail: str


def measured(runs: Iterable[Run]) -> list[Run]:
    """The runs of the rounds: no warm-up, no paired run."""
    return [run for run in runs if 0 <= run.round < PAIRED]


def paired(runs: Iterable[Run]) -> list[Run]:
    return [run for run in runs if run.round >= PAIRED]


def summarise(runs: Sequence[Run]) -> dict[tuple[str, str], Summary]:
    """One summary per (target, body) over its measured rounds."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in measured(runs):
        groups.setdefault((run.target, run.body), []).append(run)
    return {key: _summary(group) for key, group in groups.items()}


def memory_over(runs: Iterable[Run]) -> tuple[ProcessMemory, ...]:
    """Per process, over `runs` in the order they ran: the first start, the highest peak, the last end."""
    merged: dict[int, ProcessMemory] = {}
    for run in runs:
        for now in run.memory:
            first = merged.get(now.pid, now)
            merged[now.pid] = ProcessMemory(now.pid, now.name, first.start, max(first.peak, now.peak), now.end)
    return tuple(merged.values())


def ratio(runs: Sequence[Run], target: str, reference: str, body: str) -> Spread | None:
    """`target`'s requests/s over `reference`'s, round by round, so that both saw the same noise."""
    return _per_round(runs, target, reference, body, _requests_per_second)


def paired_ratio(runs: Sequence[Run], body: str) -> Spread | None:
    """gateway-1.0's requests/s over gateway-0.0's, pair by pair of the short alternating runs.

    A pair's two runs are seconds apart, where two targets of a round can be a minute apart: on a machine whose
    speed moves by a third from one minute to the next, the closer in time, the more alike the noise.
    """
    return _per_round(runs, GATEWAY_RATE_1, GATEWAY_RATE_0, body, _requests_per_second, select=paired)


def cpu_ratio(runs: Sequence[Run], target: str, reference: str, body: str) -> Spread | None:
    """`reference`'s CPU time per request over `target`'s, round by round.

    Where requests/s falls when other work takes the proxy's CPU, CPU time per request hardly moves:
    on a busy machine this is the ratio to trust.
    """
    return _per_round(runs, target, reference, body, lambda run: 1 / max(run.cpu_us_per_request, 1e-9))


def target_checks(runs: Sequence[Run], bodies: Sequence[str], gateways: Sequence[str]) -> list[Check]:
    summaries = summarise(runs)
    checks = []
    for body in bodies:
        checks.append(_ratio_check(runs, GATEWAY_RATE_1, CEILING, body, MIN_FRACTION_OF_CEILING))
        checks.append(_ratio_check(runs, GATEWAY_RATE_1, GATEWAY_RATE_0, body, MIN_TRACED_TO_UNTRACED))
        checks.append(_p99_check(summaries.get((GATEWAY_RATE_1, body)), summaries.get((CEILING, body)), body))
    for gateway in gateways:
        memory = memory_over(run for run in measured(runs) if run.target == gateway)
        checks.append(_rss_limit_check(gateway, memory))
        checks.append(_rss_return_check(gateway, memory))
    return checks


def validity_checks(runs: Sequence[Run], targets: Sequence[Target]) -> list[Check]:
    checks = []
    for target in targets:
        mine = [run for run in runs if run.target == target.name]
        if not mine:
            continue
        checks.append(_answers_check(target.name, mine))
        recorded = measured(mine) + paired(mine)  # every run but the warm-up
        if target.name != UPSTREAM and not target.every_cpu:  # these share their CPUs with wrk by design
            checks.append(_quiet_check(target.name, recorded))
        if target.spans_per_request is not None:
            checks.append(_spans_check(target.name, recorded, target.spans_per_request))
    return checks


def sink_check(stats: Mapping[str, int]) -> Check:
    name = "span sink accepted every payload (a JSON list of spans, parsed in full in 1 POST of 16)"
    posts, checked, rejected = stats.get("posts", 0), stats.get("checked", 0), stats.get("rejected", 0)
    passed = rejected == 0 and (checked > 0 or posts == 0)
    detail = f"{stats.get('spans', 0)} spans in {posts} POSTs, {checked} parsed in full, {rejected} rejected"
    return Check(VALIDITY, name, PASS if passed else FAIL, detail)


def _summary(runs: Sequence[Run]) -> Summary:
    return Summary(
        target=runs[0].target,
        body=runs[0].body,
        rounds=len(runs),
        requests_per_second=Spread.of(run.wrk.requests_per_second for run in runs),
        p50_ms=Spread.of(run.wrk.latency_ms["50"] for run in runs),
        p99_ms=Spread.of(run.wrk.latency_ms["99"] for run in runs),
        cpu_us_per_request=Spread.of(run.cpu_us_per_request for run in runs),
        load_busy_percent=Spread.of(run.load_busy_percent for run in runs),
        proxy_busy_percent=Spread.of(run.proxy_busy_percent for run in runs),
        other_busy_percent=Spread.of(run.other_busy_percent for run in runs),
        memory=memory_over(runs),
    )


def _requests_per_second(run: Run) -> float:
    return run.wrk.requests_per_second


def _per_round(
    runs: Sequence[Run],
    target: str,
    reference: str,
    body: str,
    figure: Callable[[Run], float],
    select: Callable[[Iterable[Run]], list[Run]] = measured,
) -> Spread | None:
    figures = {(run.target, run.round): figure(run) for run in select(runs) if run.body == body}
    values = [
        value / figures[(reference, round_)]
        for (name, round_), value in figures.items()
        if name == target and figures.get((reference, round_), 0) > 0
    ]
    return Spread.of(values) if values else None


def _ratio_check(runs: Sequence[Run], target: str, reference: str, body: str, minimum: float) -> Check:
    name = f"{target} req/s >= {minimum:g}x {reference} [{body}]"
    found = ratio(runs, target, reference, body)
    if found is None:
        return Check(TARGET, name, NOT_AVAILABLE, f"no rounds with both {target} and {reference}")
    # Three digits, so that 0.849 against a minimum of 0.85 does not read "0.85x FAIL".
    detail = f"{format_ratio(found, 3)} (median of rounds)"
    if (by_cpu := cpu_ratio(runs, target, reference, body)) is not None:
        detail += f"; by CPU per request {format_ratio(by_cpu, 3)}"
    if (target, reference) == (GATEWAY_RATE_1, GATEWAY_RATE_0) and (pairs := paired_ratio(runs, body)) is not None:
        # Shown beside the rounds' figure, which alone decides: a second estimate, not a second chance.
        detail += f"; in alternating pairs of short runs {format_ratio(pairs, 3)}"
    return Check(TARGET, name, PASS if found.median >= minimum else FAIL, detail)


def _p99_check(gateway: Summary | None, ceiling: Summary | None, body: str) -> Check:
    name = f"{GATEWAY_RATE_1} p99 <= {MAX_P99_TIMES_CEILING:g}x {CEILING} p99 [{body}]"
    if gateway is None or ceiling is None:
        return Check(TARGET, name, NOT_AVAILABLE, "not measured")
    limit = ceiling.p99_ms.median * MAX_P99_TIMES_CEILING
    passed = gateway.p99_ms.median <= limit
    detail = f"{gateway.p99_ms.median:.2f} ms, limit {limit:.2f} ms ({CEILING} {ceiling.p99_ms.median:.2f} ms)"
    return Check(TARGET, name, PASS if passed else FAIL, detail)


def every_core_text(runs: Sequence[Run], bodies: Sequence[str]) -> str:
    """The two-worker rows on every core, beside nginx's: CPU per request is their fair figure (wrk shares a core)."""
    lines = []
    summaries = summarise(runs)
    for body in bodies:
        gateway, nginx = summaries.get((GATEWAY_2_WORKERS, body)), summaries.get((NGINX_2_WORKERS, body))
        if gateway is None or nginx is None:
            lines.append(f"[{body}] not measured (needs {GATEWAY_2_WORKERS} and {NGINX_2_WORKERS})")
            continue
        by_rate = ratio(runs, GATEWAY_2_WORKERS, NGINX_2_WORKERS, body)
        gateway_cpu, nginx_cpu = gateway.cpu_us_per_request.median, nginx.cpu_us_per_request.median
        rate_text = format_ratio(by_rate) if by_rate else "-"
        lines.append(
            f"[{body}] CPU per request: gateway {gateway_cpu:.0f} us, nginx {nginx_cpu:.0f} us"
            f" ({gateway_cpu / max(nginx_cpu, 1e-9):.1f}x); req/s {rate_text} of nginx's (wrk shares a core with them)"
        )
    return "\n".join(lines)


def _rss_limit_check(gateway: str, memory: Sequence[ProcessMemory]) -> Check:
    name = f"{gateway} RSS < {MAX_RSS_BYTES // MB} MB in every process"
    if not memory:
        return Check(TARGET, name, NOT_AVAILABLE, "not measured")
    worst = max(memory, key=lambda process: process.peak)
    detail = f"highest peak {worst.peak / MB:.1f} MB (pid {worst.pid}, {len(memory)} processes)"
    return Check(TARGET, name, PASS if worst.peak < MAX_RSS_BYTES else FAIL, detail)


def _rss_return_check(gateway: str, memory: Sequence[ProcessMemory]) -> Check:
    name = f"{gateway} RSS back to its start level after the rounds"
    if not memory:
        return Check(TARGET, name, NOT_AVAILABLE, "not measured")
    grown = [p for p in memory if p.end > p.start + max(RSS_RETURN_SLACK_BYTES, RSS_RETURN_SLACK_FRACTION * p.start)]
    detail = ", ".join(f"pid {p.pid} {p.start / MB:.1f} -> {p.end / MB:.1f} MB" for p in memory)
    return Check(TARGET, name, FAIL if grown else PASS, detail)


def _answers_check(target: str, runs: Sequence[Run]) -> Check:
    name = f"{target} answered every request with 2xx/3xx and stayed up"
    bad = sum(run.wrk.bad_status for run in runs)
    errors = sum(sum(run.wrk.socket_errors.values()) for run in runs)
    died = sum(not run.alive for run in runs)
    passed = bad == 0 and errors == 0 and died == 0
    detail = f"{bad} bad statuses, {errors} socket errors, died in {died} of {len(runs)} runs"
    return Check(VALIDITY, name, PASS if passed else FAIL, detail)


def _quiet_check(target: str, runs: Sequence[Run]) -> Check:
    name = f"{target}'s CPU was its own (others used <= {MAX_OTHER_BUSY_PERCENT:g}% of it, median of rounds)"
    if not runs:
        return Check(VALIDITY, name, NOT_AVAILABLE, "no measured runs")
    bodies = sorted({run.body for run in runs})
    others = {body: Spread.of(run.other_busy_percent for run in runs if run.body == body) for body in bodies}
    passed = all(other.median <= MAX_OTHER_BUSY_PERCENT for other in others.values())
    detail = ", ".join(f"{body} {other.median:.0f}% (max {other.high:.0f}%)" for body, other in others.items())
    return Check(VALIDITY, name, PASS if passed else FAIL, detail + ("" if passed else ": rerun on a quiet machine"))


def _spans_check(target: str, runs: Sequence[Run], expected: float) -> Check:
    per_request = [run.spans_per_request or 0.0 for run in runs]
    if expected == 0:
        name = f"{target} reported no spans"
        passed = not any(per_request)
    else:
        name = f"{target} span sink received ~{expected:g} spans per request"
        passed = min(per_request, default=0.0) >= expected * MIN_SPANS_FRACTION
    if not runs:
        return Check(VALIDITY, name, NOT_AVAILABLE, "no measured runs")
    detail = "per request: " + ", ".join(f"{value:.3f}" for value in per_request)
    return Check(VALIDITY, name, PASS if passed else FAIL, detail)


def format_ratio(spread: Spread, digits: int = 2) -> str:
    if spread.low == spread.high:
        return f"{spread.median:.{digits}f}x"
    return f"{spread.median:.{digits}f}x ({spread.low:.{digits}f}-{spread.high:.{digits}f})"


def overall(checks: Iterable[Check]) -> bool:
    return all(check.status == PASS for check in checks)


def by_body(summaries: Mapping[tuple[str, str], Summary], body: str) -> dict[str, Summary]:
    return {target: summary for (target, name), summary in summaries.items() if name == body}

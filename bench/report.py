"""What the benchmark shows: one table per body, the checks, and a JSON document with every figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from figures import MB, Check, Run, Spread, Summary, cpu_ratio, overall, paired_ratio, ratio, summarise
from plan import CEILING, NGINX, NGINX_2_WORKERS, Body, Target

SCHEMA_VERSION = 3  # 2: paired runs (round >= 1000) and paired_tracing_ratio; 3: the ceiling replaces naive
COLUMNS = (
    "target",
    "req/s (min-max)",
    "p50 ms",
    "p99 ms (min-max)",
    "CPU us/req",
    "busy % load/proxy/other",
    "RSS MB start/peak/end",
    "x ceiling",
    "x nginx",
    "x ceiling by CPU/req",
)


def table(runs: Sequence[Run], targets: Sequence[Target], body: Body, unavailable: Mapping[str, str]) -> str:
    summaries = summarise(runs)
    rows: list[tuple[str, ...]] = [COLUMNS]
    for target in targets:
        summary = summaries.get((target.name, body.name))
        if summary is not None:
            rows.append(_row(runs, target, summary))
        elif target.name in unavailable:
            rows.append((target.label, "not available", *[""] * (len(COLUMNS) - 2)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(_align(cell, width, i) for i, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def checks_text(checks: Sequence[Check]) -> str:
    return "\n".join(f"{check.status:<4}  {check.name}: {check.detail}" for check in checks)


def document(
    *,
    meta: Mapping[str, Any],
    targets: Sequence[Target],
    bodies: Sequence[Body],
    unavailable: Mapping[str, str],
    runs: Sequence[Run],
    checks: Sequence[Check],
    complete: bool,
) -> dict[str, Any]:
    """Every raw and summary figure, for bench/results/*.json."""
    summaries = summarise(runs)
    return {
        "schema": SCHEMA_VERSION,
        **meta,
        "complete": complete,
        "passed": complete and overall(checks),
        "targets": [
            {**asdict(t), "available": t.name not in unavailable, "reason": unavailable.get(t.name)} for t in targets
        ],
        "bodies": [{"name": body.name, "path": body.path, "bytes": len(body.content)} for body in bodies],
        "runs": [
            {**asdict(run), "cpu_us_per_request": run.cpu_us_per_request, "spans_per_request": run.spans_per_request}
            for run in runs
        ],
        "summary": {
            body.name: {target: asdict(summary) for (target, name), summary in summaries.items() if name == body.name}
            for body in bodies
        },
        "ratios": {
            body.name: {
                t.name: {
                    "requests_per_second": {
                        ref: _maybe(ratio(runs, t.name, ref, body.name)) for ref in (CEILING, _nginx_of(t))
                    },
                    "cpu_per_request": {
                        ref: _maybe(cpu_ratio(runs, t.name, ref, body.name)) for ref in (CEILING, _nginx_of(t))
                    },
                }
                for t in targets
            }
            for body in bodies
        },
        # gateway-1.0's requests/s over gateway-0.0's in the alternating short runs after the rounds.
        "paired_tracing_ratio": {body.name: _maybe(paired_ratio(runs, body.name)) for body in bodies},
        "checks": [asdict(check) for check in checks],
    }


def _row(runs: Sequence[Run], target: Target, summary: Summary) -> tuple[str, ...]:
    largest = max(summary.memory, key=lambda process: process.peak)
    other = summary.other_busy_percent
    ratios = [ratio(runs, target.name, reference, summary.body) for reference in (CEILING, _nginx_of(target))]
    ratios.append(cpu_ratio(runs, target.name, CEILING, summary.body))
    return (
        target.label,
        _spread(summary.requests_per_second, "{:,.0f}"),
        f"{summary.p50_ms.median:.2f}",
        _spread(summary.p99_ms, "{:.2f}"),
        f"{summary.cpu_us_per_request.median:.0f}",
        "/".join(f"{busy.median:.0f}" for busy in (summary.load_busy_percent, summary.proxy_busy_percent, other)),
        f"{largest.start / MB:.1f}/{largest.peak / MB:.1f}/{largest.end / MB:.1f}",
        *(f"{found.median:.2f}x" if found else "-" for found in ratios),
    )


def _nginx_of(target: Target) -> str:
    """The nginx a target is read against: the one on as many cores."""
    return NGINX_2_WORKERS if target.every_cpu else NGINX


def _spread(spread: Spread, form: str) -> str:
    if spread.low == spread.high:
        return form.format(spread.median)
    return f"{form.format(spread.median)} ({form.format(spread.low)}-{form.format(spread.high)})"


def _align(cell: str, width: int, column: int) -> str:
    return cell.ljust(width) if column == 0 else cell.rjust(width)


def _maybe(spread: Spread | None) -> dict[str, float] | None:
    return None if spread is None else asdict(spread)

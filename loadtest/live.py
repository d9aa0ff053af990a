"""The Traces tab's content: announced traces judged while the load runs, and the table they make (no I/O).

A trace is judged once its response is `grace` seconds old, by then its spans have been exported; the verdict is
provisional (a span can be later still) and the check at the end, which also finds traces no response announced,
is the one that counts.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from loadtest.traces import BROKEN, Record, Status, TraceVerdict, trace_hex

MAX_LISTED = 20
# The Traces tab's table: its columns, and the statuses it counts.
COLUMNS = (("what", "What"), ("count", "Count"), ("detail", "Detail"))
STATUSES = ("complete", "partial", "missing", "leaked", "orphan", "unsampled")


class LiveTally:
    """Verdicts so far, from any thread: counts per status and the first `max_listed` broken traces."""

    def __init__(self, max_listed: int = MAX_LISTED) -> None:
        self._lock = threading.Lock()
        self._max_listed = max_listed
        self._counts: Counter[Status] = Counter()
        self._broken: list[TraceVerdict] = []
        self._error: str | None = None

    def add(self, verdicts: Iterable[TraceVerdict]) -> None:
        with self._lock:
            for verdict in verdicts:
                self._counts[verdict.status] += 1
                if verdict.status in BROKEN and len(self._broken) < self._max_listed:
                    self._broken.append(verdict)
            self._error = None

    def failed(self, error: str) -> None:
        with self._lock:
            self._error = error

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._broken.clear()
            self._error = None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "checked": sum(self._counts.values()),
                "counts": {status.value: self._counts.get(status, 0) for status in Status},
                "broken": [describe_verdict(verdict) for verdict in self._broken],
                "error": self._error,
            }


def due_records(records: Sequence[Record], now: float, grace: float, limit: int) -> int:
    """How many of `records` (in arrival order) to judge now: the leading ones whose request started at least
    `grace` seconds ago, at most `limit`."""
    count = 0
    for record in records[:limit]:
        if record.started > now - grace:
            break
        count += 1
    return count


def describe_verdict(verdict: TraceVerdict) -> dict[str, Any]:
    return {
        "trace_id": trace_hex(verdict.trace_id),
        "status": verdict.status.value,
        "endpoint": verdict.endpoint,
        "problems": list(verdict.problems),
    }


def tab_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The tab's table: the check's state, the responses, the counts (final once the check ran, else live),
    the sample-rate groups and the broken traces' ids with what each lacks."""
    rows = [_row("check", _verdict(state), _state_detail(state))]
    responses, sampled = state["responses"], state["sampled"]
    share = f"{sampled / responses:.1%}" if responses else "-"
    hostile = f"; {state['hostile']} with forged trace headers" if state["hostile"] else ""
    workers = f"; from {state['workers']} workers" if state.get("workers") else ""
    rows.append(_row("responses", responses, f"{sampled} sampled ({share}){hostile}{workers}"))
    final = state.get("final")
    if final is not None and "counts" in final:
        rows.extend(_row(status, final["counts"][status], "final") for status in STATUSES)
        rows.extend(_row("rate", "ok" if group["ok"] else "OFF", group["summary"]) for group in final.get("rates", ()))
        rows.extend(_row("problem", "", problem) for problem in final.get("problems", ()))
        broken = final.get("broken", [])
    else:
        live = state["live"]
        detail = f"so far, of {live['checked']} traces judged while the load runs"
        rows.extend(_row(status, live["counts"][status], detail) for status in STATUSES)
        if live.get("error"):
            rows.append(_row("problem", "", f"live check: {live['error']}"))
        broken = live["broken"]
    for verdict in broken:
        where = verdict.get("endpoint") or "?"
        rows.append(
            _row(f"{verdict['status']} trace", verdict["trace_id"], f"{where}: {'; '.join(verdict['problems'])}")
        )
    # Locust's table sorts its rows by `name`: numbering them keeps this order.
    return [{**row, "name": f"{index:04d}"} for index, row in enumerate(rows)]


def _row(what: str, count: Any, detail: str) -> dict[str, Any]:
    return {"what": what, "count": count, "detail": detail}


def _verdict(state: dict[str, Any]) -> str:
    final = state.get("final")
    if state.get("error"):
        return "could not run"
    if final is not None:
        return "PASSED" if final.get("passed") else "FAILED"
    return str(state["state"])


def _state_detail(state: dict[str, Any]) -> str:
    if state.get("error"):
        return str(state["error"])
    return {
        "idle": "waiting for the test to start",
        "running": "recording every response's traceresponse; judging each trace once its spans had time to arrive",
        "collecting": "the load stopped: collecting the workers' records",
        "checking": "the load stopped: asking the trace backend for every trace of the run",
        "done": "checked: the final verdict below",
        "skipped": "recorded only (--skip-trace-check)",
    }.get(str(state["state"]), "")

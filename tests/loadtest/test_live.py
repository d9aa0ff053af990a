"""The live tally behind the Traces tab, and the table it becomes."""

from __future__ import annotations

from typing import Any

from loadtest.live import LiveTally, due_records, tab_rows
from loadtest.rates import RateGroup
from loadtest.traces import Record, Status, TraceVerdict


def records(*started: float) -> list[Record]:
    return [Record(index + 1, 1, True, "/api/list", at) for index, at in enumerate(started)]


def test_due_records_are_the_leading_ones_old_enough():
    pending = records(1.0, 2.0, 9.0, 3.0)
    assert due_records(pending, now=10.0, grace=5.0, limit=100) == 2  # stops at the first that is too young
    assert due_records(pending, now=10.0, grace=5.0, limit=1) == 1
    assert due_records(pending, now=5.0, grace=5.0, limit=100) == 0
    assert due_records([], now=5.0, grace=5.0, limit=100) == 0


def test_tally_counts_and_keeps_the_first_broken_traces():
    tally = LiveTally(max_listed=2)
    tally.add(
        [
            TraceVerdict(1, Status.COMPLETE),
            TraceVerdict(2, Status.PARTIAL, "/api/vote", ("missing voting SERVER",)),
            TraceVerdict(3, Status.UNSAMPLED),
            TraceVerdict(4, Status.LEAKED, "/api/list", ("not sampled, yet reported by web",)),
            TraceVerdict(5, Status.MISSING, "/api/list", ("sampled, yet nothing",)),
        ]
    )
    snapshot = tally.snapshot()
    assert snapshot["checked"] == 5
    assert snapshot["counts"] == {
        "complete": 1,
        "unsampled": 1,
        "missing": 1,
        "partial": 1,
        "leaked": 1,
        "orphan": 0,
    }
    assert [entry["trace_id"] for entry in snapshot["broken"]] == ["0000000000000002", "0000000000000004"]
    assert snapshot["broken"][0]["problems"] == ["missing voting SERVER"]
    tally.failed("GET x: ConnectError")
    assert tally.snapshot()["error"] == "GET x: ConnectError"
    tally.clear()
    assert tally.snapshot()["checked"] == 0


def state(**overrides: Any) -> dict[str, Any]:
    tally = LiveTally()
    tally.add([TraceVerdict(0xAB, Status.PARTIAL, "/api/vote", ("missing voting SERVER",))])
    return {
        "state": "running",
        "responses": 10,
        "sampled": 4,
        "hostile": 2,
        "workers": 0,
        "live": tally.snapshot(),
        "final": None,
        "error": None,
        **overrides,
    }


def rows_by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["what"]: row for row in rows}


def test_rows_while_the_load_runs_show_the_live_counts_and_broken_ids():
    rows = tab_rows(state())
    by_name = rows_by_name(rows)
    assert by_name["check"]["count"] == "running"
    assert by_name["responses"]["detail"] == "4 sampled (40.0%); 2 with forged trace headers"
    assert by_name["partial"]["count"] == 1
    assert by_name["partial"]["detail"].startswith("so far")
    assert [row["name"] for row in rows] == [f"{index:04d}" for index in range(len(rows))]
    assert by_name["partial trace"] == {
        "name": "0008",
        "what": "partial trace",
        "count": "00000000000000ab",
        "detail": "/api/vote: missing voting SERVER",
    }


def test_rows_at_the_end_show_the_final_verdict_rates_and_problems():
    final = {
        "passed": False,
        "counts": {"complete": 5, "partial": 0, "missing": 0, "leaked": 0, "orphan": 0, "unsampled": 5},
        "rates": [RateGroup("all requests", 0.1, 10, 5).as_json()],
        "problems": ["worker w never sent its last records"],
        "broken": [],
    }
    rows = tab_rows(state(state="done", final=final, workers=2))
    by_name = rows_by_name(rows)
    assert by_name["check"]["count"] == "FAILED"
    assert by_name["complete"] == {"name": "0002", "what": "complete", "count": 5, "detail": "final"}
    assert by_name["rate"]["count"] == "OFF"
    assert by_name["rate"]["detail"].startswith("all requests: 5 of 10 sampled (50.0%), expected 10.0%: OUTSIDE")
    assert by_name["problem"]["detail"] == "worker w never sent its last records"
    assert by_name["responses"]["detail"].endswith("; from 2 workers")
    # The live list of broken traces is replaced by the final one (empty here).
    assert "partial trace" not in by_name


def test_rows_when_the_check_could_not_run():
    rows = tab_rows(state(state="done", error="the trace backend could not be read"))
    assert rows[0]["count"] == "could not run"
    assert rows[0]["detail"] == "the trace backend could not be read"

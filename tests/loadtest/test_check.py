"""The checker's I/O: reading a real collector (in a thread), waiting for late spans, records files, the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.devtools.collector.app import create_collector_app
from loadtest.check import (
    EXIT_BROKEN,
    EXIT_CANNOT_CHECK,
    EXIT_PASSED,
    CheckError,
    CheckOptions,
    check,
    check_and_report,
    collector_api,
    expectations_from,
    load_recording,
    main,
    parse_expectation,
    save_recording,
    wait_until_stable,
)
from loadtest.traces import Expectations, Record, Recording, Status
from tests.support import FakeClock, ThreadedServer, free_port

GATEWAY = "ingress-gateway"
LIST_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
UNSAMPLED_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
LEAKED_TRACE = 0x5B8EFFF798038103D269B633813FC60C
ORPHAN_TRACE = 0x463AC35C9F6413AD48485A3953BB6124
ROOT_ID = 0x1
HOUR = 3600.0


def zipkin_span(
    trace: int, id: int, parent: int | None, service: str, kind: str, path: str, at: float | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "traceId": f"{trace:032x}",
        "id": f"{id:016x}",
        "kind": kind,
        "name": f"get {path}",
        "timestamp": int((time.time() if at is None else at) * 1_000_000),
        "duration": 150,
        "localEndpoint": {"serviceName": service},
        "tags": {"http.path": path},
    }
    if parent is not None:
        data["parentId"] = f"{parent:016x}"
    return data


def list_trace(trace: int, at: float | None = None) -> list[dict[str, Any]]:
    """A whole /api/list trace as the gateway, web and emoji report it."""
    return [
        zipkin_span(trace, ROOT_ID, None, GATEWAY, "SERVER", "/api/list", at),
        zipkin_span(trace, 0x2, ROOT_ID, GATEWAY, "CLIENT", "/api/list", at),
        zipkin_span(trace, 0x3, 0x2, "web", "SERVER", "/api/list", at),
        zipkin_span(trace, 0x4, 0x3, "web", "CLIENT", "/list", at),
        zipkin_span(trace, 0x5, 0x4, "emoji", "SERVER", "/list", at),
    ]


def record(trace: int, sampled: bool = True, endpoint: str = "/api/list") -> Record:
    return Record(trace, ROOT_ID, sampled, endpoint, time.time() - 1.0)


def fast(collector: str, **overrides: Any) -> CheckOptions:
    return CheckOptions(collector=collector, **{"settle": 0.3, "timeout": 10.0, **overrides})


class Collector:
    def __init__(self, server: ThreadedServer) -> None:
        self.url = server.url

    def post(self, spans: list[dict[str, Any]]) -> None:
        httpx.post(f"{self.url}/api/v2/spans", json=spans, timeout=5).raise_for_status()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with ThreadedServer(create_collector_app()) as server:
        yield Collector(server)


# --- against the real collector ---------------------------------------------------------------------------------


def test_check_judges_every_announced_trace_and_finds_orphans(collector):
    collector.post(list_trace(LIST_TRACE))
    # Leaked spans an hour old lie outside the run's window: only the lookup by trace id finds them.
    collector.post(list_trace(LEAKED_TRACE, at=time.time() - HOUR)[2:])
    collector.post([zipkin_span(ORPHAN_TRACE, 0x9, None, "emoji", "SERVER", "/list")])
    recording = Recording(
        (record(LIST_TRACE), record(UNSAMPLED_TRACE, sampled=False), record(LEAKED_TRACE, sampled=False)),
        stopped=time.time(),
    )
    report = check(recording, fast(collector.url))
    assert report.counts == {Status.COMPLETE: 1, Status.UNSAMPLED: 1, Status.LEAKED: 1, Status.ORPHAN: 1}
    assert {(verdict.trace_id, verdict.status) for verdict in report.broken} == {
        (LEAKED_TRACE, Status.LEAKED),
        (ORPHAN_TRACE, Status.ORPHAN),
    }


def test_check_passes_a_run_whose_traces_are_whole(collector):
    collector.post(list_trace(LIST_TRACE))
    recording = Recording((record(LIST_TRACE), record(UNSAMPLED_TRACE, sampled=False)), stopped=time.time())
    lines: list[str] = []
    assert check_and_report(recording, fast(collector.url), out=lines.append) == EXIT_PASSED
    assert lines[0].splitlines()[0] == "Trace check: PASSED"


def test_check_waits_for_spans_that_arrive_late(collector):
    spans = list_trace(LIST_TRACE)
    collector.post(spans[:2])
    listings = 0

    def deliver_the_rest_once_listed(response: httpx.Response) -> None:
        # The collector has answered the first listing: the rest arrives before the second one.
        nonlocal listings
        if response.request.url.path.endswith("/traces"):
            listings += 1
            if listings == 1:
                collector.post(spans[2:])

    with httpx.Client(event_hooks={"response": [deliver_the_rest_once_listed]}) as http:
        report = check(Recording((record(LIST_TRACE),)), fast(collector.url), http=http)
    assert report.counts == {Status.COMPLETE: 1}
    assert listings > 2


def test_check_judges_what_is_there_when_spans_keep_coming(collector):
    collector.post(list_trace(LIST_TRACE))
    run = Recording((record(LIST_TRACE),))
    orphans = iter(range(0x100, 0x10000))

    def one_more_orphan(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/traces"):
            at = run.records[0].started
            collector.post([zipkin_span(next(orphans), 0x9, None, "voting", "SERVER", "/results", at)])

    logged: list[str] = []
    with httpx.Client(event_hooks={"response": [one_more_orphan]}) as http:
        # The timeout comes long before the collector could have been quiet for `settle` seconds.
        report = check(run, fast(collector.url, settle=5.0, timeout=0.6), http=http, log=logged.append)
    assert any("still arriving after 0.6s" in line for line in logged)
    assert report.counts[Status.COMPLETE] == 1
    assert report.counts[Status.ORPHAN] >= 1


def test_check_only_announced_leaves_other_traces_alone(collector):
    collector.post(list_trace(LIST_TRACE))
    collector.post([zipkin_span(ORPHAN_TRACE, 0x9, None, "emoji", "SERVER", "/list")])
    report = check(Recording((record(LIST_TRACE),)), fast(collector.url, check_unannounced=False))
    assert report.passed


def test_check_of_an_empty_recording_asks_nothing_and_fails():
    # Nothing listens on this port: a request would fail the check with CheckError instead.
    report = check(Recording(), fast(f"http://127.0.0.1:{free_port()}"))
    assert report.problems == ("no response announced a trace: nothing was checked",)


def test_check_cannot_run_without_a_collector():
    url = f"http://127.0.0.1:{free_port()}"
    lines: list[str] = []
    status = check_and_report(Recording((record(LIST_TRACE),)), fast(url), out=lines.append)
    assert status == EXIT_CANNOT_CHECK
    [line] = lines
    assert line.startswith(f"Trace check: could not run: GET {url}/api/v2/traces: ConnectError")


# --- against a stand-in for other collectors -----------------------------------------------------------------------


def test_check_falls_back_to_one_get_per_trace_without_trace_many():
    stored = {f"{LIST_TRACE:032x}": list_trace(LIST_TRACE), f"{LEAKED_TRACE:032x}": list_trace(LEAKED_TRACE)[2:]}
    asked: list[str] = []

    def zipkin_without_trace_many(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/api/v2/traces":
            return httpx.Response(200, json=[])
        trace = request.url.path.removeprefix("/api/v2/trace/")
        if trace in stored:
            return httpx.Response(200, json=stored[trace])
        return httpx.Response(404, text="not found")

    recording = Recording(
        (record(LIST_TRACE), record(LEAKED_TRACE, sampled=False), record(UNSAMPLED_TRACE, sampled=False))
    )
    with httpx.Client(transport=httpx.MockTransport(zipkin_without_trace_many)) as http:
        report = check(recording, fast("http://zipkin.test:9411", settle=0.0), http=http)
    assert report.counts == {Status.COMPLETE: 1, Status.LEAKED: 1, Status.UNSAMPLED: 1}
    assert asked.count("/api/v2/traceMany") == 1
    assert sorted(path for path in asked if path.startswith("/api/v2/trace/")) == sorted(
        f"/api/v2/trace/{trace:032x}" for trace in (LIST_TRACE, LEAKED_TRACE, UNSAMPLED_TRACE)
    )


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, "<html>", "answered something other than JSON"),
        (200, '{"traces": []}', "answered something other than a list of traces"),
        (200, "[[{}]]", "not a Zipkin v2 span"),
        (503, "try   later", "answered 503: try later"),
    ],
)
def test_check_stops_on_answers_that_are_not_zipkin(status, body, message):
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text=body)

    with httpx.Client(transport=httpx.MockTransport(broken)) as http, pytest.raises(CheckError, match=message):
        check(Recording((record(LIST_TRACE),)), fast("http://zipkin.test:9411"), http=http)


@pytest.mark.parametrize(
    "given",
    [
        "http://collector:9411",
        "http://collector:9411/",
        "http://collector:9411/api/v2",
        "http://collector:9411/api/v2/spans",
        " http://collector:9411/api/v2/spans/ ",
    ],
)
def test_collector_api_accepts_base_api_or_span_endpoint(given):
    assert collector_api(given) == "http://collector:9411/api/v2"


@pytest.mark.parametrize("given", ["collector:9411", "ftp://collector", "http://", ""])
def test_collector_api_refuses_what_is_not_an_http_url(given):
    with pytest.raises(CheckError, match="must be an http"):
        collector_api(given)


# --- waiting until the collector is quiet ----------------------------------------------------------------------------


def probing(values: list[int], clock: FakeClock) -> Any:
    calls = iter(values)
    return lambda: next(calls)


def test_wait_until_stable_returns_once_nothing_changed_for_settle_seconds():
    clock = FakeClock()
    values = [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]
    value, settled = wait_until_stable(
        probing(values, clock), lambda v: v, 1.0, 30.0, clock=clock, sleep=clock.advance, interval=0.25
    )
    assert (value, settled) == (3, True)
    # The last change was seen at t=0.5; quiet from then on for 1.0s.
    assert clock.now == pytest.approx(1000.0 + 1.5)


def test_wait_until_stable_gives_up_at_the_timeout_with_the_last_value():
    clock = FakeClock()
    value, settled = wait_until_stable(
        probing(list(range(100)), clock), lambda v: v, 1.0, 2.0, clock=clock, sleep=clock.advance, interval=0.25
    )
    assert (value, settled) == (8, False)
    assert clock.now == pytest.approx(1000.0 + 2.0)


def test_wait_until_stable_with_no_settle_time_probes_once():
    clock = FakeClock()
    assert wait_until_stable(probing([7], clock), lambda v: v, 0.0, 5.0, clock=clock, sleep=clock.advance) == (7, True)


# --- records files and the command line ------------------------------------------------------------------------------


def test_records_file_round_trips(tmp_path):
    recording = Recording(
        (Record(LIST_TRACE, 0x2, True, "/api/list", 1.5), Record(0xA3CE929D0E0E4736, 0x3, False, "/api/vote", 2.5)),
        dropped=1,
        without_traceresponse=2,
        unanswered=3,
        stopped=9.5,
    )
    path = tmp_path / "records.json"
    save_recording(path, recording)
    assert load_recording(path) == recording
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read records"),
        ("{", "cannot read records"),
        ('{"format": 99}', "not a records file of format 1"),
        ('{"format": 1, "records": []}', "malformed records file: KeyError"),
        (
            '{"format": 1, "stopped": null, "dropped": 0, "without_traceresponse": 0, "unanswered": 0,'
            ' "records": [["xyz", "1", true, "/", 1.0]]}',
            "malformed records file: ValueError",
        ),
        (
            '{"format": 1, "stopped": null, "dropped": 0, "without_traceresponse": 0, "unanswered": 0,'
            ' "records": [["1", "1", "yes", "/", 1.0]]}',
            "malformed records file: ValueError",
        ),
    ],
)
def test_load_recording_names_the_file_it_cannot_use(tmp_path, content, message):
    path = tmp_path / "records.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CheckError, match=f"{path}: {message}"):
        load_recording(path)


def test_main_checks_the_records_of_several_files_and_writes_a_report(collector, tmp_path, capsys):
    collector.post(list_trace(LIST_TRACE))
    first, second, report = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "report.json"
    save_recording(first, Recording((record(LIST_TRACE),), stopped=time.time()))
    save_recording(second, Recording((record(UNSAMPLED_TRACE, sampled=False),), stopped=time.time()))
    argv = ["--collector", collector.url, "--records", str(first), "--records", str(second), "--settle", "0.2"]
    assert main([*argv, "--report", str(report)]) == EXIT_PASSED
    assert capsys.readouterr().out.startswith("Trace check: PASSED\n  responses        2  (1 sampled, 50.0%)")
    assert json.loads(report.read_text())["counts"]["complete"] == 1


def test_main_fails_a_broken_trace_unless_told_what_to_expect(collector, tmp_path, capsys):
    collector.post(list_trace(LIST_TRACE)[:4])  # emoji's span never came
    records = tmp_path / "records.json"
    save_recording(records, Recording((record(LIST_TRACE),), stopped=time.time()))
    argv = ["--collector", collector.url, "--records", str(records), "--settle", "0.2"]
    assert main(argv) == EXIT_BROKEN
    assert "1 x partial: no span from emoji" in capsys.readouterr().out
    assert main([*argv, "--expect", "/api/list=web"]) == EXIT_PASSED


def test_main_cannot_run_on_a_missing_records_file(tmp_path, capsys):
    missing = tmp_path / "none.json"
    assert main(["--records", str(missing)]) == EXIT_CANNOT_CHECK
    assert capsys.readouterr().out.startswith(f"Trace check: could not run: {missing}: cannot read records")


@pytest.mark.parametrize("argv", [[], ["--records", "x", "--settle", "-1"], ["--records", "x", "--expect", "list"]])
def test_main_refuses_bad_arguments(argv):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


def test_parse_expectation():
    assert parse_expectation("/api/vote=web, Emoji,voting") == ("/api/vote", frozenset({"web", "emoji", "voting"}))
    assert parse_expectation("/health=") == ("/health", frozenset())
    for bad in ("/api/vote", "api=web"):
        with pytest.raises(ValueError, match="ENDPOINT=SERVICE"):
            parse_expectation(bad)


def test_expectations_from_overrides_one_endpoint_and_keeps_the_others():
    expectations = expectations_from("edge", [("/api/list", frozenset({"web"}))])
    assert expectations.services_for("/api/list") == {"edge", "web"}
    assert expectations.services_for("/api/vote") == Expectations("edge").services_for("/api/vote")


def test_check_options_default_to_the_local_collector():
    assert CheckOptions().collector == "http://127.0.0.1:9411"
    assert isinstance(CheckOptions().expectations, Expectations)
    assert Path(__file__).parent.name == "loadtest"

"""The checker's I/O: reading a real collector (in a thread) or a fake jaeger-query, waiting for late spans, asking
for every trace, records files, the command line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_devtools.collector.app import create_collector_app
from loadtest.backends import BackendKind, CheckError
from loadtest.check import (
    EXIT_BROKEN,
    EXIT_CANNOT_CHECK,
    EXIT_PASSED,
    CheckOptions,
    check,
    check_and_report,
    expectations_from,
    load_recording,
    load_route_file,
    main,
    rate_policy,
    save_recording,
    wait_until_stable,
)
from loadtest.expectations import DEFAULT_FILE, load_expectations
from loadtest.traces import Record, Recording, Status
from tests.loadtest.fake_jaeger import FakeJaeger
from tests.loadtest.spans import (
    LEAKED_TRACE,
    LIST_TRACE,
    ORPHAN_TRACE,
    UNSAMPLED_TRACE,
    list_trace,
    record,
    zipkin_span,
)
from tests.support import FakeClock, ThreadedServer, free_port

HOUR = 3600.0
EXPECT = load_expectations(DEFAULT_FILE)


def fast(url: str, **overrides: Any) -> CheckOptions:
    return CheckOptions(backend_url=url, expectations=EXPECT, **{"settle": 0.3, "timeout": 10.0, **overrides})


class Collector:
    def __init__(self, server: ThreadedServer) -> None:
        self.url = server.url

    def post(self, spans: list[dict[str, Any]]) -> None:
        httpx.post(f"{self.url}/api/v2/spans", json=spans, timeout=5).raise_for_status()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with ThreadedServer(create_collector_app()) as server:
        yield Collector(server)


@pytest.fixture
def jaeger(collector: Collector) -> Iterator[str]:
    with ThreadedServer(FakeJaeger(collector.url).app) as server:
        yield server.url


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


def test_check_passes_a_run_whose_traces_are_whole(collector, tmp_path):
    collector.post(list_trace(LIST_TRACE))
    recording = Recording((record(LIST_TRACE), record(UNSAMPLED_TRACE, sampled=False)), stopped=time.time())
    lines: list[str] = []
    report_path = tmp_path / "report.json"
    status, report = check_and_report(recording, fast(collector.url), report_path, out=lines.append)
    assert status == EXIT_PASSED
    assert report is not None and report.passed
    assert lines[0].splitlines()[0] == "Trace check: PASSED"
    assert json.loads(report_path.read_text())["counts"]["complete"] == 1


def test_check_asks_for_forged_trace_ids_and_fails_on_one_the_backend_holds(collector):
    forged_seen, forged_unseen = 0x1111, 0x2222
    collector.post(list_trace(LIST_TRACE))
    # Outside the window: found only because the check asks for every forged id.
    collector.post(list_trace(forged_seen, at=time.time() - HOUR))
    recording = Recording((record(LIST_TRACE, hostile=True),), stopped=time.time(), forged=(forged_seen, forged_unseen))
    report = check(recording, fast(collector.url))
    assert report.forged_seen == (forged_seen,)
    assert not report.passed


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


def test_check_cannot_run_without_a_backend(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    lines: list[str] = []
    report_path = tmp_path / "report.json"
    status, report = check_and_report(Recording((record(LIST_TRACE),)), fast(url), report_path, out=lines.append)
    assert (status, report) == (EXIT_CANNOT_CHECK, None)
    [line] = lines
    assert line.startswith(f"Trace check: could not run: GET {url}/api/v2/traces: ConnectError")
    assert json.loads(report_path.read_text())["passed"] is False


def test_check_holds_the_sampled_fraction_to_the_configured_rate(collector):
    traces = range(1, 21)
    for trace in traces:
        collector.post(list_trace(trace))
    recording = Recording(tuple(record(trace) for trace in traces), stopped=time.time())
    assert check(recording, fast(collector.url, rates=rate_policy(1.0, None, None, 4.0))).passed
    report = check(recording, fast(collector.url, rates=rate_policy(0.3, None, None, 4.0)))
    assert report.broken == () and not report.rate_ok


# --- against jaeger-query -------------------------------------------------------------------------------------------


def test_check_reads_jaeger_as_it_reads_zipkin(collector, jaeger):
    collector.post(list_trace(LIST_TRACE))
    collector.post(list_trace(LEAKED_TRACE)[2:])
    collector.post([zipkin_span(ORPHAN_TRACE, 0x9, None, "emoji", "SERVER", "/list")])
    partial = 0x77
    collector.post(list_trace(partial)[:4])
    recording = Recording(
        (
            record(LIST_TRACE),
            record(UNSAMPLED_TRACE, sampled=False),
            record(LEAKED_TRACE, sampled=False),
            record(partial),
        ),
        stopped=time.time(),
    )
    zipkin = check(recording, fast(collector.url))
    jaeger_report = check(recording, fast(jaeger, backend=BackendKind.JAEGER))
    assert (
        jaeger_report.counts
        == zipkin.counts
        == {
            Status.COMPLETE: 1,
            Status.UNSAMPLED: 1,
            Status.LEAKED: 1,
            Status.PARTIAL: 1,
            Status.ORPHAN: 1,
        }
    )
    assert [(v.trace_id, v.problems) for v in jaeger_report.broken] == [(v.trace_id, v.problems) for v in zipkin.broken]


# --- waiting until the backend is quiet ------------------------------------------------------------------------------


def probing(values: list[int]) -> Any:
    calls = iter(values)
    return lambda: next(calls)


def test_wait_until_stable_returns_once_nothing_changed_for_settle_seconds():
    clock = FakeClock()
    values = [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]
    value, settled = wait_until_stable(
        probing(values), lambda v: v, 1.0, 30.0, clock=clock, sleep=clock.advance, interval=0.25
    )
    assert (value, settled) == (3, True)
    # The last change was seen at t=0.5; quiet from then on for 1.0s.
    assert clock.now == pytest.approx(1000.0 + 1.5)


def test_wait_until_stable_gives_up_at_the_timeout_with_the_last_value():
    clock = FakeClock()
    value, settled = wait_until_stable(
        probing(list(range(100))), lambda v: v, 1.0, 2.0, clock=clock, sleep=clock.advance, interval=0.25
    )
    assert (value, settled) == (8, False)
    assert clock.now == pytest.approx(1000.0 + 2.0)


def test_wait_until_stable_with_no_settle_time_probes_once():
    clock = FakeClock()
    assert wait_until_stable(probing([7]), lambda v: v, 0.0, 5.0, clock=clock, sleep=clock.advance) == (7, True)


# --- records files and the command line ------------------------------------------------------------------------------


def test_records_file_round_trips(tmp_path):
    recording = Recording(
        (
            Record(LIST_TRACE, 0x2, True, "/api/list", 1.5),
            Record(0xA3CE929D0E0E4736, 0x3, False, "/api/vote", 2.5, hostile=True),
        ),
        dropped=1,
        without_traceresponse=2,
        unanswered=3,
        stopped=9.5,
        forged=(0xF1, LIST_TRACE),
        forged_sent=4,
    )
    path = tmp_path / "records.json"
    save_recording(path, recording, "http://127.0.0.1:8080")
    assert load_recording(path) == (recording, "http://127.0.0.1:8080")
    assert list(tmp_path.iterdir()) == [path]


GOOD_HEADER = '"format": 2, "stopped": null, "dropped": 0, "without_traceresponse": 0, "unanswered": 0'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read records"),
        ("{", "cannot read records"),
        ('{"format": 1}', "not a records file of format 2"),
        ('{"format": 2, "records": []}', "malformed records file: KeyError"),
        (
            "{" + GOOD_HEADER + ', "forged_sent": 0, "forged": [], "records": [["xyz", "1", true, "/", 1.0, false]]}',
            "malformed records file: ValueError",
        ),
        (
            "{" + GOOD_HEADER + ', "forged_sent": 0, "forged": [], "records": [["1", "1", "yes", "/", 1.0, false]]}',
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
    argv = ["--backend-url", collector.url, "--records", str(first), "--records", str(second), "--settle", "0.2"]
    assert main([*argv, "--report", str(report), "--rate", "0.5"]) == EXIT_PASSED
    out = capsys.readouterr().out
    assert out.startswith("Trace check: PASSED\n  responses        2  (1 sampled, 50.0%, from 2 workers)")
    assert "ok  all requests: 1 of 2 sampled (50.0%), expected 50.0%" in out
    assert json.loads(report.read_text())["counts"]["complete"] == 1


def test_main_fails_a_broken_trace_unless_told_what_to_expect(collector, tmp_path, capsys):
    collector.post(list_trace(LIST_TRACE)[:4])  # emoji's span never came
    records = tmp_path / "records.json"
    save_recording(records, Recording((record(LIST_TRACE),), stopped=time.time()))
    argv = ["--backend-url", collector.url, "--records", str(records), "--settle", "0.2"]
    assert main(argv) == EXIT_BROKEN
    assert f"partial  {LIST_TRACE:032x} /api/list: missing emoji SERVER" in capsys.readouterr().out
    expectations = tmp_path / "expect.yaml"
    expectations.write_text("endpoints:\n  /api/list: [gateway SERVER, gateway CLIENT, web SERVER, web CLIENT]\n")
    assert main([*argv, "--expectations", str(expectations)]) == EXIT_PASSED


def test_main_holds_each_route_to_its_rate_with_the_gateways_route_file(collector, tmp_path, capsys):
    for trace in (1, 2):
        collector.post(list_trace(trace))
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {name: lists, path_prefix: /api/list, upstream: 'http://web', sample_rate: 1.0}\n")
    records = tmp_path / "records.json"
    save_recording(records, Recording((record(1), record(2), record(3, sampled=False)), stopped=time.time()), None)
    argv = ["--backend-url", collector.url, "--records", str(records), "--settle", "0.2", "--routes-file", str(routes)]
    assert main(argv) == EXIT_BROKEN
    assert "BAD lists: 2 of 3 sampled (66.7%), expected 100.0%" in capsys.readouterr().out


def test_main_cannot_run_on_a_missing_records_file(tmp_path, capsys):
    missing = tmp_path / "none.json"
    assert main(["--records", str(missing)]) == EXIT_CANNOT_CHECK
    assert capsys.readouterr().out.startswith(f"Trace check: could not run: {missing}: cannot read records")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--expectations", "cannot read expectations"),
        ("--routes-file", "cannot read route file"),
    ],
)
def test_main_cannot_run_with_a_file_it_cannot_read(tmp_path, capsys, option, message):
    records = tmp_path / "records.json"
    save_recording(records, Recording((record(LIST_TRACE),)))
    assert main(["--records", str(records), option, str(tmp_path / "nothing.yaml")]) == EXIT_CANNOT_CHECK
    assert message in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--records", "x", "--settle", "-1"],
        ["--records", "x", "--rate", "1.5"],
        ["--records", "x", "--backend", "tempo"],
        ["--records", "x", "--concurrency", "0"],
        ["--records", "x", "--rate-sigmas", "0"],
    ],
)
def test_main_refuses_bad_arguments(argv):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


def test_loaders_name_the_file_they_cannot_use(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: nope\n")
    with pytest.raises(CheckError, match=f"{bad}.*routes: must be a list"):
        load_route_file(bad)
    with pytest.raises(CheckError, match=f"{bad}: unknown top-level key 'routes'"):
        expectations_from(bad, None)


def test_check_options_default_to_the_local_zipkin_and_the_demo_expectations():
    options = CheckOptions()
    assert (options.backend, options.backend_url) == (BackendKind.ZIPKIN, "http://127.0.0.1:9411")
    assert Path(DEFAULT_FILE).name == "expectations.yaml"

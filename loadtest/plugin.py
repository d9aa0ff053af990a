"""The trace check wired into Locust: options, recording, distributed runs, the live tally and the exit status.

Imported by loadtest/locustfile.py. Every response's `traceresponse` is recorded with the request's endpoint (and,
for the hostile client, the trace ids it forged). When the test stops, the process holding the records asks the
trace backend for every trace (loadtest/check.py), prints the verdict, writes `--trace-report`, and makes locust
exit with 1 when a trace is broken or the sampled fraction is off (2 when the check could not run).

- Alone, or with the web UI: the locust process records and checks. With the web UI, a background loop also judges
  each trace a few seconds after its response, for the "Traces" tab (loadtest/webui.py).
- Distributed (`--master` and `--worker`s, or `--processes`): each worker streams its records to the master every
  second in a `trace_records` message and sends the rest when its users stop; the master, once every worker that
  took part has sent its last batch (asking the ones that did not with a `trace_stop` message), runs the one check
  over all of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from locust import events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.event import EventHook
from locust.rpc import Message
from locust.runners import STATE_STOPPED, LocalRunner, MasterRunner, WorkerRunner

from gateway.propagation.w3c import TRACERESPONSE
from gateway.routes import Route
from loadtest import webui
from loadtest.backends import BackendKind, CheckError, fetch_all, open_backend
from loadtest.check import (
    EXIT_CANNOT_CHECK,
    EXIT_PASSED,
    HTTP_TIMEOUT,
    CheckOptions,
    add_check_arguments,
    check_and_report,
    expectations_from,
    load_route_file,
    rate_policy,
    save_recording,
)
from loadtest.live import LiveTally, due_records
from loadtest.traces import (
    DEFAULT_MAX_RECORDS,
    RecordBatch,
    Recorder,
    Recording,
    Report,
    classify_announced,
    group_by_trace,
)

RECORDS_MESSAGE = "trace_records"
STOP_MESSAGE = "trace_stop"
# Request context keys the locustfile's users set: a hostile request, and the trace ids it forged.
HOSTILE = "trace_hostile"
FORGED = "trace_forged"
STREAM_INTERVAL = 1.0
DEFAULT_LIVE_INTERVAL = 2.0
LIVE_BATCH = 1_000
# Beyond locust's own --stop-timeout, how long the master waits for the workers' last records.
WORKER_GRACE = 30.0
EXIT_BAD_OPTIONS = 2

logger = logging.getLogger("loadtest")


def listen(hook: EventHook, listener: Callable[..., None]) -> None:
    hook.add_listener(listener)  # type: ignore[no-untyped-call]  # locust's EventHook is not annotated


@dataclass(frozen=True, slots=True)
class Setup:
    """The trace options, read and checked once when locust starts."""

    check: CheckOptions
    rate: float | None
    routes: list[Route] | None
    rate_sigmas: float
    rate_upper_only: bool
    records: Path | None
    report: Path | None
    max_records: int
    skip: bool
    live_interval: float

    def check_options(self, host: str | None) -> CheckOptions:
        """The check's options for a run whose load went to `host` (the gateway routes by its Host header)."""
        return replace(
            self.check,
            rates=rate_policy(
                self.rate, self.routes, urlsplit(host or "").netloc, self.rate_sigmas, self.rate_upper_only
            ),
        )


def setup_from(options: argparse.Namespace) -> Setup:
    """Raises CheckError naming the option whose value cannot be used."""
    try:
        expectations = expectations_from(Path(options.trace_expectations), options.trace_gateway_service)
    except CheckError as exc:
        raise CheckError(f"--trace-expectations: {exc}") from None
    try:
        routes = load_route_file(Path(options.trace_routes_file)) if options.trace_routes_file else None
    except CheckError as exc:
        raise CheckError(f"--trace-routes-file: {exc}") from None
    if options.trace_max_records < 1:
        raise CheckError(f"--trace-max-records: must be at least 1, got {options.trace_max_records}")
    return Setup(
        check=CheckOptions(
            backend=BackendKind(options.trace_backend),
            backend_url=options.trace_backend_url,
            expectations=expectations,
            settle=options.trace_settle,
            timeout=options.trace_timeout,
            clock_skew=options.trace_clock_skew,
            check_unannounced=not options.trace_only_announced,
            concurrency=options.trace_concurrency,
        ),
        rate=options.trace_rate,
        routes=routes,
        rate_sigmas=options.trace_rate_sigmas,
        rate_upper_only=options.trace_rate_upper_only,
        records=Path(options.trace_records) if options.trace_records else None,
        report=Path(options.trace_report) if options.trace_report else None,
        max_records=options.trace_max_records,
        skip=options.skip_trace_check,
        live_interval=options.trace_live_interval,
    )


class TraceRun:
    """What one locust process does for the trace check, by its role: record (alone, worker), collect (master),
    check (alone, master)."""

    def __init__(self, environment: Environment, setup: Setup) -> None:
        self.environment = environment
        self.setup = setup
        self.recorder = Recorder(setup.max_records)
        self.live = LiveTally()
        self.state = "idle"
        self.report: Report | None = None
        self.error: str | None = None
        self.exit_status: int | None = None
        self._lock = threading.Lock()
        self._checker: threading.Thread | None = None
        self._stop_loops = threading.Event()
        self._loops: list[threading.Thread] = []
        # Master: workers that started a test, workers whose last batch arrived, and when each stopped.
        self._begun: set[str] = set()
        self._finished: dict[str, float] = {}
        # A test started from the web UI while the last one's check still runs: that check's verdict is stale.
        self._generation = 0

    @property
    def runner(self) -> Any:
        return self.environment.runner

    @property
    def is_master(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    def attach(self) -> None:
        listen(self.environment.events.test_start, self.on_test_start)
        listen(self.environment.events.test_stop, self.on_test_stop)
        listen(self.environment.events.quitting, self.on_quitting)
        if self.is_master:
            self.runner.register_message(RECORDS_MESSAGE, self.on_records)
        else:
            listen(self.environment.events.request, self.on_request)
        if self.is_worker:
            self.runner.register_message(STOP_MESSAGE, self.on_stop_asked)
        if self.environment.web_ui is not None:
            webui.install(self.environment.web_ui, self.snapshot)

    # --- every role ---------------------------------------------------------------------------------------------

    def on_test_start(self, **kwargs: Any) -> None:
        self._stop_background()
        with self._lock:
            self.recorder.clear()
            self.live.clear()
            self._begun.clear()
            self._finished.clear()
            self.report, self.error, self.exit_status = None, None, None
            self.state = "running"
            self._generation += 1
        self._stop_loops = threading.Event()
        if self.is_worker:
            self.runner.send_message(RECORDS_MESSAGE, {"phase": "begin"})
            self._start_loop(self._stream, "trace-stream")
        elif self.environment.web_ui is not None and self.setup.live_interval > 0:
            self._start_loop(self._judge_live, "trace-live")

    def on_request(self, name: str, response: Any, start_time: float, context: Any = None, **kwargs: Any) -> None:
        context = context if isinstance(context, dict) else {}
        for trace_id in context.get(FORGED, ()):
            self.recorder.forged(trace_id)
        if not getattr(response, "status_code", 0):
            # No response at all (connection refused, timeout): locust counts the failure; no trace was announced.
            self.recorder.unanswered()
            return
        headers = getattr(response, "headers", None)
        traceresponse = headers.get(TRACERESPONSE) if headers is not None else None
        self.recorder.response(name, start_time, traceresponse, hostile=bool(context.get(HOSTILE)))

    def on_test_stop(self, **kwargs: Any) -> None:
        self._stop_background()
        if self.is_worker:
            data = {"phase": "final", "batch": self.recorder.batch().to_wire(), "stopped": time.time()}
            self.runner.send_message(RECORDS_MESSAGE, data)
            return
        run_problems: list[str] = []
        stopped = time.time()
        if self.is_master:
            self.state = "collecting"
            run_problems = self._collect_from_workers()
            stopped = max(self._finished.values(), default=stopped)
        recording = self.recorder.recording(stopped=stopped)
        if self.setup.records is not None:
            save_recording(self.setup.records, recording, self.environment.host)
            logger.info("trace records in %s", self.setup.records)
        if self.setup.skip:
            self.state = "skipped"
            return
        self.state = "checking"
        workers = len(self._begun)
        self._checker = threading.Thread(
            target=self._check,
            args=(recording, run_problems, workers, self._generation),
            name="trace-check",
            daemon=True,
        )
        self._checker.start()

    def on_quitting(self, environment: Environment, **kwargs: Any) -> None:
        if self.is_worker:
            return
        # Interrupted (Ctrl-C, SIGTERM) or quitting without a stop: locust takes its exit status right after this
        # event, so the test is stopped and checked now.
        if self.state == "running" and isinstance(self.runner, LocalRunner):
            self.runner.stop()
        elif self.state == "running" and self.is_master:
            self.runner.stop(send_stop_to_client=False)
        checker = self._checker
        if checker is not None:
            checker.join(self.setup.check.settle + 2 * self.setup.check.timeout + WORKER_GRACE)
            if checker.is_alive():
                print("Trace check: could not run: it did not finish in time", flush=True)
                self.exit_status = EXIT_CANNOT_CHECK
        if self.exit_status not in (None, EXIT_PASSED) and not environment.process_exit_code:
            environment.process_exit_code = self.exit_status

    def snapshot(self) -> dict[str, Any]:
        """The state of the check for the Traces tab and `GET /traces`."""
        responses, sampled, hostile = self.recorder.tally()
        report = self.report
        return {
            "state": self.state,
            "responses": responses,
            "sampled": sampled,
            "hostile": hostile,
            "workers": len(self._begun),
            "live": self.live.snapshot(),
            "final": report.as_json() if report is not None else None,
            "error": self.error,
        }

    # --- master -------------------------------------------------------------------------------------------------

    def on_records(self, environment: Environment, msg: Message, **kwargs: Any) -> None:
        data = msg.data if isinstance(msg.data, dict) else {}
        phase = data.get("phase")
        if phase == "begin":
            self._begun.add(msg.node_id)
            return
        try:
            batch = RecordBatch.from_wire(data.get("batch"))
        except ValueError as exc:
            logger.error("worker %s sent trace records that cannot be read: %s", msg.node_id, exc)
            return
        self._begun.add(msg.node_id)
        self.recorder.absorb(batch)
        if phase == "final":
            self._finished[msg.node_id] = float(data.get("stopped") or time.time())

    def _collect_from_workers(self) -> list[str]:
        """Waits for every worker's last batch, asking those still running to stop; returns the problems of the
        workers whose records never came."""
        for worker in sorted(self._begun - self._finished.keys()):
            self.runner.send_message(STOP_MESSAGE, None, client_id=worker)
        deadline = time.monotonic() + self.environment.stop_timeout + WORKER_GRACE
        while self._begun - self._finished.keys() and time.monotonic() < deadline:
            time.sleep(0.1)
        missing = sorted(self._begun - self._finished.keys())
        if missing:
            logger.error("no last trace records from worker(s) %s", ", ".join(missing))
        return [f"worker {worker} never sent its last records: some of its traces went unchecked" for worker in missing]

    # --- worker -------------------------------------------------------------------------------------------------

    def on_stop_asked(self, environment: Environment, msg: Message, **kwargs: Any) -> None:
        # The master quits without stopping the workers first (a headless --run-time, a shape that ended): stopping
        # here sends the last batch (on_test_stop) while the master still listens.
        if self.runner.state != STATE_STOPPED:
            self.runner.stop()

    def _stream(self, stop: threading.Event) -> None:
        while not stop.wait(STREAM_INTERVAL):
            batch = self.recorder.batch()
            if batch != RecordBatch():
                self.runner.send_message(RECORDS_MESSAGE, {"phase": "batch", "batch": batch.to_wire()})

    # --- checking -----------------------------------------------------------------------------------------------

    def _check(self, recording: Recording, run_problems: list[str], workers: int, generation: int) -> None:
        options = self.setup.check_options(self.environment.host)
        status, report = check_and_report(
            recording,
            options,
            self.setup.report,
            out=lambda text: print(text, flush=True),
            log=logger.info,
            workers=workers,
            run_problems=run_problems,
        )
        with self._lock:
            if generation != self._generation:
                return
            self.report, self.exit_status, self.state = report, status, "done"
            if report is None:
                self.error = "the trace backend could not be read: see locust's output"
        if status != EXIT_PASSED and not self.environment.process_exit_code:
            self.environment.process_exit_code = status

    def _judge_live(self, stop: threading.Event) -> None:
        grace = max(self.setup.check.settle, 1.0) + 1.0
        judged = 0
        options = self.setup.check
        with httpx.Client(timeout=HTTP_TIMEOUT, trust_env=False) as http:
            backend = open_backend(options.backend, options.backend_url, http)
            while not stop.wait(self.setup.live_interval):
                pending = self.recorder.records_since(judged)
                due = pending[: due_records(pending, time.time(), grace, LIVE_BATCH)]
                if not due:
                    continue
                try:
                    fetched = fetch_all(backend, [record.trace_id for record in due], concurrency=options.concurrency)
                except CheckError as exc:
                    self.live.failed(str(exc))
                    continue
                traces = group_by_trace(fetched.spans)
                self.live.add(
                    classify_announced(record, traces.get(record.trace_id, ()), options.expectations) for record in due
                )
                judged += len(due)

    def _start_loop(self, target: Callable[[threading.Event], None], name: str) -> None:
        loop = threading.Thread(target=target, args=(self._stop_loops,), name=name, daemon=True)
        self._loops.append(loop)
        loop.start()

    def _stop_background(self) -> None:
        self._stop_loops.set()
        for loop in self._loops:
            loop.join(HTTP_TIMEOUT)
        self._loops.clear()


def _add_arguments(parser: LocustArgumentParser, **kwargs: Any) -> None:
    group = parser.add_argument_group("trace check (loadtest/plugin.py)")

    def env(name: str) -> dict[str, Any]:
        # Added to a group, not to locust's parser itself: locust leaves them out of the web UI's start form, whose
        # values would come back as strings.
        return {"env_var": f"LOCUST_TRACE_{name.upper().replace('-', '_')}"}

    add_check_arguments(group, prefix="trace-", env=env)
    group.add_argument(
        "--trace-records",
        default="",
        metavar="FILE",
        help="also write every response's trace record here, for `python -m loadtest.check`",
        **env("records"),
    )
    group.add_argument(
        "--trace-report", default="", metavar="FILE", help="write the verdict as JSON here", **env("report")
    )
    group.add_argument(
        "--trace-max-records",
        type=int,
        default=DEFAULT_MAX_RECORDS,
        metavar="N",
        help="responses recorded at most; beyond, the check fails (default: %(default)s)",
        **env("max-records"),
    )
    group.add_argument(
        "--trace-live-interval",
        type=float,
        default=DEFAULT_LIVE_INTERVAL,
        metavar="SECONDS",
        help="with the web UI, judge traces this often while the load runs, for the Traces tab; 0: never "
        "(default: %(default)s)",
        **env("live-interval"),
    )
    group.add_argument(
        "--skip-trace-check", action="store_true", help="record, but do not check the traces", **env("skip")
    )


def _on_init(environment: Environment, **kwargs: Any) -> None:
    if environment.parsed_options is None:
        # Run from the library API without locust's argument parser: no options, no trace check.
        return
    try:
        setup = setup_from(environment.parsed_options)
    except CheckError as exc:
        print(f"locust: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_OPTIONS)
    # locust logs at INFO from the root logger; the check's many GETs would drown its verdict.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    TraceRun(environment, setup).attach()


listen(events.init_command_line_parser, _add_arguments)
listen(events.init, _on_init)

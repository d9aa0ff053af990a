"""emojivoto-style load through the gateway; when the load stops, every trace it caused is checked in the collector.

    locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:8080

Every response's `traceresponse` header is recorded (trace id, the gateway's SERVER span id, sampled flag,
endpoint). When the test stops, the collector (`--trace-collector`) is read back and each trace judged
(loadtest/traces.py): a broken trace makes locust exit with status 1, a check that could not run with 2.
`--trace-records FILE` keeps the records for `python -m loadtest.check`. See loadtest/README.md.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.event import EventHook
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

# locust puts the working directory and this file's folder on sys.path; the repository root makes `loadtest.*`
# importable from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.check import (
    DEFAULT_CLOCK_SKEW,
    DEFAULT_COLLECTOR,
    DEFAULT_SETTLE,
    DEFAULT_TIMEOUT,
    EXIT_PASSED,
    CheckOptions,
    check_and_report,
    expectations_from,
    parse_expectation,
    save_recording,
)
from loadtest.traces import DEFAULT_GATEWAY_SERVICE, DEFAULT_MAX_RECORDS, TRACERESPONSE, Recorder

# emojivoto's web API, as gateway/devtools/mesh/web.py serves it.
LIST_PATH = "/api/list"
VOTE_PATH = "/api/vote"
LEADERBOARD_PATH = "/api/leaderboard"
CHOICE = "choice"
# emojivoto's voting service fails every vote for it, on purpose: a 500 that is the expected answer.
BROKEN_CHOICE = ":doughnut:"
FALLBACK_SHORTCODES = (":joy:", ":sunglasses:", ":rocket:")

logger = logging.getLogger("loadtest")


class EmojiVoter(FastHttpUser):
    """A visitor of emojivoto: browses the list most, votes for a random emoji often, reads the leaderboard."""

    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.shortcodes = self._list() or list(FALLBACK_SHORTCODES)

    @task(3)
    def list_emojis(self) -> None:
        self._list()

    @task(2)
    def vote(self) -> None:
        choice = random.choice(self.shortcodes)
        with self.client.get(VOTE_PATH, params={CHOICE: choice}, name=VOTE_PATH, catch_response=True) as response:
            if response.status_code == 500 and choice == BROKEN_CHOICE:
                response.success()

    @task(1)
    def leaderboard(self) -> None:
        self.client.get(LEADERBOARD_PATH, name=LEADERBOARD_PATH)

    def _list(self) -> list[str]:
        with self.client.get(LIST_PATH, name=LIST_PATH, catch_response=True) as response:
            if response.status_code != 200:
                return []
            try:
                return [str(item["shortcode"]) for item in response.json()]
            except (ValueError, TypeError, KeyError):
                response.failure("the emoji list is not a JSON list of emojis")
                return []


class TraceCheck:
    """One locust process's recorder, and the verdict when its test stops."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.recorder = Recorder(self.options.trace_max_records)

    def on_test_start(self, **kwargs: Any) -> None:
        self.recorder.clear()

    def on_request(self, name: str, response: Any, start_time: float, **kwargs: Any) -> None:
        if not getattr(response, "status_code", 0):
            # No response at all (connection refused, timeout): locust counts the failure; no trace was announced.
            self.recorder.unanswered()
            return
        headers = getattr(response, "headers", None)
        self.recorder.response(name, start_time, headers.get(TRACERESPONSE) if headers is not None else None)

    def on_test_stop(self, environment: Environment, **kwargs: Any) -> None:
        recording = self.recorder.recording(stopped=time.time())
        runner = environment.runner
        if isinstance(runner, MasterRunner):
            return
        if isinstance(runner, WorkerRunner):
            # The master holds no records: each worker keeps its own, and one checker run reads them all.
            if self.options.trace_records:
                path = Path(f"{self.options.trace_records}.worker{runner.worker_index}")
                save_recording(path, recording)
                logger.info("trace records of this worker in %s", path)
            return
        if self.options.trace_records:
            save_recording(Path(self.options.trace_records), recording)
        if self.options.skip_trace_check:
            return
        status = check_and_report(
            recording,
            self.check_options(),
            Path(self.options.trace_report) if self.options.trace_report else None,
            out=lambda text: print(text, flush=True),
            log=logger.info,
        )
        if status != EXIT_PASSED and not environment.process_exit_code:
            environment.process_exit_code = status

    def on_quitting(self, environment: Environment, **kwargs: Any) -> None:
        # Interrupted (Ctrl-C, SIGTERM), locust takes its exit status right after this event and stops the runner
        # only later: stopping it now lets the verdict count. A runner already stopped returns at once.
        if isinstance(environment.runner, LocalRunner):
            environment.runner.stop()

    def check_options(self) -> CheckOptions:
        return CheckOptions(
            collector=self.options.trace_collector,
            expectations=expectations_from(self.options.trace_gateway_service, self.options.trace_expect),
            settle=self.options.trace_settle,
            timeout=self.options.trace_timeout,
            clock_skew=self.options.trace_clock_skew,
            check_unannounced=not self.options.trace_only_announced,
        )


def _add_arguments(parser: LocustArgumentParser, **kwargs: Any) -> None:
    parser.add_argument(
        "--trace-collector",
        default=DEFAULT_COLLECTOR,
        env_var="LOCUST_TRACE_COLLECTOR",
        help="Zipkin-API collector whose traces are checked when the test stops (default: %(default)s)",
    )
    parser.add_argument(
        "--trace-records", default="", env_var="LOCUST_TRACE_RECORDS", help="write the responses' records here"
    )
    parser.add_argument("--trace-report", default="", help="write the trace verdict as JSON here")
    parser.add_argument(
        "--trace-gateway-service",
        default=DEFAULT_GATEWAY_SERVICE,
        help="the gateway's GATEWAY_SERVICE_NAME (default: %(default)s)",
    )
    parser.add_argument(
        "--trace-expect",
        type=parse_expectation,
        action="append",
        default=[],
        help="ENDPOINT=SERVICE,... whose spans a trace of ENDPOINT must hold besides the gateway's (repeatable)",
    )
    parser.add_argument(
        "--trace-settle",
        type=float,
        default=DEFAULT_SETTLE,
        help="seconds without a new span before judging (default: %(default)s)",
    )
    parser.add_argument(
        "--trace-timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait at most (default: %(default)s)"
    )
    parser.add_argument(
        "--trace-clock-skew",
        type=float,
        default=DEFAULT_CLOCK_SKEW,
        help="seconds by which this host's clock and the services' may differ (default: %(default)s)",
    )
    parser.add_argument(
        "--trace-only-announced",
        action="store_true",
        help="judge only the traces the responses announced (a collector other traffic reports to)",
    )
    parser.add_argument(
        "--trace-max-records",
        type=int,
        default=DEFAULT_MAX_RECORDS,
        help="responses recorded at most; beyond, the check fails (default: %(default)s)",
    )
    parser.add_argument("--skip-trace-check", action="store_true", help="record, but do not check the traces")


def _on_init(environment: Environment, **kwargs: Any) -> None:
    if environment.parsed_options is None:
        # Run from the library API without locust's argument parser: no options, no trace check.
        return
    # locust logs at INFO from the root logger; the check's many GETs would drown its verdict.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    trace_check = TraceCheck(environment.parsed_options)
    _listen(environment.events.test_start, trace_check.on_test_start)
    _listen(environment.events.request, trace_check.on_request)
    _listen(environment.events.test_stop, trace_check.on_test_stop)
    _listen(environment.events.quitting, trace_check.on_quitting)
    if isinstance(environment.runner, MasterRunner):
        records = environment.parsed_options.trace_records
        if records:
            logger.warning(
                "distributed run: the traces are checked by `python -m loadtest.check --records %s.worker0 "
                "--records %s.worker1 ...` (one per worker) once the run is over",
                records,
                records,
            )
        else:
            logger.warning("distributed run: no trace check; give --trace-records FILE to check the workers' records")


def _listen(hook: EventHook, listener: Callable[..., None]) -> None:
    hook.add_listener(listener)  # type: ignore[no-untyped-call]  # locust's EventHook is not annotated


_listen(events.init_command_line_parser, _add_arguments)
_listen(events.init, _on_init)

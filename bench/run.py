"""`make bench`: the gateway, with its defaults, side by side with nginx and the Python ceiling under wrk (issue 22).

Usage: .venv/bin/python bench/run.py [--quick] [--rounds N] [--duration S] ...; see bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import procfs
import report
import targets
import wrk
from figures import (
    PAIRED,
    WARMUP,
    Check,
    ProcessMemory,
    Run,
    every_core_text,
    sink_check,
    target_checks,
    validity_checks,
)
from plan import BODIES, GATEWAY_RATE_0, GATEWAY_RATE_1, TARGETS, UPSTREAM, Body, Target
from services import LOOPBACK, Service, ServiceError

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_DIR = Path(__file__).resolve().parent.parent
TOOLS = ("nginx", "wrk", "taskset")
QUICK = {"rounds": 1, "duration": 2, "warmup": 1, "pairs": 1, "pair_duration": 2}
DEFAULTS = {"rounds": 3, "duration": 10, "warmup": 2, "pairs": 6, "pair_duration": 3}
RSS_SAMPLE_SECONDS = 0.1
PRECHECK_TIMEOUT = 30.0
# After wrk stops, the spans of the last requests are still in the gateway's queue: it flushes a batch
# every second by default. Wait until the expected count has arrived and nothing came for a while.
SPANS_QUIET_SECONDS = 1.5
SPANS_MISSING_QUIET_SECONDS = 3.0
SPANS_DEADLINE_SECONDS = 20.0
EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (make bench installs them)", file=sys.stderr)
        return EXIT_ERROR
    signal.signal(signal.SIGTERM, _interrupt)
    bench = Bench(args)
    # The benchmark's own work (sampling, the sink's bookkeeping) stays off the proxy's CPUs.
    os.sched_setaffinity(0, bench.load_cpus)
    print(bench.header(), flush=True)
    outcome = "complete"
    with tempfile.TemporaryDirectory(prefix="ingress-bench-") as workdir, ExitStack() as stack:
        try:
            bench.start(stack, Path(workdir))
            bench.measure_all()
            bench.sink_stats = bench.read_sink_stats()
        except KeyboardInterrupt:
            outcome = "interrupted"
        except (ServiceError, wrk.WrkError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            outcome = "error"
        print("stopping every process the benchmark started, by pid", flush=True)
    return bench.finish(outcome)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s after a 1 s warm-up")
    parser.add_argument("--rounds", type=_positive, help=f"interleaved rounds (default {DEFAULTS['rounds']})")
    parser.add_argument("--duration", type=_positive, help=f"seconds per wrk run (default {DEFAULTS['duration']})")
    parser.add_argument("--warmup", type=_natural, help=f"unrecorded seconds first (default {DEFAULTS['warmup']})")
    parser.add_argument(
        "--pairs",
        type=_natural,
        help=f"pairs of short runs of the gateway at rates 0.0 and 1.0 after the rounds (default {DEFAULTS['pairs']})",
    )
    parser.add_argument(
        "--pair-duration", type=_positive, help=f"seconds per paired run (default {DEFAULTS['pair_duration']})"
    )
    parser.add_argument("--connections", type=_positive, default=32, help="wrk -c (default 32)")
    parser.add_argument("--threads", type=_positive, default=1, help="wrk -t (default 1)")
    parser.add_argument("--targets", type=_names({t.name for t in TARGETS}), help="comma-separated subset")
    parser.add_argument("--bodies", type=_names({b.name for b in BODIES}), help="comma-separated subset")
    parser.add_argument("--load-cpus", type=_cpus, help="CPUs of wrk, upstream and sink (default: the first)")
    parser.add_argument("--proxy-cpus", type=_cpus, help="CPUs of the proxy under test (default: the others)")
    parser.add_argument(
        "--gateway-env", action="append", default=[], metavar="NAME=VALUE", help="extra gateway setting, repeatable"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    for name, default in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if any("=" not in item for item in args.gateway_env):
        parser.error("--gateway-env takes NAME=VALUE")
    return args


class Bench:
    """One benchmark: its processes, the runs so far, and what it prints and writes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.targets = [t for t in TARGETS if args.targets is None or t.name in args.targets]
        self.bodies = [b for b in BODIES if args.bodies is None or b.name in args.bodies]
        self.load_cpus, self.proxy_cpus = _choose_cpus(args.load_cpus, args.proxy_cpus)
        self.gateway_env = dict(item.split("=", 1) for item in args.gateway_env)
        self.started_at = datetime.now(UTC)
        self.services: dict[str, Service] = {}
        self.unavailable: dict[str, str] = {}
        self.runs: list[Run] = []
        self.sink_stats: dict[str, int] = {}
        self._sink: Service | None = None

    def cpus_for(self, target: Target) -> list[int]:
        if target.name == UPSTREAM:
            return self.load_cpus
        if target.every_cpu:
            # Several workers on several cores: on a 2-CPU machine one of them is the load's.
            return sorted({*self.load_cpus, *self.proxy_cpus})[: max(target.workers, 2)]
        # Every other proxy gets the same CPU budget: one core.
        return self.proxy_cpus[:1]

    def header(self) -> str:
        a = self.args
        return (
            f"wrk -t{a.threads} -c{a.connections} -d{a.duration}s --latency; {_plural(a.rounds, 'round')}"
            f" after a {a.warmup} s warm-up{' (quick mode: a smoke run, figures are indicative)' if a.quick else ''}\n"
            f"CPUs: wrk, upstream and span sink on {_cpu_text(self.load_cpus)};"
            f" proxies on {_cpu_text(self.proxy_cpus[:1])}, the every-core rows on all of them\n"
            f"gateway: default settings ({', '.join(f'{k}={v}' for k, v in targets.gateway_defaults().items())})"
            + (f", and {self.gateway_env}" if self.gateway_env else "")
        )

    def start(self, stack: ExitStack, workdir: Path) -> None:
        self._sink = targets.start_sink(stack, workdir, self.load_cpus)
        upstream = targets.start_upstream(stack, workdir, self.load_cpus)
        for body in self.bodies:
            _precheck(upstream, body)
        for target in self.targets:
            service = None
            try:
                service = targets.start_target(
                    stack,
                    target,
                    workdir=workdir,
                    cpus=self.cpus_for(target),
                    upstream=upstream,
                    sink=self._sink,
                    gateway_extra=self.gateway_env,
                )
                for body in self.bodies:
                    _precheck(service, body)
            except ServiceError as exc:
                self.unavailable[target.name] = str(exc)
                print(f"{target.label}: not available: {exc}", flush=True)
                if service is not None and service is not upstream:
                    service.stop()
                continue
            self.services[target.name] = service
            print(f"{target.label}: pid {service.pid} on {service.url}", flush=True)

    def measure_all(self) -> None:
        ready = [t for t in self.targets if t.name in self.services]
        if self.args.warmup:
            for body in self.bodies:
                for target in ready:
                    self.measure(target, body, WARMUP, self.args.warmup)
        for round_ in range(self.args.rounds):
            # Round-robin, starting one target later each round, so no target always follows the same one.
            order = ready[round_ % len(ready) :] + ready[: round_ % len(ready)] if ready else []
            for body in self.bodies:
                for target in order:
                    self.measure(target, body, round_, self.args.duration)
        # Then the two rates of the gateway, back to back in short runs, in turn first (A B, B A, ...): a second
        # estimate of tracing's cost, whose two sides saw the machine seconds apart.
        pair = [t for t in ready if t.name in (GATEWAY_RATE_0, GATEWAY_RATE_1)]
        if len(pair) == 2:
            for body in self.bodies:
                for index in range(self.args.pairs):
                    for target in pair if index % 2 == 0 else pair[::-1]:
                        self.measure(target, body, PAIRED + index, self.args.pair_duration)

    def measure(self, target: Target, body: Body, round_: int, seconds: int) -> None:
        service = self.services[target.name]
        pids = service.tree()
        names = {pid: stat.name for pid in pids if (stat := procfs.read_stat(pid)) is not None}
        traced = target.spans_per_request is not None
        spans_before = self.read_sink_stats()["spans"] if traced else 0
        own_cpus = self.cpus_for(target)
        cpu_before = procfs.cpu_seconds(pids)
        ticks_before = procfs.read_cpu_ticks()
        with RssSampler(pids) as rss:
            result, text = wrk.run(
                service.url + body.path,
                cpus=self.load_cpus,
                seconds=seconds,
                connections=self.args.connections,
                threads=self.args.threads,
            )
        ticks_after = procfs.read_cpu_ticks()
        cpu_under_load = procfs.cpu_seconds(pids) - cpu_before
        busy = procfs.busy_percent(ticks_before, ticks_after)
        interrupts = procfs.interrupts_percent(ticks_before, ticks_after)
        spans = None
        if traced:
            spans = self.await_spans(spans_before, (target.spans_per_request or 0.0) * result.requests)
        cpu_seconds = procfs.cpu_seconds(pids) - cpu_before
        proxy_busy = _mean(busy[cpu] for cpu in own_cpus)
        own_percent = 100.0 * cpu_under_load / procfs.elapsed_seconds(ticks_before, ticks_after, own_cpus)
        # Interrupt time is not charged to any process but is mostly the proxy's own loopback traffic.
        other_percent = proxy_busy - _mean(interrupts[cpu] for cpu in own_cpus) - own_percent
        run = Run(
            target=target.name,
            body=body.name,
            round=round_,
            wrk=result,
            wrk_report=text,
            cpu_seconds=cpu_seconds,
            memory=tuple(
                ProcessMemory(pid, names.get(pid, "?"), rss.start[pid], rss.peak[pid], procfs.rss_bytes(pid) or 0)
                for pid in pids
            ),
            busy_percent=busy,
            load_busy_percent=_mean(busy[cpu] for cpu in self.load_cpus),
            proxy_busy_percent=proxy_busy,
            other_busy_percent=max(0.0, other_percent),
            spans=spans,
            alive=service.alive(),
        )
        self.runs.append(run)
        print(_progress(run, self.args.rounds), flush=True)

    def await_spans(self, before: int, expected: float) -> int:
        """Spans received since `before`, once the expected ones arrived or none came for a while (bounded)."""
        start = last_change = time.monotonic()
        received = last = self.read_sink_stats()["spans"] - before
        while True:
            now = time.monotonic()
            quiet = now - last_change
            enough = received >= expected and quiet >= SPANS_QUIET_SECONDS
            if enough or quiet >= SPANS_MISSING_QUIET_SECONDS or now - start >= SPANS_DEADLINE_SECONDS:
                return received
            time.sleep(0.1)
            received = self.read_sink_stats()["spans"] - before
            if received != last:
                last, last_change = received, time.monotonic()

    def read_sink_stats(self) -> dict[str, int]:
        assert self._sink is not None
        return targets.sink_stats(self._sink)

    def checks(self) -> list[Check]:
        gateways = [t.name for t in self.targets if t.is_gateway]
        found = target_checks(self.runs, [b.name for b in self.bodies], gateways)
        found += validity_checks(self.runs, self.targets)
        if self.sink_stats:
            found.append(sink_check(self.sink_stats))
        return found

    def finish(self, outcome: str) -> int:
        checks = self.checks()
        complete = outcome == "complete"
        rounds = _plural(self.args.rounds, "round")
        for body in self.bodies:
            print(f"\n== {body.name} body ({len(body.content)} B): median over {rounds} (min-max) ==")
            print(report.table(self.runs, self.targets, body, self.unavailable))
        print(
            "\nbusy %: use of the load CPUs, of the proxy's CPUs, and of the proxy's CPUs by anything else;"
            " RSS: its largest process"
        )
        for name, reason in self.unavailable.items():
            print(f"not available: {name}:\n    " + "\n    ".join(reason.splitlines()))
        print("\n== issue 22 targets ==")
        print(report.checks_text([c for c in checks if c.kind == "target"]))
        print("\n== every core: 2 workers beside nginx's 2 (not a target) ==")
        print(every_core_text(self.runs, [b.name for b in self.bodies]))
        print("\n== validity ==")
        print(report.checks_text([c for c in checks if c.kind != "target"]))
        doc = report.document(
            meta=self.meta(),
            targets=self.targets,
            bodies=self.bodies,
            unavailable=self.unavailable,
            runs=self.runs,
            checks=checks,
            complete=complete,
        )
        path = _write_results(doc, self.args.results_dir, self.started_at, quick=self.args.quick, latest=complete)
        print(f"\nresults: {path}" + ("" if complete else f" (incomplete: {outcome}; latest.json left as it was)"))
        if outcome == "interrupted":
            return EXIT_INTERRUPTED
        if outcome == "error":
            return EXIT_ERROR
        return 0 if doc["passed"] else EXIT_FAILED

    def meta(self) -> dict[str, Any]:
        a = self.args
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "command": [sys.executable, *sys.argv],
            "settings": {
                "quick": a.quick,
                "rounds": a.rounds,
                "duration_s": a.duration,
                "warmup_s": a.warmup,
                "pairs": a.pairs,
                "pair_duration_s": a.pair_duration,
                "wrk_connections": a.connections,
                "wrk_threads": a.threads,
                "gateway_env": self.gateway_env,
                "gateway_defaults": {k: str(v) for k, v in targets.gateway_defaults().items()},
            },
            "cpus": {
                "load": self.load_cpus,
                "proxy": self.proxy_cpus,
                "per_target": {t.name: self.cpus_for(t) for t in self.targets},
            },
            "sink": self.sink_stats,
            "environment": _environment(),
        }


class RssSampler:
    """Resident memory of fixed pids: at entry, then the peak, sampled in a thread until exit."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = list(pids)
        self.start = {pid: procfs.rss_bytes(pid) or 0 for pid in self._pids}
        self.peak = dict(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            self._sample()

    def _sample(self) -> None:
        for pid in self._pids:
            self.peak[pid] = max(self.peak[pid], procfs.rss_bytes(pid) or 0)


def _precheck(service: Service, body: Body) -> None:
    """One request before any load: a benchmark of error pages or wrong bodies is worthless."""
    try:
        status, content = _get(service.port, body.path, timeout=PRECHECK_TIMEOUT)
    except OSError as exc:
        raise ServiceError(f"{service.name}: GET {body.path} failed: {exc}\n{service.log_tail()}") from exc
    if status != 200 or content != body.content:
        raise ServiceError(
            f"{service.name}: GET {body.path} answered {status} with {len(content)} bytes,"
            f" not 200 with the {len(body.content)}-byte body\n{service.log_tail()}"
        )


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _choose_cpus(load: list[int] | None, proxy: list[int] | None) -> tuple[list[int], list[int]]:
    available = sorted(os.sched_getaffinity(0))
    load = load or available[:1]
    proxy = proxy or [cpu for cpu in available if cpu not in load]
    if not proxy or set(load) & set(proxy):
        raise SystemExit(f"needs separate CPUs for load and proxy; available: {available}")
    return load, proxy


def _progress(run: Run, rounds: int) -> str:
    if run.round == WARMUP:
        label = "warm-up"
    elif run.round >= PAIRED:
        label = f"pair {run.round - PAIRED + 1}"
    else:
        label = f"round {run.round + 1}/{rounds}"
    spans = "" if run.spans_per_request is None else f"  spans/req {run.spans_per_request:.2f}"
    errors = "" if run.wrk.clean else f"  ERRORS: {run.wrk.bad_status} bad, {run.wrk.socket_errors}"
    return (
        f"{label:<11} {run.body:<5} {run.target:<15} {run.wrk.requests_per_second:>9,.0f} req/s"
        f"  p99 {run.wrk.latency_ms['99']:7.2f} ms  {run.cpu_us_per_request:6.0f} us CPU/req{spans}{errors}"
    )


def _write_results(doc: dict[str, Any], directory: Path, started: datetime, *, quick: bool, latest: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{started:%Y%m%dT%H%M%SZ}{'-quick' if quick else ''}.json"
    text = json.dumps(doc, indent=1)
    path.write_text(text)
    if latest:
        (directory / "latest.json").write_text(text)
    return path


def _environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpus_online": os.cpu_count(),
        # nginx -v prints to stderr; wrk --version exits with 1.
        "nginx": _first_line(["nginx", "-v"], stderr=True),
        "wrk": _first_line(["wrk", "--version"]).split(" Copyright")[0],
        "git_commit": _first_line(["git", "-C", str(REPO_DIR), "rev-parse", "--verify", "-q", "HEAD"]) or None,
        "git_dirty": bool(_first_line(["git", "-C", str(REPO_DIR), "status", "--porcelain"])),
    }


def _first_line(args: list[str], *, stderr: bool = False) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stderr if stderr else done.stdout).strip().splitlines()
    return lines[0] if lines else ""


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _mean(values: Any) -> float:
    found = list(values)
    return sum(found) / len(found) if found else 0.0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _cpu_text(cpus: Sequence[int]) -> str:
    return ("CPU " if len(cpus) == 1 else "CPUs ") + ",".join(map(str, cpus))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _natural(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _cpus(text: str) -> list[int]:
    return sorted({int(cpu) for cpu in text.split(",")})


def _names(allowed: set[str]) -> Any:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = sorted(set(names) - allowed)
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {sorted(allowed)}")
        return names

    return parse


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so that every process the benchmark started is stopped.
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())

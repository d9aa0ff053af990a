"""`make soak` (python tools/soak.py): load for minutes against a flapping collector; memory, descriptors and tasks
must stay flat, and every sampled span must be delivered or counted.

It starts, on loopback, the e2e upstream, the devtools collector behind a proxy that fails it on a cycle (refusing,
resetting mid-POST, answering 503, hanging, in turn, then healthy again: tests/reliability/faults.py), and
`ingress-gateway`, then sends a steady mix of requests: plain, uploads, streamed downloads, upstream errors, clients
that leave mid-request, and hostile ones (a dot-segment path, an oversized head). Every --interval seconds it prints
the gateway's RSS, open file descriptors, asyncio tasks and span queue depth. At the end the collector is left
healthy until the queue drains, and the run fails (exit 1) when

  - RSS grew more than --max-rss-growth MiB, descriptors more than --max-fd-growth, or tasks more than
    --max-task-growth, from the first sample (taken once the gateway is warm) to any later one;
  - a request got an answer it should not have (a 5xx from the gateway, a connection error);
  - spans reported and spans dropped do not add up to two per sampled request, or a trace in the collector is
    partial, or the queue does not drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.conftest import GATEWAY_BIN, Metrics, gateway_env  # noqa: E402
from tests.reliability.faults import CollectorFault, CollectorProxy  # noqa: E402
from tests.support import LOOPBACK, RunningProcess, free_port, python_module, running_process  # noqa: E402

QUEUE_SPANS = 2000
FAULTS = [
    (CollectorFault.REFUSE, 0),
    (CollectorFault.RESET, 0),
    (CollectorFault.STATUS, 503),
    (CollectorFault.BLACKHOLE, 0),
]


@dataclass
class Sample:
    at: float
    rss_kib: int
    fds: int
    tasks: float
    queue: float
    connections: float

    def line(self, requests: int) -> str:
        return (
            f"t={self.at:6.0f}s  rss={self.rss_kib / 1024:7.1f} MiB  fds={self.fds:4d}  tasks={self.tasks:4.0f}  "
            f"queue={self.queue:5.0f}  connections={self.connections:4.0f}  requests={requests}"
        )


@dataclass
class Tally:
    answers: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def record(self, kind: str, ok: bool, detail: str) -> None:
        self.answers[kind] += 1
        if not ok and len(self.unexpected) < 20:
            self.unexpected.append(f"{kind}: {detail}")
        if not ok:
            self.answers["unexpected"] += 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    work = REPO_ROOT / "build" / "soak"
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        upstream_port, collector_port = free_port(), free_port()
        stack.enter_context(
            running_process(
                python_module(
                    "uvicorn",
                    "tests.e2e.upstream_app:app",
                    "--host",
                    LOOPBACK,
                    "--port",
                    str(upstream_port),
                    "--log-level",
                    "warning",
                ),
                work / "upstream.log",
                wait_ports=[upstream_port],
            )
        )
        stack.enter_context(
            running_process(
                python_module("gateway_devtools.collector", "--host", LOOPBACK, "--port", str(collector_port)),
                work / "collector.log",
                wait_ports=[collector_port],
            )
        )
        proxy = CollectorProxy(collector_port)
        stack.callback(proxy.close)
        env = gateway_env(
            None,
            None,
            upstream_url=f"http://{LOOPBACK}:{upstream_port}",
            zipkin_url=proxy.spans_url,
            sample_rate=args.sample_rate,
            reporter_queue_size=QUEUE_SPANS,
            reporter_timeout=2,
            access_log=False,
            log_level="warning",
        )
        port, admin_port = int(env["GATEWAY_PORT"]), int(env["GATEWAY_ADMIN_PORT"])
        gateway = stack.enter_context(
            running_process([GATEWAY_BIN], work / "gateway.log", env=env, wait_ports=[port, admin_port])
        )
        print(
            f"soak: {args.minutes:g} min, about {args.rate} requests/s, a sample every {args.interval:g} s; "
            f"collector down {args.down:g} s in every {args.down + args.up:g} s; logs in {work}",
            flush=True,
        )
        return _soak(args, gateway, port, admin_port, proxy, collector_port)
    return 1


def _soak(
    args: argparse.Namespace,
    gateway: RunningProcess,
    port: int,
    admin_port: int,
    proxy: CollectorProxy,
    collector_port: int,
) -> int:
    tally = Tally()
    stop = threading.Event()
    load = threading.Thread(target=lambda: asyncio.run(_load(port, args, tally, stop)), name="load", daemon=True)
    flapping = threading.Thread(target=_flap, args=(proxy, args.down, args.up, stop), name="flap", daemon=True)
    started = time.monotonic()
    load.start()
    flapping.start()
    samples: list[Sample] = []
    deadline = started + args.minutes * 60
    while time.monotonic() < deadline:
        time.sleep(max(0.0, min(args.interval, deadline - time.monotonic())))
        if gateway.popen.poll() is not None:
            print(f"FAIL: the gateway exited with {gateway.popen.returncode}", flush=True)
            stop.set()
            return 1
        sample = _sample(gateway.pid, admin_port, time.monotonic() - started)
        samples.append(sample)
        print(sample.line(sum(tally.answers.values()) - tally.answers["unexpected"]), flush=True)
    stop.set()
    load.join(60)
    flapping.join(30)
    proxy.heal()

    drained = _wait(lambda: _metrics(admin_port).value("gateway_span_queue_depth") == 0, timeout=120)
    final = _sample(gateway.pid, admin_port, time.monotonic() - started)
    print(final.line(sum(tally.answers.values())) + "  (load stopped, collector healthy)", flush=True)
    problems = _bounds(args, samples + [final])
    if not drained:
        problems.append(f"the span queue did not drain once the collector was healthy ({final.queue:.0f} left)")
    problems += _books(_metrics(admin_port), collector_port)
    if tally.unexpected:
        problems.append(f"{tally.answers['unexpected']} unexpected answers, e.g. {tally.unexpected[:5]}")
    print("answers: " + ", ".join(f"{kind}={count}" for kind, count in sorted(tally.answers.items())), flush=True)
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}", flush=True)
        return 1
    print(f"PASS: {len(samples)} samples, RSS, descriptors and tasks within bounds, every span accounted for")
    return 0


def _bounds(args: argparse.Namespace, samples: list[Sample]) -> list[str]:
    if len(samples) < 2:
        return ["fewer than two samples: run longer than --interval"]
    first = samples[0]
    problems = []
    for name, grown, bound, unit in (
        ("RSS", max(s.rss_kib for s in samples) / 1024 - first.rss_kib / 1024, args.max_rss_growth, "MiB"),
        ("open descriptors", max(s.fds for s in samples) - first.fds, args.max_fd_growth, ""),
        ("asyncio tasks", max(s.tasks for s in samples) - first.tasks, args.max_task_growth, ""),
    ):
        if grown > bound:
            problems.append(f"{name} grew by {grown:.1f}{unit} (bound {bound}{unit}) from the first sample")
    if max(s.queue for s in samples) > QUEUE_SPANS:
        problems.append(f"span queue deeper than its bound {QUEUE_SPANS}")
    return problems


def _books(metrics: Metrics, collector_port: int) -> list[str]:
    sampled = metrics.value("gateway_requests_total", decision="sampled")
    reported = metrics.value("gateway_spans_reported_total")
    dropped = metrics.value("gateway_spans_dropped_total")
    problems = []
    if reported + dropped != 2 * sampled:
        problems.append(f"{2 * sampled:.0f} spans sampled, {reported:.0f} reported + {dropped:.0f} dropped")
    traces = httpx.get(f"http://{LOOPBACK}:{collector_port}/api/v2/traces", params={"limit": 10**7}, timeout=60).json()
    partial = [trace for trace in traces if sorted(span.get("kind") for span in trace) != ["CLIENT", "SERVER"]]
    stored = sum(len(trace) for trace in traces)
    if partial:
        problems.append(f"{len(partial)} partial traces in the collector, e.g. {partial[0]}")
    # A POST the collector stored but whose answer was lost (a reset) is retried: stored once, reported once; if its
    # retries then run out, it is also counted dropped. So the collector holds no fewer than reported spans, and no
    # more than reported and dropped ones.
    if not reported <= stored <= reported + dropped:
        problems.append(f"{reported:.0f} spans reported and {dropped:.0f} dropped, yet {stored} in the collector")
    print(
        f"books: {sampled:.0f} sampled requests, {reported:.0f} spans reported, {dropped:.0f} dropped "
        f"({', '.join(_drops(metrics))}), {stored} stored in {len(traces)} traces",
        flush=True,
    )
    return problems


def _drops(metrics: Metrics) -> list[str]:
    reasons = ("queue_full", "rejected", "retries_exhausted", "shutdown", "encode_error")
    return [f"{reason}={metrics.value('gateway_spans_dropped_total', reason=reason):.0f}" for reason in reasons]


def _sample(pid: int, admin_port: int, at: float) -> Sample:
    metrics = _metrics(admin_port)
    return Sample(
        at=at,
        rss_kib=_rss_kib(pid),
        fds=len(list(Path(f"/proc/{pid}/fd").iterdir())),
        tasks=metrics.value("gateway_event_loop_tasks"),
        queue=metrics.value("gateway_span_queue_depth"),
        connections=metrics.value("gateway_client_connections"),
    )


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _metrics(admin_port: int) -> Metrics:
    return Metrics.parse(httpx.get(f"http://{LOOPBACK}:{admin_port}/metrics", timeout=10).text)


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def _flap(proxy: CollectorProxy, down: float, up: float, stop: threading.Event) -> None:
    """Healthy for `up` seconds, failing for `down` (each fault in turn), until told to stop."""
    for fault, status in itertools.cycle(FAULTS):
        if stop.wait(up):
            return
        proxy.fail(fault, status=status)
        if stop.wait(down):
            return
        proxy.heal()


async def _load(port: int, args: argparse.Namespace, tally: Tally, stop: threading.Event) -> None:
    base = f"http://{LOOPBACK}:{port}"
    pacer = asyncio.Semaphore(0)

    async def pace() -> None:
        while not stop.is_set():
            pacer.release()
            await asyncio.sleep(1 / args.rate)
        for _ in range(args.concurrency):
            pacer.release()

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=args.concurrency)) as http:

        async def worker() -> None:
            while True:
                await pacer.acquire()
                if stop.is_set():
                    return
                await _one_request(http, base, port, tally)

        await asyncio.gather(pace(), *(worker() for _ in range(args.concurrency)))


async def _one_request(http: httpx.AsyncClient, base: str, port: int, tally: Tally) -> None:
    roll = random.random()
    try:
        if roll < 0.70:
            response = await http.get(f"{base}/soak/{random.randrange(10**6)}")
            tally.record("get", response.status_code == 200, str(response.status_code))
        elif roll < 0.80:
            body = random.randbytes(random.randrange(1, 256 * 1024))
            response = await http.post(f"{base}/upload", content=body)
            ok = response.status_code == 200 and response.json()["length"] == len(body)
            tally.record("upload", ok, response.text[:100])
        elif roll < 0.85:
            async with http.stream("GET", f"{base}/stream", params={"size": 1024 * 1024}) as response:
                size = sum([len(chunk) async for chunk in response.aiter_raw()])
            tally.record("download", response.status_code == 200 and size == 1024 * 1024, f"{size} bytes")
        elif roll < 0.90:
            response = await http.get(f"{base}/status/503")
            tally.record("upstream_503", response.status_code == 503, str(response.status_code))
        elif roll < 0.95:
            # A client that gives up mid-request; the gateway must cancel the upstream call and forget it.
            with contextlib.suppress(httpx.TimeoutException):
                await http.get(f"{base}/sleep", params={"seconds": 2}, timeout=0.2)
            tally.record("abandoned", True, "")
        else:
            answer = await _raw(port, random.choice(_HOSTILE))
            ok = answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 "))
            tally.record("hostile", ok, answer[:60].decode("latin-1"))
    except (httpx.HTTPError, OSError) as exc:
        tally.record("error", False, repr(exc))


_HOSTILE = [
    b"GET /a/../admin HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n",
]


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        with contextlib.suppress(OSError):
            writer.write(request)
            await writer.drain()
        return await asyncio.wait_for(reader.read(200), 10)
    except ConnectionError:
        return b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/soak.py", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most (default: %(default)s)")
    parser.add_argument("--sample-rate", type=float, default=0.5, help="GATEWAY_SAMPLE_RATE (default: %(default)s)")
    parser.add_argument("--down", type=float, default=8.0, help="seconds the collector fails (default: %(default)s)")
    parser.add_argument("--up", type=float, default=12.0, help="seconds it is healthy between (default: %(default)s)")
    parser.add_argument("--max-rss-growth", type=float, default=40.0, help="MiB (default: %(default)s)")
    parser.add_argument("--max-fd-growth", type=int, default=40, help="descriptors (default: %(default)s)")
    parser.add_argument("--max-task-growth", type=int, default=40, help="asyncio tasks (default: %(default)s)")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())

"""Real processes on loopback: the `ingress-gateway` under test, an upstream and a Zipkin-API collector.

The upstream and the collector live for the whole session (the collector is reset before each test that
uses it); every test starts its own gateways through the `start_gateway` factory, with env overrides.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.propagation.w3c import format_traceresponse, parse_traceresponse
from tests.support import LOOPBACK, RunningProcess, free_port, python_module, running_process

GATEWAY_BIN = str(Path(sys.executable).with_name("ingress-gateway"))
SERVICE_NAME = "e2e-gateway"
HEX_TRACE_ID = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")
HEX_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# --- the upstream ---------------------------------------------------------------------------------------


@dataclass
class Upstream:
    process: RunningProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def authority(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def events(self, token: str) -> list[str]:
        response = httpx.get(f"{self.url}/events", params={"token": token}, timeout=5)
        response.raise_for_status()
        return list(response.json()["events"])

    def wait_for_event(self, token: str, event: str, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        seen = self.events(token)
        while event not in seen and time.monotonic() < deadline:
            time.sleep(0.02)
            seen = self.events(token)
        return seen


@contextlib.contextmanager
def running_upstream_app(log_dir: Path) -> Iterator[Upstream]:
    """A process of the e2e upstream app (``upstream_app.py``) on a free port, stopped by its PID on exit."""
    port = free_port()
    args = python_module(
        "uvicorn", "tests.e2e.upstream_app:app", "--host", LOOPBACK, "--port", str(port), "--log-level", "warning"
    )
    with running_process(args, log_dir / "upstream.log", wait_ports=[port]) as process:
        yield Upstream(process, port)


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with running_upstream_app(tmp_path_factory.mktemp("upstream")) as running:
        yield running


# --- the collector --------------------------------------------------------------------------------------


@dataclass
class Collector:
    process: RunningProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def spans_url(self) -> str:
        return f"{self.url}/api/v2/spans"

    def reset(self) -> None:
        httpx.post(f"{self.url}/api/v2/_reset", timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v2/_stats", timeout=5)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        # A batch the collector refused means the gateway sent spans Zipkin's API does not accept.
        assert stats["requestsRejected"] == 0, f"the collector rejected spans: {stats['lastRejection']}"
        return stats

    def spans(self) -> list[dict[str, Any]]:
        """Every span stored (of any service), after checking that no batch was rejected."""
        self.stats()
        response = httpx.get(f"{self.url}/api/v2/traces", params={"limit": 100_000}, timeout=10)
        response.raise_for_status()
        return [span for trace in response.json() for span in trace]

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v2/trace/{trace_id}", timeout=5)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return list(response.json())

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll until at least `count` spans arrived, or `timeout` passed; return what is there."""
        deadline = time.monotonic() + timeout
        while self.stats()["spans"] < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.spans()


@contextlib.contextmanager
def run_collector(log_dir: Path, *extra: str) -> Iterator[Collector]:
    port = free_port()
    args = python_module("gateway_devtools.collector", "--host", LOOPBACK, "--port", str(port), *extra)
    with running_process(args, log_dir / f"collector-{port}.log", wait_ports=[port]) as process:
        yield Collector(process, port)


@pytest.fixture(scope="session")
def session_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    with run_collector(tmp_path_factory.mktemp("collector")) as collector:
        yield collector


@pytest.fixture
def collector(session_collector: Collector) -> Collector:
    session_collector.reset()
    return session_collector


@pytest.fixture
def collector_factory(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    """Start an extra collector with its own flags (--response-delay, --fail-first) for one test."""
    with contextlib.ExitStack() as stack:

        def start(*extra: str) -> Collector:
            return stack.enter_context(run_collector(tmp_path, *extra))

        yield start


# --- the gateway ----------------------------------------------------------------------------------------


@dataclass
class Gateway:
    process: RunningProcess
    port: int
    admin_port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def metrics(self) -> Metrics:
        response = httpx.get(f"{self.admin_url}/metrics", timeout=5)
        response.raise_for_status()
        return Metrics.parse(response.text)

    def sigterm_and_wait(self, timeout: float = 20.0) -> int:
        """SIGTERM by PID and wait for the exit code (a hang fails the test instead of being killed silently)."""
        self.process.terminate()
        return self.process.popen.wait(timeout)

    def output(self) -> str:
        return self.process.output()


GatewayFactory = Callable[..., Gateway]


def gateway_env(upstream: Upstream | None, collector: Collector | None, **overrides: object) -> dict[str, str]:
    """GATEWAY_* variables: loopback ports, fast span export, rate 1.0; `overrides` win, None removes one."""
    settings: dict[str, object] = {
        "host": LOOPBACK,
        "port": free_port(),
        "admin_port": free_port(),
        "upstream_url": upstream.url if upstream else None,
        "zipkin_url": collector.spans_url if collector else None,
        "service_name": SERVICE_NAME,
        "sample_rate": 1.0,
        "reporter_flush_interval": 0.1,
        "shutdown_timeout": 10,
        "log_level": "info",
        **overrides,
    }
    return {f"GATEWAY_{name.upper()}": _env_value(value) for name, value in settings.items() if value is not None}


@contextlib.contextmanager
def run_gateway(log_dir: Path, env: dict[str, str], ready_timeout: float = 20.0) -> Iterator[Gateway]:
    port, admin_port = int(env["GATEWAY_PORT"]), int(env["GATEWAY_ADMIN_PORT"])
    log = log_dir / f"gateway-{port}.log"
    with running_process([GATEWAY_BIN], log, env=env, wait_ports=[port, admin_port], timeout=ready_timeout) as process:
        gateway = Gateway(process, port, admin_port, env)
        _wait_until_ready(gateway, ready_timeout)
        yield gateway


@pytest.fixture
def start_gateway(tmp_path: Path, upstream: Upstream, collector: Collector) -> Iterator[GatewayFactory]:
    """`start_gateway(sample_rate=0.3, zipkin_url=None, ...)` -> a ready gateway, stopped by PID after the test."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: object) -> Gateway:
            return stack.enter_context(run_gateway(tmp_path, gateway_env(upstream, collector, **overrides)))

        yield start


def _wait_until_ready(gateway: Gateway, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if gateway.process.popen.poll() is not None:
            break
        try:
            response = httpx.get(f"{gateway.admin_url}/ready", timeout=1)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise RuntimeError(f"gateway not ready ({last})\n--- gateway output ---\n{gateway.output()}")


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- what the upstream saw, what /metrics says ----------------------------------------------------------


@dataclass(frozen=True)
class Echo:
    """The upstream's echo of one request."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body_length: int

    @classmethod
    def of(cls, response: httpx.Response) -> Echo:
        assert response.status_code == 200, (response.status_code, response.text[:500])
        data = response.json()
        headers = [(name, value) for name, value in data["headers"]]
        return cls(data["method"], data["path"], data["query"], headers, data["body_length"])

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def one(self, name: str) -> str:
        values = self.all(name)
        assert len(values) == 1, f"upstream got {name} {len(values)} times: {values} in {self.headers}"
        return values[0]

    def has(self, name: str) -> bool:
        return bool(self.all(name))


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Metrics:
    samples: list[Sample]
    text: str

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = []
        for line in text.splitlines():
            match = _SAMPLE_LINE.match(line)
            if match is None or line.startswith("#"):
                continue
            name, labels, value = match.groups()
            samples.append(Sample(name, dict(_LABEL.findall(labels or "")), float(value)))
        return cls(samples, text)

    def value(self, name: str, **labels: str) -> float:
        """The sum of every sample named `name` whose labels include `labels`."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name and all(sample.labels.get(key) == want for key, want in labels.items())
        )

    def has(self, name: str) -> bool:
        return any(sample.name == name for sample in self.samples)


def traceresponse(response: httpx.Response) -> tuple[str, str, bool]:
    """(32-hex trace id, 16-hex span id, sampled) from a response's `traceresponse` header."""
    values = response.headers.get_list("traceresponse")
    assert len(values) == 1, f"expected one traceresponse header, got {values}"
    return announced(values[0])


def announced(value: str) -> tuple[str, str, bool]:
    """(32-hex trace id, 16-hex span id, sampled) from a `traceresponse` value, which must be one the gateway writes
    (its flags 00 or 01)."""
    parsed = parse_traceresponse(value)
    assert parsed is not None and value == format_traceresponse(*parsed), f"malformed traceresponse {value!r}"
    trace_id, span_id, sampled = parsed
    return f"{trace_id:032x}", f"{span_id:016x}", sampled


def by_kind(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [span.get("kind") for span in spans]
    assert sorted(map(str, kinds)) == ["CLIENT", "SERVER"], f"expected one SERVER and one CLIENT span: {spans}"
    return {span["kind"]: span for span in spans}


def spans_by_trace(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        traces.setdefault(span["traceId"], []).append(span)
    return traces


def padded(trace_id: str) -> str:
    return trace_id.rjust(32, "0")


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """`field_name` (VmRSS, VmHWM) of `pid` and all its descendants, in KiB, from /proc."""
    total = 0
    for each in [pid, *descendants(pid)]:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith(f"{field_name}:"):
                    total += int(line.split()[1])
    return total


def descendants(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                children.extend(int(child) for child in (task / "children").read_text().split())
    return [grandchild for child in children for grandchild in [child, *descendants(child)]]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15) as http:
        yield http

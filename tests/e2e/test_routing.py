"""The route table with real processes: two upstreams at their own rates, and live reloads under traffic."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.sampling import RatioSampler
from tests.e2e.conftest import (
    GATEWAY_BIN,
    Collector,
    Echo,
    Gateway,
    GatewayFactory,
    Upstream,
    gateway_env,
    running_upstream_app,
    spans_by_trace,
    traceresponse,
    wait_for,
)
from tests.support import running_process

pytestmark = pytest.mark.e2e

QUIET_PERIOD = 0.6
RELOAD_WAIT = 15.0  # an upper bound for a reload to show, never an expectation
MAX_TRAFFIC_REQUESTS = 3000
MAX_TRAFFIC_SECONDS = 30.0


@pytest.fixture(scope="module")
def second_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """Another process of the e2e upstream app, on its own port."""
    with running_upstream_app(tmp_path_factory.mktemp("second-upstream")) as running:
        yield running


def write_routes(path: Path, text: str) -> Path:
    """Replaced whole, as an editor or a ConfigMap update does, so that no reader sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
    return path


def one_route(upstream: Upstream, name: str = "api") -> str:
    return f"routes:\n  - name: {name}\n    upstream: {upstream.url}\n"


def config(gateway: Gateway) -> dict[str, Any]:
    response = httpx.get(f"{gateway.admin_url}/config", timeout=5)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


@dataclass
class Traffic:
    """Requests sent one after another from a thread until stopped (or a bound is reached): each status, the
    upstream that answered (the Host the gateway gave it), and any error."""

    url: str
    served_by: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(MAX_TRAFFIC_SECONDS)

    def wait_for_more(self, count: int) -> None:
        target = len(self.served_by) + count
        assert wait_for(lambda: len(self.served_by) >= target or not self._running(), RELOAD_WAIT), "traffic stalled"

    def _running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        deadline = time.monotonic() + MAX_TRAFFIC_SECONDS
        with httpx.Client(timeout=10) as client:
            for index in range(MAX_TRAFFIC_REQUESTS):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    response = client.get(f"{self.url}/traffic/{index}")
                    if response.status_code != 200:
                        self.failures.append(f"#{index}: {response.status_code} {response.text[:200]}")
                        continue
                    self.served_by.append(Echo.of(response).one("host"))
                except httpx.HTTPError as exc:
                    self.failures.append(f"#{index}: {exc!r}")


# --- two upstreams, two rates -----------------------------------------------------------------------------------


def test_two_upstreams_behind_one_gateway_at_different_rates(
    start_gateway: GatewayFactory,
    upstream: Upstream,
    second_upstream: Upstream,
    collector: Collector,
    client: httpx.Client,
    tmp_path: Path,
) -> None:
    routes = write_routes(
        tmp_path / "routes.yaml",
        f"""
routes:
  - name: quarter
    path_prefix: /quarter
    upstream: {upstream.url}
    sample_rate: 0.25
    tags: {{side: first}}
  - name: most
    path_prefix: /most
    upstream: {second_upstream.url}
    sample_rate: 0.75
    span_name: "most {{method}}"
""",
    )
    gateway = start_gateway(routes_file=routes, upstream_url=None, sample_rate=0.0)
    rates = {"quarter": 0.25, "most": 0.75}
    served_by = {"quarter": upstream.authority, "most": second_upstream.authority}
    sampled: dict[str, set[str]] = {"quarter": set(), "most": set()}
    for index in range(60):
        for name, rate in rates.items():
            response = client.get(f"{gateway.url}/{name}/{index}")
            echo = Echo.of(response)
            assert echo.one("host") == served_by[name]
            trace_id, _, was_sampled = traceresponse(response)
            # The route's rate decides, deterministically from the trace id, as every replica would.
            assert was_sampled is RatioSampler(rate).should_sample(int(trace_id, 16)), (name, trace_id)
            assert echo.one("x-b3-sampled") == ("1" if was_sampled else "0")
            if was_sampled:
                sampled[name].add(trace_id)
    assert 0 < len(sampled["quarter"]) < len(sampled["most"]) < 60, {name: len(ids) for name, ids in sampled.items()}

    total = len(sampled["quarter"]) + len(sampled["most"])
    collector.wait_for_spans(2 * total)
    time.sleep(QUIET_PERIOD)
    traces = spans_by_trace(collector.spans())
    assert set(traces) == sampled["quarter"] | sampled["most"]
    for name, trace_ids in sampled.items():
        for trace_id in trace_ids:
            spans = traces[trace_id]
            assert len(spans) == 2
            assert {span["name"] for span in spans} == {"get quarter" if name == "quarter" else "most get"}
            assert all((span.get("tags", {}).get("side") == "first") is (name == "quarter") for span in spans)

    metrics = gateway.metrics()
    for name, trace_ids in sampled.items():
        assert metrics.value("gateway_requests_total", route=name, decision="sampled") == len(trace_ids)
        assert metrics.value("gateway_requests_total", route=name, decision="not_sampled", reason="ratio") == 60 - len(
            trace_ids
        )
        assert metrics.value("gateway_route_sample_rate", route=name) == rates[name]


# --- live reload ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["sighup", "file-change"])
def test_reload_under_traffic_fails_no_request(
    start_gateway: GatewayFactory, upstream: Upstream, second_upstream: Upstream, tmp_path: Path, trigger: str
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", one_route(upstream))
    # Without watching, only SIGHUP can reload; with it, the file's change alone must do.
    interval = 0 if trigger == "sighup" else 0.1
    gateway = start_gateway(routes_file=routes, upstream_url=None, routes_reload_interval=interval)
    first_version = config(gateway)["version"]

    with Traffic(gateway.url) as traffic:
        traffic.wait_for_more(30)
        write_routes(routes, one_route(second_upstream))
        if trigger == "sighup":
            os.kill(gateway.pid, signal.SIGHUP)
        assert wait_for(lambda: config(gateway)["version"] != first_version, RELOAD_WAIT), config(gateway)
        traffic.wait_for_more(30)

    assert traffic.failures == []
    assert traffic.served_by[0] == upstream.authority
    assert traffic.served_by[-1] == second_upstream.authority
    # Every request was served by one table or the other, switching once: the swap is atomic.
    switch = traffic.served_by.index(second_upstream.authority)
    assert set(traffic.served_by[:switch]) == {upstream.authority}
    assert set(traffic.served_by[switch:]) == {second_upstream.authority}
    document = config(gateway)
    [worker] = document["workers"]
    expected_trigger = "SIGHUP" if trigger == "sighup" else "file change"
    assert (worker["last_reload"]["trigger"], worker["last_reload"]["outcome"]) == (expected_trigger, "ok")
    assert gateway.metrics().value("gateway_route_reloads_total", outcome="ok") == 1
    assert gateway.process.popen.poll() is None


@pytest.mark.parametrize("trigger", ["sighup", "file-change"])
def test_a_bad_reload_keeps_the_table_in_force(
    start_gateway: GatewayFactory, upstream: Upstream, client: httpx.Client, tmp_path: Path, trigger: str
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", one_route(upstream))
    gateway = start_gateway(
        routes_file=routes, upstream_url=None, routes_reload_interval=0 if trigger == "sighup" else 0.1
    )
    before = config(gateway)

    write_routes(routes, one_route(upstream) + "    sample_rate: 1.5\n")
    if trigger == "sighup":
        os.kill(gateway.pid, signal.SIGHUP)
    assert wait_for(lambda: gateway.metrics().value("gateway_route_reloads_total", outcome="rejected") == 1)

    reason = f"{routes}:4: routes[0].sample_rate: must be within [0.0, 1.0] (got 1.5)"
    after = config(gateway)
    assert (after["version"], after["routes"]) == (before["version"], before["routes"])
    [worker] = after["workers"]
    assert (worker["last_reload"]["outcome"], worker["last_reload"]["reason"]) == ("rejected", reason)
    assert Echo.of(client.get(f"{gateway.url}/still-served")).one("host") == upstream.authority
    rejected = [line for line in gateway.output().splitlines() if "route file rejected" in line]
    assert len(rejected) == 1 and reason in rejected[0], gateway.output()
    assert gateway.process.popen.poll() is None


def test_every_worker_reloads_on_sighup(
    start_gateway: GatewayFactory, upstream: Upstream, second_upstream: Upstream, tmp_path: Path
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", one_route(upstream))
    gateway = start_gateway(routes_file=routes, upstream_url=None, workers=2, routes_reload_interval=0)
    assert wait_for(lambda: len(config(gateway)["workers"]) == 2, RELOAD_WAIT), config(gateway)
    before = config(gateway)
    assert before["consistent"] is True

    write_routes(routes, one_route(second_upstream, name="moved"))
    os.kill(gateway.pid, signal.SIGHUP)

    def all_reloaded() -> bool:
        document = config(gateway)
        versions = {worker["version"] for worker in document["workers"]}
        return len(document["workers"]) == 2 and versions == {document["version"]} != {before["version"]}

    assert wait_for(all_reloaded, RELOAD_WAIT), config(gateway)
    after = config(gateway)
    assert after["consistent"] is True
    assert [route["name"] for route in after["routes"]] == ["moved"]
    # The same two workers, reloaded in place rather than replaced.
    assert sorted(worker["pid"] for worker in after["workers"]) == sorted(worker["pid"] for worker in before["workers"])
    assert gateway.metrics().value("gateway_route_reloads_total", outcome="ok") == 2
    for _ in range(6):
        # A new connection each time, so that both workers get some.
        with httpx.Client(timeout=10) as fresh:
            assert Echo.of(fresh.get(f"{gateway.url}/after")).one("host") == second_upstream.authority


def test_a_bad_route_file_at_startup_exits_2_naming_file_line_and_reason(tmp_path: Path) -> None:
    routes = write_routes(
        tmp_path / "routes.yaml", "routes:\n  - name: api\n    upstream: http://127.0.0.1:9\n    timeout: -1\n"
    )
    env = gateway_env(None, None, routes_file=routes)
    with running_process([GATEWAY_BIN], tmp_path / "gateway.log", env=env) as process:
        code = process.popen.wait(20)
        output = process.output()
    assert code == 2, output
    assert output.strip() == (
        f"GATEWAY_ROUTES_FILE: {routes}:4: routes[0].timeout: must be within [0.0, 3600.0] (got -1)"
    ), output

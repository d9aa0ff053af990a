"""`python -m gateway_devtools.demo`, as `make run` starts it: every component up, the bot's traces complete, a clean
Ctrl-C.

One demo runs for the module, on free ports, sampling every request; the last test stops it with SIGINT.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from gateway.propagation.w3c import parse_traceresponse
from gateway_devtools.demo.environment import PORTS
from tests.integration.mesh.traces import ZipkinReader, assert_connected, poll, service, services
from tests.support import (
    LOOPBACK,
    REPO_ROOT,
    SCREENSHOTS,
    RunningProcess,
    free_port,
    headless_chromium,
    python_module,
    running_process,
)

pytestmark = pytest.mark.e2e

READY_LINE = "Ctrl-C stops everything."
GATEWAY_SERVICE = "ingress-gateway"
CHILDREN = 8  # collector, emoji, voting, web, emoji-grpc, gateway, gateway-https, vote-bot
# The gateway's SERVER and CLIENT spans, web's SERVER span, then a CLIENT and a SERVER span per call web makes.
EXPECTED_TRACES = {
    "/": (3, {GATEWAY_SERVICE, "web"}),
    "/api/list": (5, {GATEWAY_SERVICE, "web", "emoji"}),
    "/api/vote": (7, {GATEWAY_SERVICE, "web", "emoji", "voting"}),
    "/api/leaderboard": (7, {GATEWAY_SERVICE, "web", "emoji", "voting"}),
    "/emojivoto.v1.EmojiService/ListAll": (3, {GATEWAY_SERVICE, "emoji-grpc"}),
}


@dataclass
class Demo:
    process: RunningProcess
    ports: dict[str, int]

    def url(self, variable: str, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.ports[variable]}{path}"

    @property
    def zipkin(self) -> ZipkinReader:
        return ZipkinReader(self.url("DEMO_COLLECTOR_PORT"))

    def get(self, variable: str, path: str) -> httpx.Response:
        return httpx.get(self.url(variable, path), timeout=10, trust_env=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    ports = {variable: free_port() for _, variable, _ in PORTS}
    env = {
        **{variable: str(port) for variable, port in ports.items()},
        "DEMO_BOT": "1",
        "DEMO_BOT_INTERVAL": "0.3",
        "DEMO_MISBEHAVE": "",
        "GATEWAY_SAMPLE_RATE": "1.0",
        "GATEWAY_REPORTER_FLUSH_INTERVAL": "0.2",
        "NO_COLOR": "1",
    }
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with running_process(python_module("gateway_devtools.demo"), log, env=env) as process:
        output = poll(process.output, lambda text: READY_LINE in text or process.popen.poll() is not None, 60.0)
        assert READY_LINE in output, f"the demo did not come up:\n{output}"
        yield Demo(process, ports)


def test_every_component_comes_up_and_the_urls_are_printed(demo: Demo) -> None:
    output = demo.process.output()
    for variable, path in (("GATEWAY_PORT", "/"), ("DEMO_COLLECTOR_PORT", "/"), ("GATEWAY_ADMIN_PORT", "/metrics")):
        assert demo.url(variable, path) in output
    assert demo.get("DEMO_COLLECTOR_PORT", "/health").status_code == 200
    assert demo.get("GATEWAY_ADMIN_PORT", "/live").status_code == 200
    assert demo.get("GATEWAY_ADMIN_PORT", "/ready").status_code == 200
    assert demo.get("DEMO_WEB_PORT", "/api/list").status_code == 200
    assert demo.get("DEMO_EMOJI_PORT", "/list").status_code == 200
    assert demo.get("DEMO_VOTING_PORT", "/results").status_code == 200
    commands = sorted(_command(pid) for pid in _children(demo.process.pid))
    assert len(commands) == CHILDREN, commands
    # four services (emoji-grpc too) and the bot
    assert sum("gateway_devtools.mesh" in command for command in commands) == 5
    assert sum("gateway_devtools.collector" in command for command in commands) == 1
    assert sum(command.endswith("-m gateway") for command in commands) == 2  # cleartext and HTTPS


def test_the_app_answers_through_the_gateway_with_a_complete_trace(demo: Demo) -> None:
    page = demo.get("GATEWAY_PORT", "/")
    assert page.status_code == 200
    assert "<title>Emoji Vote</title>" in page.text
    assert f'content="{demo.url("DEMO_COLLECTOR_PORT")}"' in page.text

    vote = demo.get("GATEWAY_PORT", "/api/vote?choice=:rocket:")

    assert vote.status_code == 200, vote.text
    assert vote.json() == {"shortcode": ":rocket:", "unicode": "🚀"}
    announced = parse_traceresponse(vote.headers["traceresponse"])
    assert announced is not None and announced[2], vote.headers["traceresponse"]
    spans = demo.zipkin.wait_for_trace(f"{announced[0]:032x}", 7)
    root = assert_connected(spans, root_parent=None)
    assert (service(root), root["kind"], root["tags"]["http.path"]) == (GATEWAY_SERVICE, "SERVER", "/api/vote")
    assert services(spans) == EXPECTED_TRACES["/api/vote"][1]
    results = demo.get("DEMO_VOTING_PORT", "/results?limit=100").json()
    assert any(result["shortcode"] == ":rocket:" for result in results), results


def test_a_grpc_call_through_the_gateway_is_one_complete_trace(demo: Demo) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{demo.ports['GATEWAY_PORT']}") as channel:
        reply, call = channel.unary_unary("/emojivoto.v1.EmojiService/ListAll").with_call(b"{}", timeout=10)
    assert {"shortcode": ":rocket:", "unicode": "🚀"} in json.loads(reply)["list"]
    announced = parse_traceresponse(dict(call.initial_metadata())["traceresponse"])
    assert announced is not None and announced[2]
    spans = demo.zipkin.wait_for_trace(f"{announced[0]:032x}", 3)
    root = assert_connected(spans, root_parent=None)
    assert (root["name"].lower(), root["tags"]["rpc.system"]) == ("emojivoto.v1.emojiservice/listall", "grpc")
    assert services(spans) == {GATEWAY_SERVICE, "emoji-grpc"}


def test_the_bots_traces_arrive_complete(demo: Demo) -> None:
    roots = poll(lambda: _gateway_roots(demo.zipkin), lambda found: len(found) >= 12, 20.0)
    assert len(roots) >= 12, f"the bot's traces did not arrive: {len(roots)} so far"
    assert {"/api/list", "/api/vote", "/api/leaderboard"} <= {root["tags"]["http.path"] for root in roots}

    # Every service had reported its spans before the gateway answered; allow a few flushes for them to land.
    for root in roots:
        count, expected_services = EXPECTED_TRACES[root["tags"]["http.path"]]
        spans = demo.zipkin.wait_for_trace(root["traceId"], count)
        assert len(spans) == count, (root["tags"]["http.path"], spans)
        assert services(spans) == expected_services
        assert assert_connected(spans, root_parent=None)["id"] == root["id"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with headless_chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 760}, device_scale_factor=1)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"the page raised: {errors}"


@pytest.mark.browser
def test_the_trace_page_shows_a_bot_trace_as_a_waterfall(demo: Demo, page: Page) -> None:
    trace = _representative_vote_trace(demo.zipkin)
    trace_id = trace[0]["traceId"]
    page.goto(demo.url("DEMO_COLLECTOR_PORT"))
    expect(page.locator("tr.trace-row").first).to_be_visible()

    # The bot adds traces faster than the list keeps them on screen: open this one by its link.
    page.goto(demo.url("DEMO_COLLECTOR_PORT", f"/#trace={trace_id}"))

    expect(page.locator(".span-row")).to_have_count(len(trace))
    expect(page.locator("#trace-id")).to_have_text(trace_id)
    expect(page.locator("#partial-badge")).to_have_count(0)
    legend = page.locator(".legend-item").evaluate_all("items => items.map(item => item.dataset.service)")
    assert sorted(legend) == sorted(services(trace))
    drawn = page.locator(".span-row").evaluate_all("rows => rows.map(row => row.dataset.spanId)")
    assert sorted(drawn) == sorted(span["id"] for span in trace)
    # Open the voting span's details: its tags say why a :doughnut: vote fails.
    voting = next(span for span in trace if service(span) == "voting")
    page.locator(f'.span-row[data-span-id="{voting["id"]}"]').click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail")).to_contain_text(voting["tags"].get("error", voting["tags"]["http.status_code"]))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.mouse.move(0, 0)
    page.screenshot(path=str(SCREENSHOTS / "demo-trace.png"))


@pytest.mark.browser
def test_voting_in_the_app_links_to_the_votes_trace(demo: Demo, page: Page) -> None:
    page.goto(demo.url("GATEWAY_PORT"))
    page.locator('#emojis button[title=":trophy:"]').click()

    expect(page.locator("#status")).to_contain_text("Voted for")
    link = page.locator("#status a")
    expect(link).to_have_text("see its trace")
    href = link.get_attribute("href") or ""
    assert href.startswith(demo.url("DEMO_COLLECTOR_PORT", "/#trace="))
    trace_id = href.rpartition("=")[2]
    spans = demo.zipkin.wait_for_trace(trace_id, EXPECTED_TRACES["/api/vote"][0])
    assert assert_connected(spans, root_parent=None)["tags"]["http.path"] == "/api/vote"
    # The leaderboard shows the top ten only; the bot's votes may keep :trophy: off it.
    results = demo.get("DEMO_VOTING_PORT", "/results?limit=100").json()
    assert any(result["shortcode"] == ":trophy:" for result in results), results


def test_the_app_answers_over_https_and_http2_with_the_printed_ca(demo: Demo) -> None:
    output = demo.process.output()
    match = re.search(r"curl --http2 --cacert (\S+/ca\.crt) (https://localhost:(\d+)/)", output)
    assert match is not None, output
    ca_file, url, port = match[1], match[2], int(match[3])
    assert port == demo.ports["DEMO_HTTPS_PORT"]
    result = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", ca_file, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout == "2 200", result.stderr
    vote = httpx.get(f"{url}api/vote?choice=:rocket:", verify=ssl.create_default_context(cafile=ca_file), timeout=10)
    assert vote.status_code == 200, vote.text
    announced = parse_traceresponse(vote.headers["traceresponse"])
    assert announced is not None
    spans = demo.zipkin.wait_for_trace(f"{announced[0]:032x}", EXPECTED_TRACES["/api/vote"][0])
    assert services(spans) == EXPECTED_TRACES["/api/vote"][1]


def test_sigint_stops_every_child_and_exits_0(demo: Demo) -> None:
    children = _children(demo.process.pid)
    assert len(children) == CHILDREN

    os.kill(demo.process.pid, signal.SIGINT)

    assert demo.process.popen.wait(40) == 0
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
    output = demo.process.output()
    assert output.rstrip().endswith("demo: stopped"), output[-2000:]
    assert "Traceback" not in output, output
    assert "while stopping" not in output, output


def test_a_taken_port_stops_the_demo_with_one_clear_line() -> None:
    ports = {variable: str(free_port()) for _, variable, _ in PORTS}
    with socket.socket() as taken:
        taken.bind((LOOPBACK, int(ports["DEMO_WEB_PORT"])))
        taken.listen()
        result = subprocess.run(
            python_module("gateway_devtools.demo"),
            env={**os.environ, **ports},
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO_ROOT,
        )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"demo: port {ports['DEMO_WEB_PORT']} for the web is taken on 127.0.0.1 (Address already in use): "
        "stop what uses it or set DEMO_WEB_PORT to a free port"
    ]


def _gateway_roots(zipkin: ZipkinReader) -> list[dict[str, Any]]:
    return [
        span
        for trace in zipkin.traces(GATEWAY_SERVICE)
        for span in trace
        if service(span) == GATEWAY_SERVICE and span["kind"] == "SERVER"
    ]


def _representative_vote_trace(zipkin: ZipkinReader) -> list[dict[str, Any]]:
    """A complete vote trace from the bot: one with a failed :doughnut: vote if one comes within a few seconds."""
    complete = poll(lambda: _complete_votes(zipkin), lambda votes: any(map(_failed, votes)), 5.0)
    assert complete, "no complete vote trace"
    return next((trace for trace in complete if _failed(trace)), complete[0])


def _complete_votes(zipkin: ZipkinReader) -> list[list[dict[str, Any]]]:
    count = EXPECTED_TRACES["/api/vote"][0]
    roots = [root for root in _gateway_roots(zipkin) if root["tags"]["http.path"] == "/api/vote"]
    return [trace for trace in map(zipkin.trace, (root["traceId"] for root in roots)) if len(trace) == count]


def _failed(trace: list[dict[str, Any]]) -> bool:
    return any("error" in span.get("tags", {}) for span in trace)


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(FileNotFoundError):
            children.extend(int(child) for child in (task / "children").read_text().split())
    return children


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip().replace(sys.executable, "")

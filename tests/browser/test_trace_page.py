"""The collector's trace page in a real headless Chromium: the list, the waterfall, the marks for trouble."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from gateway_devtools.collector.app import create_collector_app
from tests.support import SCREENSHOTS, ThreadedServer, headless_chromium

pytestmark = pytest.mark.browser

ERROR_RED = "rgb(217, 63, 63)"

TRACE_ID = "5e1f0c2a9b8d7e6f4a3b2c1d0e9f8a7b"
PARTIAL_TRACE_ID = "00000000000000000badc0ffee0ddf00"
NOW_US = int(time.time() * 1_000_000) - 5_000_000


# The request the gateway sees most in emojivoto: a vote, which finds the emoji, then fails to record the vote.
# (id, parent id, service, span name, kind, start ms, duration ms, remote service)
VOTE = [
    (0xA001, None, "ingress-gateway", "post /api/vote", "SERVER", 0.0, 48.2, None),
    (0xA002, 0xA001, "ingress-gateway", "post", "CLIENT", 0.4, 47.1, "web"),
    (0xA003, 0xA002, "web", "post /api/vote", "SERVER", 1.1, 45.3, None),
    (0xA004, 0xA003, "web", "emojiservice.findbyshortcode", "CLIENT", 2.0, 6.4, "emoji"),
    (0xA005, 0xA004, "emoji", "emojiservice.findbyshortcode", "SERVER", 2.6, 5.1, None),
    (0xA006, 0xA003, "web", "votingservice.votedoughnut", "CLIENT", 9.0, 36.5, "voting"),
    (0xA007, 0xA006, "voting", "votingservice.votedoughnut", "SERVER", 9.8, 34.6, None),
]
VOTE_TAGS = {
    0xA001: {"http.method": "POST", "http.path": "/api/vote", "http.status_code": "500"},
    0xA002: {"http.url": "http://web-svc.emojivoto:80/api/vote", "http.status_code": "500"},
    0xA003: {"http.method": "POST", "http.status_code": "500"},
    0xA006: {"error": "rpc error: code = Unknown"},
    0xA007: {"error": "ERROR: doughnut is not votable"},
}
EXPECTED_DEPTH = {0xA001: 0, 0xA002: 1, 0xA003: 2, 0xA004: 3, 0xA005: 4, 0xA006: 3, 0xA007: 4}
# A trace whose gateway spans never arrived: the web span names a parent the collector does not have.
PARTIAL = [
    (0xB003, 0xB002, "web", "get /api/list", "SERVER", 1000.0, 12.0, None),
    (0xB004, 0xB003, "web", "emojiservice.listall", "CLIENT", 1001.0, 9.0, "emoji"),
    (0xB005, 0xB004, "emoji", "emojiservice.listall", "SERVER", 1001.5, 8.0, None),
]


def hex_id(span_id: int) -> str:
    return f"{span_id:016x}"


def span_row(page: Page, span_id: int) -> Locator:
    return page.locator(f'.span-row[data-span-id="{hex_id(span_id)}"]')


def _span(trace_id: str, row: tuple[Any, ...], tags: dict[str, str] | None = None) -> dict[str, Any]:
    span_id, parent_id, service, name, kind, start_ms, duration_ms, remote = row
    span: dict[str, Any] = {
        "traceId": trace_id,
        "id": hex_id(span_id),
        "kind": kind,
        "name": name,
        "timestamp": NOW_US + int(start_ms * 1000),
        "duration": int(duration_ms * 1000),
        "localEndpoint": {"serviceName": service, "ipv4": "10.42.0.7", "port": 8080},
        "tags": tags or {},
    }
    if parent_id:
        span["parentId"] = hex_id(parent_id)
    if remote:
        span["remoteEndpoint"] = {"serviceName": remote, "ipv4": "10.42.1.9", "port": 8080}
    return span


SPANS = [_span(TRACE_ID, row, VOTE_TAGS.get(row[0])) for row in VOTE]
SPANS[4]["annotations"] = [{"timestamp": NOW_US + 4_000, "value": "cache.miss"}]
PARTIAL_SPANS = [_span(PARTIAL_TRACE_ID, row) for row in PARTIAL]


@pytest.fixture(scope="module")
def collector_url() -> Iterator[str]:
    with ThreadedServer(create_collector_app()) as server:
        for spans in (SPANS, PARTIAL_SPANS):
            response = httpx.post(f"{server.url}/api/v2/spans", content=json.dumps(spans), timeout=5)
            assert response.status_code == 202, response.text
        yield server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with headless_chromium() as launched:
        yield launched


@pytest.fixture
def page_errors() -> list[str]:
    """Script errors and console errors of `page`; a test that expects one removes it."""
    return []


@pytest.fixture
def page(browser: Browser, page_errors: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 720}, device_scale_factor=1)
    opened = context.new_page()
    opened.on("pageerror", lambda error: page_errors.append(str(error)))
    opened.on("console", lambda message: page_errors.append(message.text) if message.type == "error" else None)
    yield opened
    context.close()
    assert page_errors == [], f"the page logged errors: {page_errors}"


def test_trace_list_shows_recent_traces_with_their_marks(page: Page, collector_url: str):
    page.goto(collector_url)

    row = page.locator(f'tr.trace-row[data-trace-id="{TRACE_ID}"]')
    expect(row).to_be_visible()
    expect(row.locator(".root-service")).to_have_text("ingress-gateway")
    expect(row.locator(".root-name")).to_have_text("post /api/vote")
    expect(row.locator(".col-spans")).to_have_text("7")
    expect(row.locator(".duration-text")).to_have_text("48.2ms")
    expect(row.locator(".chip")).to_have_text(["emoji", "ingress-gateway", "voting", "web"])
    expect(row.locator(".badge-error")).to_have_text("2 errors")
    partial = page.locator(f'tr.trace-row[data-trace-id="{PARTIAL_TRACE_ID[16:]}"]')
    expect(partial.locator(".badge-warn")).to_have_text("partial")
    # Newest first: the partial trace started a second after the vote.
    expect(page.locator("tr.trace-row")).to_have_count(2)
    assert page.locator("tr.trace-row").first.get_attribute("data-trace-id") == PARTIAL_TRACE_ID[16:]
    expect(page.locator("#stats")).to_contain_text("10 spans")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "trace-list.png"))

    page.select_option("#filter-service", "voting")
    expect(page.locator("tr.trace-row")).to_have_count(1)


def test_clicking_a_trace_draws_its_waterfall(page: Page, collector_url: str):
    page.goto(collector_url)
    page.locator(f'tr.trace-row[data-trace-id="{TRACE_ID}"]').click()

    rows = page.locator(".span-row")
    expect(rows).to_have_count(len(SPANS))
    assert page.url.endswith(f"#trace={TRACE_ID}")
    expect(page.locator("#trace-id")).to_have_text(TRACE_ID)
    expect(page.locator("#partial-badge")).to_have_count(0)

    drawn = rows.evaluate_all(
        """rows => rows.map(row => {
            const bar = row.querySelector('.wf-bar'), track = row.querySelector('.wf-track');
            const b = bar.getBoundingClientRect(), t = track.getBoundingClientRect();
            return {id: row.dataset.spanId, parent: row.dataset.parentId, depth: Number(row.dataset.depth),
                    service: row.dataset.service, error: bar.classList.contains('error'),
                    colour: getComputedStyle(bar).backgroundColor,
                    left: (b.left - t.left) / t.width, width: b.width / t.width};
        })"""
    )
    legend = page.locator(".legend-item").evaluate_all(
        """items => Object.fromEntries(items.map(item =>
            [item.dataset.service, getComputedStyle(item.querySelector('.legend-swatch')).backgroundColor]))"""
    )

    # Every span is one bar, nested under its parent: depth-first order, one level deeper than the parent.
    assert {row["id"]: row["depth"] for row in drawn} == {hex_id(i): depth for i, depth in EXPECTED_DEPTH.items()}
    position = {row["id"]: index for index, row in enumerate(drawn)}
    for row in drawn:
        if row["parent"]:
            assert position[row["parent"]] < position[row["id"]]
    # Bars sit on one time axis: offset and length in proportion to the trace's 48.2 ms.
    by_id = {span["id"]: span for span in SPANS}
    for row in drawn:
        span = by_id[row["id"]]
        assert row["left"] == pytest.approx((span["timestamp"] - NOW_US) / 48_200, abs=0.01)
        assert row["width"] == pytest.approx(span["duration"] / 48_200, abs=0.01)
    # One colour per service, as in the legend; error-tagged spans in red.
    assert sorted(legend) == ["emoji", "ingress-gateway", "voting", "web"]
    assert len(set(legend.values())) == 4
    for row in drawn:
        assert row["error"] == ("error" in by_id[row["id"]]["tags"])
        assert row["colour"] == (ERROR_RED if row["error"] else legend[row["service"]])

    # Hovering a bar tells what it is; clicking a row shows tags, annotations and endpoints.
    span_row(page, 0xA007).locator(".wf-bar").hover()
    expect(page.locator("#tooltip")).to_be_visible()
    expect(page.locator("#tooltip")).to_contain_text("voting · votingservice.votedoughnut")
    expect(page.locator("#tooltip")).to_contain_text("error: ERROR: doughnut is not votable")
    span_row(page, 0xA005).click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(detail.locator("h2")).to_have_text("emojiservice.findbyshortcode")
    expect(detail.locator(".annotations")).to_contain_text("cache.miss")
    span_row(page, 0xA006).click()
    expect(detail.locator(".tags tr.error")).to_contain_text("rpc error: code = Unknown")
    expect(detail).to_contain_text("voting · 10.42.1.9:8080")

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.mouse.move(0, 0)
    page.screenshot(path=str(SCREENSHOTS / "trace-page.png"))

    span_row(page, 0xA003).locator(".wf-toggle").click()
    expect(rows).to_have_count(3)
    expect(span_row(page, 0xA003).locator(".wf-label")).to_contain_text("+4 hidden")

    page.locator("#back").click()
    expect(page.locator("tr.trace-row")).to_have_count(2)


def test_deep_link_opens_a_partial_trace_with_its_marks(page: Page, collector_url: str):
    page.goto(f"{collector_url}/#trace={PARTIAL_TRACE_ID}")

    expect(page.locator(".span-row")).to_have_count(len(PARTIAL_SPANS))
    expect(page.locator("#partial-badge")).to_contain_text("Partial trace")
    orphan = page.locator(".span-row.orphan")
    expect(orphan).to_have_count(1)
    expect(orphan).to_have_attribute("data-span-id", hex_id(0xB003))
    expect(orphan.locator(".flag-warn")).to_have_text("no parent")
    depths = page.locator(".span-row").evaluate_all("rows => rows.map(row => Number(row.dataset.depth))")
    assert depths == [0, 1, 2]


def test_unknown_trace_says_so(page: Page, page_errors: list[str], collector_url: str):
    page.goto(f"{collector_url}/#trace=00000000000000ff")

    expect(page.locator("#trace-header h1")).to_have_text("Trace not found")
    expect(page.locator(".span-row")).to_have_count(0)
    # Chromium logs the API's 404 itself.
    page_errors.remove("Failed to load resource: the server responded with a status of 404 (Not Found)")


def test_new_traces_appear_without_a_reload(page: Page):
    with ThreadedServer(create_collector_app()) as server:
        page.goto(server.url)
        expect(page.locator("#empty")).to_be_visible()
        expect(page.locator("#empty")).to_contain_text("POST /api/v2/spans")
        late = _span("c" * 16, (0xC001, None, "ingress-gateway", "get /", "SERVER", 0.0, 3.0, None))

        httpx.post(f"{server.url}/api/v2/spans", content=json.dumps([late]), timeout=5).raise_for_status()

        expect(page.locator(f'tr.trace-row[data-trace-id="{"c" * 16}"]')).to_be_visible(timeout=10_000)
        expect(page.locator("#empty")).to_be_hidden()
        assert re.fullmatch(r"[0-9:.]+", page.locator("tr.trace-row .col-start div").first.inner_text())
        # Leave the page before the collector stops, or its next refresh logs a refused connection.
        page.goto("about:blank")

from __future__ import annotations

import asyncio
import gc
import gzip
import json

import pytest

from gateway.metrics import Metrics
from gateway.reporter import (
    EXCHANGES_PER_SLICE,
    HttpSpanSender,
    RejectedError,
    Reporter,
    RetryableError,
)
from gateway.routes import parse_upstream
from gateway.span_payload import SPANS_PER_EXCHANGE, GzipSpanList, encode_slice, gzipped
from gateway.spans import Exchange, local_endpoint
from gateway.zipkin_json import ZipkinJsonEncoder
from tests.support import ThreadedServer

pytestmark = pytest.mark.anyio

LOCAL = local_endpoint("ingress-gateway", "127.0.0.1", 8080)
ENCODER = ZipkinJsonEncoder(LOCAL)


def exchange(n: int, path: str = "/") -> Exchange:
    return Exchange(
        trace_id=n,
        server_span_id=(n << 8) | 1,
        client_span_id=(n << 8) | 2,
        parent_id=None,
        debug=False,
        name=f"GET {path}",
        method="GET",
        path=path,
        host="example.com",
        status_code=200,
        upstream_status_code=200,
        error=None,
        client_host="203.0.113.7",
        client_port=4000,
        upstream=parse_upstream("http://web-svc:80"),
        server_start=1_700_000_000.0,
        server_duration=0.002,
        client_start=1_700_000_000.0005,
        client_duration=0.001,
    )


class FakeSender:
    """Records payloads; fails according to a script of exceptions (None = accept)."""

    def __init__(self, script: list[Exception | None] | None = None, delay: float = 0.0) -> None:
        self.payloads: list[list[dict[str, object]]] = []
        self.attempts = 0
        self.script = list(script or [])
        self.delay = delay
        self.closed = False

    async def send(self, payload: bytes) -> None:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.payloads.append(json.loads(gzip.decompress(payload)))

    async def aclose(self) -> None:
        self.closed = True

    def span_ids(self) -> list[str]:
        return [span["id"] for batch in self.payloads for span in batch]  # type: ignore[misc]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (every exporter's, unless one is named)."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def make_reporter(sender: FakeSender, metrics: Metrics, **overrides: float) -> Reporter:
    options: dict[str, float] = {"max_queue_spans": 100, "batch_spans": 10, "flush_interval": 0.05, "max_attempts": 3}
    options.update(overrides)
    return Reporter(
        sender,
        LOCAL,
        metrics,
        max_queue_spans=int(options["max_queue_spans"]),
        batch_spans=int(options["batch_spans"]),
        flush_interval=options["flush_interval"],
        max_attempts=int(options["max_attempts"]),
    )


async def test_spans_of_an_exchange_are_sent_together_in_one_batch():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics)
    await reporter.start()
    assert reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    await reporter.stop(deadline=5)
    assert len(sender.payloads) == 1
    assert sorted(str(span["kind"]) for span in sender.payloads[0]) == ["CLIENT", "SERVER"]
    assert value(metrics, "gateway_spans_reported_total") == 2
    assert sender.closed


async def test_a_full_batch_is_sent_without_waiting_for_the_interval():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics, batch_spans=4, flush_interval=30)
    await reporter.start()
    for n in range(1, 3):
        assert reporter.reserve()
        reporter.submit(exchange(n), reserved=True)
    for _ in range(100):
        if sender.payloads:
            break
        await asyncio.sleep(0.01)
    assert len(sender.payloads[0]) == 4
    await reporter.stop(deadline=5)


async def test_a_partial_batch_is_sent_after_the_flush_interval():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics, batch_spans=100, flush_interval=0.05)
    await reporter.start()
    assert reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    for _ in range(200):
        if sender.payloads:
            break
        await asyncio.sleep(0.01)
    assert len(sender.payloads) == 1
    await reporter.stop(deadline=5)


async def test_reserve_refuses_when_the_queue_has_no_room_for_both_spans():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics, max_queue_spans=5)
    assert reporter.reserve()
    assert reporter.reserve()
    assert not reporter.reserve()  # 4 of 5 used: a third trace would need 6
    assert value(metrics, "gateway_sampling_suspended") == 1
    reporter.submit(exchange(1), reserved=True)
    reporter.submit(exchange(2), reserved=True)
    assert reporter.queue_depth() == 2 * SPANS_PER_EXCHANGE
    assert value(metrics, "gateway_spans_dropped_total", reason="queue_full") == 0


async def test_an_unreserved_exchange_is_dropped_whole_when_the_queue_is_full():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics, max_queue_spans=3)
    reporter.submit(exchange(1), reserved=False)
    reporter.submit(exchange(2), reserved=False)
    assert reporter.queue_depth() == 2
    assert value(metrics, "gateway_spans_dropped_total", reason="queue_full") == 2


async def test_sampling_resumes_once_the_queue_drains():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics, max_queue_spans=2, flush_interval=0.02)
    await reporter.start()
    assert reporter.reserve()
    assert not reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    for _ in range(200):
        if reporter.queue_depth() == 0:
            break
        await asyncio.sleep(0.01)
    assert reporter.reserve()
    assert value(metrics, "gateway_sampling_suspended") == 0
    reporter.submit(exchange(2), reserved=True)
    await reporter.stop(deadline=5)


async def test_retryable_failures_are_retried_then_delivered():
    metrics = Metrics()
    sender = FakeSender([RetryableError("503"), RetryableError("connection refused"), None])
    reporter = make_reporter(sender, metrics, max_attempts=3)
    await reporter.start()
    reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    await reporter.stop(deadline=10)
    assert sender.attempts == 3
    assert value(metrics, "gateway_spans_reported_total") == 2
    assert value(metrics, "gateway_span_batches_total", outcome="retried") == 2


async def test_a_batch_is_dropped_and_counted_after_the_last_attempt():
    metrics = Metrics()
    sender = FakeSender([RetryableError("503")] * 3)
    reporter = make_reporter(sender, metrics, max_attempts=3)
    await reporter.start()
    reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    await reporter.stop(deadline=10)
    assert value(metrics, "gateway_spans_dropped_total", reason="retries_exhausted") == 2
    assert value(metrics, "gateway_spans_reported_total") == 0


async def test_a_rejected_batch_is_not_retried():
    metrics = Metrics()
    sender = FakeSender([RejectedError("400 bad span")])
    reporter = make_reporter(sender, metrics, max_attempts=3)
    await reporter.start()
    reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    await reporter.stop(deadline=5)
    assert sender.attempts == 1
    assert value(metrics, "gateway_spans_dropped_total", reason="rejected") == 2


async def test_stop_flushes_everything_queued():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics, batch_spans=10, flush_interval=60)
    await reporter.start()
    for n in range(1, 24):
        assert reporter.reserve()
        reporter.submit(exchange(n), reserved=True)
    await reporter.stop(deadline=5)
    assert len(sender.span_ids()) == 46
    assert value(metrics, "gateway_spans_reported_total") == 46


async def test_stop_gives_up_at_its_deadline_and_counts_the_loss():
    metrics, sender = Metrics(), FakeSender(delay=10)
    reporter = make_reporter(sender, metrics, batch_spans=2)
    await reporter.start()
    for n in range(1, 4):
        reporter.reserve()
        reporter.submit(exchange(n), reserved=True)
    await reporter.stop(deadline=0.2)
    assert value(metrics, "gateway_spans_dropped_total", reason="shutdown") == 6


async def test_new_traces_are_not_sampled_once_stopping():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics)
    await reporter.start()
    await reporter.stop(deadline=1)
    assert not reporter.reserve()


class _Collector:
    """A minimal ASGI collector that records POST bodies and headers, answering with a scripted status."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        status = self.statuses.pop(0) if self.statuses else 202
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("status", "error"), [(202, None), (503, RetryableError), (429, RetryableError), (400, RejectedError)]
)
async def test_http_sender_posts_gzipped_json_that_does_not_start_a_trace(status, error):
    collector = _Collector([status])
    with ThreadedServer(collector) as server:
        sender = HttpSpanSender(f"{server.url}/api/v2/spans", timeout=5)
        try:
            if error is None:
                await sender.send(gzipped(b"[]"))
            else:
                with pytest.raises(error):
                    await sender.send(gzipped(b"[]"))
        finally:
            await sender.aclose()
    headers, body = collector.requests[0]
    assert headers["content-type"] == "application/json"
    assert headers["content-encoding"] == "gzip"
    assert headers["b3"] == "0"
    assert gzip.decompress(body) == b"[]"


async def test_http_sender_treats_a_closed_port_as_retryable():
    from tests.support import free_port

    sender = HttpSpanSender(f"http://127.0.0.1:{free_port()}/api/v2/spans", timeout=2)
    try:
        with pytest.raises(RetryableError):
            await sender.send(gzipped(b"[]"))
    finally:
        await sender.aclose()


async def test_a_partial_batch_waits_for_the_interval_even_right_after_an_export():
    # Spans that queue while a POST is in flight wait for a full batch or the interval; sending them at once
    # made batches of a few spans, each POST costing as much as hundreds of spans' encoding.
    metrics, sender = Metrics(), FakeSender(delay=0.05)
    reporter = make_reporter(sender, metrics, batch_spans=10_000, flush_interval=0.4, max_queue_spans=10_000)
    await reporter.start()
    for n in range(1, 81):
        assert reporter.reserve()
        reporter.submit(exchange(n), reserved=True)
        await asyncio.sleep(0.01)
    await reporter.stop(deadline=5)
    assert len(sender.span_ids()) == 160
    # About 0.8 s of submissions at one batch per 0.4 s is 2 or 3 POSTs (plus the flush at stop); one POST per
    # 50 ms of sending would be a dozen or more.
    assert len(sender.payloads) <= 5


async def test_an_idle_reporter_sleeps_between_intervals():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics, flush_interval=0.05)
    wakeups = 0
    gauge_set = reporter._queue_depth.set

    def counting_set(value: float) -> None:
        nonlocal wakeups
        wakeups += 1
        gauge_set(value)

    reporter._queue_depth.set = counting_set  # type: ignore[method-assign]
    await reporter.start()
    await asyncio.sleep(0.5)
    await reporter.stop(deadline=1)
    # About ten intervals passed: a loop that spins instead of waiting wakes thousands of times.
    assert wakeups <= 30


def gzip_list(pieces: list[list[Exchange]]) -> GzipSpanList:
    spans = GzipSpanList()
    for piece in pieces:
        spans.add(encode_slice(piece, ENCODER))
    return spans


@pytest.mark.parametrize("sizes", [[], [0], [1], [25, 25, 10], [3, 0, 4], [0, 0, 2]])
def test_a_gzip_span_list_is_the_json_list_of_every_slice_added(sizes):
    pieces, first = [], 1
    for size in sizes:
        pieces.append([exchange(n) for n in range(first, first + size)])
        first += size
    spans = gzip_list(pieces)
    json_bytes = spans.json_bytes
    payload = spans.close()
    text = gzip.decompress(payload.body)
    decoded = json.loads(text)
    assert payload.spans == len(decoded) == SPANS_PER_EXCHANGE * sum(sizes)
    assert [int(span["traceId"], 16) for span in decoded[::2]] == list(range(1, first))
    assert len(text) == json_bytes
    assert text == b"[" + b",".join(encode_slice(piece, ENCODER).body[1:-1] for piece in pieces if piece) + b"]"


def test_gzipped_is_gzip():
    body = encode_slice([exchange(1)], ENCODER).body
    assert gzip.decompress(gzipped(body)) == body


async def test_a_batch_is_one_gzipped_list_compressed_a_slice_at_a_time():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics, batch_spans=2 * 60, flush_interval=60)
    turns = 0
    done = asyncio.Event()

    async def other_request() -> None:
        nonlocal turns
        while not done.is_set():
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_request())
    await asyncio.sleep(0)
    turns = 0
    await reporter._export([exchange(n) for n in range(1, 61)])
    done.set()
    await task
    [spans] = sender.payloads
    assert [int(str(span["traceId"]), 16) for span in spans[::2]] == list(range(1, 61))
    # Three slices of at most 25: the event loop ran between them, other requests with it.
    assert turns >= 60 // EXCHANGES_PER_SLICE


async def test_a_batch_is_split_into_lists_no_bigger_than_the_limit_before_compression(monkeypatch):
    slice_bytes = len(encode_slice([exchange(n) for n in range(1, 26)], ENCODER).body)
    monkeypatch.setattr("gateway.reporter.MAX_BATCH_BYTES", 3 * slice_bytes)
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics, batch_spans=2 * 400, flush_interval=60)
    await reporter._export([exchange(n) for n in range(1, 401)])
    assert len(sender.payloads) > 1
    assert all(len(json.dumps(spans, separators=(",", ":"))) <= 3 * slice_bytes for spans in sender.payloads)
    assert [int(str(span["traceId"]), 16) for spans in sender.payloads for span in spans[::2]] == list(range(1, 401))
    assert value(metrics, "gateway_spans_reported_total") == 800


def test_encoding_a_slice_leaves_the_garbage_collector_as_it_found_it():
    encode_slice([exchange(1)], ENCODER)
    assert gc.isenabled()
    gc.disable()
    try:
        encode_slice([exchange(1)], ENCODER)
        assert not gc.isenabled()
    finally:
        gc.enable()

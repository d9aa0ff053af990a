from __future__ import annotations

import asyncio
import gc
import gzip
import json

import pytest
from prometheus_client import CollectorRegistry

import gateway.reporter as reporter_module
from gateway.batch_delivery import EXCHANGES_PER_SLICE, BatchDelivery, Sleep
from gateway.metrics import Metrics
from gateway.reporter import Reporter
from gateway.retry_policy import RetryPolicy
from gateway.routes import parse_upstream
from gateway.span_payload import SPANS_PER_EXCHANGE, GzipSpanList, encode_slice, gzipped
from gateway.span_sender import RejectedError, RetryableError
from gateway.spans import Exchange, local_endpoint
from gateway.zipkin_json import ZipkinJsonEncoder
from tests.waiting import ManualSleep, RecordedSleep, until

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
    """Records payloads; fails according to a script of exceptions (None = accept). With a ``gate``, each send waits
    until the gate is open: a collector that answers when the test says so."""

    def __init__(self, script: list[Exception | None] | None = None, gate: asyncio.Event | None = None) -> None:
        self.payloads: list[list[dict[str, object]]] = []
        self.attempts = 0
        self.script = list(script or [])
        self.gate = gate
        self.closed = False

    async def send(self, payload: bytes) -> None:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
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


def make_reporter(sender: FakeSender, metrics: Metrics, sleep: Sleep | None = None, **overrides: float) -> Reporter:
    """A reporter that sleeps with ``sleep``: by default a ``ManualSleep``, so that its flush intervals end only when
    the test says so."""
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
        sleep=sleep if sleep is not None else ManualSleep(),
    )


def delivery(sender: FakeSender, metrics: Metrics) -> BatchDelivery:
    return BatchDelivery(sender, ZipkinJsonEncoder(LOCAL), metrics, "zipkin", RetryPolicy(3), RecordedSleep())


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
    metrics, sender, sleep = Metrics(), FakeSender(), ManualSleep()
    reporter = make_reporter(sender, metrics, sleep, batch_spans=4, flush_interval=30)
    await reporter.start()
    for n in range(1, 3):
        assert reporter.reserve()
        reporter.submit(exchange(n), reserved=True)
    await until(lambda: sender.payloads)  # no interval ever ends: only the full batch can have woken the reporter
    assert len(sender.payloads[0]) == 4
    await reporter.stop(deadline=5)


async def test_a_partial_batch_is_sent_after_the_flush_interval():
    metrics, sender, sleep = Metrics(), FakeSender(), ManualSleep()
    reporter = make_reporter(sender, metrics, sleep, batch_spans=100, flush_interval=0.05)
    await reporter.start()
    assert reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    await sleep.slept(1)
    assert sender.payloads == []  # the reporter waits for its interval
    sleep.elapse()
    await until(lambda: sender.payloads)
    assert len(sender.payloads) == 1
    assert sleep.delays[0] == 0.05
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


async def test_with_one_worker_the_queue_gauges_are_read_when_collected():
    metrics = Metrics()
    reporter = make_reporter(FakeSender(), metrics)
    assert reporter.reserve()
    reporter.submit(exchange(1, "/a"), reserved=True)
    assert reporter.reserve()
    assert value(metrics, "gateway_span_queue_depth") == reporter.queue_depth() == 2 * SPANS_PER_EXCHANGE
    assert value(metrics, "gateway_span_queue_bytes") == reporter.queue_bytes() > 0
    reporter.release()
    assert value(metrics, "gateway_span_queue_depth") == SPANS_PER_EXCHANGE


async def test_with_several_workers_the_queue_gauges_are_refreshed(monkeypatch):
    # Their gauges live in prometheus-client's files, which only a set writes: nothing is read at collection.
    monkeypatch.setattr(reporter_module, "GAUGE_REFRESH", 0.01)
    metrics = Metrics(CollectorRegistry(), multiprocess=True)
    reporter = make_reporter(FakeSender(), metrics, flush_interval=60)
    await reporter.start()
    assert reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    await until(lambda: value(metrics, "gateway_span_queue_depth") == SPANS_PER_EXCHANGE)
    assert value(metrics, "gateway_span_queue_bytes") == reporter.queue_bytes()
    await reporter.stop(deadline=5)
    assert value(metrics, "gateway_span_queue_depth") == 0


async def test_an_unreserved_exchange_is_dropped_whole_when_the_queue_is_full():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics, max_queue_spans=3)
    reporter.submit(exchange(1), reserved=False)
    reporter.submit(exchange(2), reserved=False)
    assert reporter.queue_depth() == 2
    assert value(metrics, "gateway_spans_dropped_total", reason="queue_full") == 2


async def test_sampling_resumes_once_the_queue_drains():
    metrics, sender, sleep = Metrics(), FakeSender(), ManualSleep()
    reporter = make_reporter(sender, metrics, sleep, max_queue_spans=2, flush_interval=0.02)
    await reporter.start()
    assert reporter.reserve()
    assert not reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    await sleep.slept(1)
    sleep.elapse()
    await until(lambda: reporter.queue_depth() == 0)
    assert reporter.reserve()
    assert value(metrics, "gateway_sampling_suspended") == 0
    reporter.submit(exchange(2), reserved=True)
    await reporter.stop(deadline=5)


async def test_retryable_failures_are_retried_then_delivered():
    metrics = Metrics()
    sender, sleep = FakeSender([RetryableError("503"), RetryableError("connection refused"), None]), RecordedSleep()
    reporter = make_reporter(sender, metrics, sleep, max_attempts=3)
    await reporter.start()
    reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    await reporter.stop(deadline=10)
    assert sender.attempts == 3
    assert value(metrics, "gateway_spans_reported_total") == 2
    assert value(metrics, "gateway_span_batches_total", outcome="retried") == 2
    assert len(sleep.delays) == 2  # a pause before each retry


async def test_a_batch_is_dropped_and_counted_after_the_last_attempt():
    metrics = Metrics()
    sender = FakeSender([RetryableError("503")] * 3)
    reporter = make_reporter(sender, metrics, RecordedSleep(), max_attempts=3)
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
    metrics, sender = Metrics(), FakeSender(gate=asyncio.Event())  # a collector that never answers
    reporter = make_reporter(sender, metrics, batch_spans=2)
    await reporter.start()
    for n in range(1, 4):
        reporter.reserve()
        reporter.submit(exchange(n), reserved=True)
    await until(lambda: sender.attempts == 1)
    # A deadline already reached: stop gives up on the batch in flight and the two queued behind it at once.
    await reporter.stop(deadline=0)
    assert value(metrics, "gateway_spans_dropped_total", reason="shutdown") == 6
    assert sender.closed


async def test_new_traces_are_not_sampled_once_stopping():
    metrics, sender = Metrics(), FakeSender()
    reporter = make_reporter(sender, metrics)
    await reporter.start()
    await reporter.stop(deadline=1)
    assert not reporter.reserve()


async def test_a_partial_batch_waits_for_the_interval_even_right_after_an_export():
    # Spans that queue while a POST is in flight wait for a full batch or the interval; sending them at once
    # made batches of a few spans, each POST costing as much as hundreds of spans' encoding.
    metrics, sleep, gate = Metrics(), ManualSleep(), asyncio.Event()
    sender = FakeSender(gate=gate)
    reporter = make_reporter(sender, metrics, sleep, batch_spans=10, flush_interval=0.4)
    await reporter.start()
    for n in range(1, 6):
        assert reporter.reserve()
        reporter.submit(exchange(n), reserved=True)
    await until(lambda: sender.attempts == 1)  # the full batch is in flight
    for n in range(6, 8):
        assert reporter.reserve()
        reporter.submit(exchange(n), reserved=True)
    gate.set()
    await until(lambda: sender.payloads and sleep.sleeping == 1)
    assert len(sender.payloads) == 1, "the two exchanges queued behind the POST went at once"
    sleep.elapse()
    await until(lambda: len(sender.payloads) == 2)
    assert len(sender.payloads[1]) == 2 * SPANS_PER_EXCHANGE
    await reporter.stop(deadline=5)


async def test_an_idle_reporter_sleeps_between_intervals():
    metrics, sender, sleep = Metrics(), FakeSender(), ManualSleep()
    reporter = make_reporter(sender, metrics, sleep, flush_interval=0.05)
    await reporter.start()
    for intervals in range(1, 4):
        await sleep.slept(intervals)
        assert sleep.sleeping == 1
        sleep.elapse()
    await sleep.slept(4)
    await reporter.stop(deadline=1)
    # One sleep of the whole interval each time round: a loop that spins instead of waiting sleeps 0, or never.
    assert sleep.delays == [0.05] * 4
    assert sender.attempts == 0


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
    await delivery(sender, metrics).deliver([exchange(n) for n in range(1, 61)])
    done.set()
    await task
    [spans] = sender.payloads
    assert [int(str(span["traceId"]), 16) for span in spans[::2]] == list(range(1, 61))
    # Three slices of at most 25: the event loop ran between them, other requests with it.
    assert turns >= 60 // EXCHANGES_PER_SLICE


async def test_a_batch_is_split_into_lists_no_bigger_than_the_limit_before_compression(monkeypatch):
    slice_bytes = len(encode_slice([exchange(n) for n in range(1, 26)], ENCODER).body)
    monkeypatch.setattr("gateway.batch_delivery.MAX_BATCH_BYTES", 3 * slice_bytes)
    metrics, sender = Metrics(), FakeSender()
    await delivery(sender, metrics).deliver([exchange(n) for n in range(1, 401)])
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

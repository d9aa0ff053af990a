"""The reporter's bounds and its account of every span: bytes as well as spans, backoff, shutdown."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest

from gateway.batch_delivery import Sleep
from gateway.metrics import Metrics
from gateway.reporter import Reporter
from gateway.span_queue import RESERVED_BYTES, exchange_bytes
from gateway.span_sender import RetryableError
from gateway.spans import local_endpoint
from tests.unit.test_reporter import exchange, value
from tests.waiting import ManualSleep, RecordedSleep

pytestmark = pytest.mark.anyio

LOCAL = local_endpoint("ingress-gateway", "127.0.0.1", 8080)


class Sender:
    """Accepts, or fails as scripted; keeps the trace ids it accepted."""

    def __init__(self, script: list[Exception | None] | None = None) -> None:
        self.script = list(script or [])
        self.trace_ids: list[str] = []
        self.attempts = 0

    async def send(self, payload: bytes) -> None:
        self.attempts += 1
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.trace_ids.extend(span["traceId"] for span in json.loads(gzip.decompress(payload)))

    async def aclose(self) -> None:
        return None


def make(sender: Sender, metrics: Metrics, sleep: Sleep | None = None, **options: int | float) -> Reporter:
    """A reporter whose flush intervals end only when the test says so, unless it passes a ``sleep`` of its own."""
    settings: dict[str, int | float] = {
        "max_queue_spans": 1000,
        "max_queue_bytes": 1024 * 1024,
        "batch_spans": 10,
        "flush_interval": 0.01,
        "max_attempts": 3,
        **options,
    }
    return Reporter(
        sender,
        LOCAL,
        metrics,
        max_queue_spans=int(settings["max_queue_spans"]),
        max_queue_bytes=int(settings["max_queue_bytes"]),
        batch_spans=int(settings["batch_spans"]),
        flush_interval=settings["flush_interval"],
        max_attempts=int(settings["max_attempts"]),
        sleep=sleep if sleep is not None else ManualSleep(),
        # The jitter at its top, so that each pause is the whole backoff.
        jitter=lambda low, high: high,
    )


async def test_the_queue_is_bounded_in_bytes_and_sampling_stops_when_they_run_out() -> None:
    metrics = Metrics()
    long_path = "/" + "x" * 3000
    per_exchange = exchange_bytes(exchange(0, long_path))
    reporter = make(Sender(), metrics, max_queue_bytes=10 * per_exchange)
    admitted = 0
    while reporter.reserve():
        reporter.submit(exchange(admitted + 1, long_path), reserved=True)
        admitted += 1
        assert admitted < 100, "the byte bound never stopped sampling"
    assert 9 <= admitted <= 10
    assert reporter.queue_bytes() <= 10 * per_exchange + RESERVED_BYTES
    assert reporter.queue_depth() == 2 * admitted < 1000
    assert value(metrics, "gateway_sampling_suspended") == 1
    # A trace decided upstream (not reserved) does not fit either: dropped whole, counted.
    reporter.submit(exchange(500, long_path), reserved=False)
    assert value(metrics, "gateway_spans_dropped_total", reason="queue_full") == 2


async def test_the_bytes_are_given_back_once_a_batch_is_sent() -> None:
    metrics, sender = Metrics(), Sender()
    reporter = make(sender, metrics, batch_spans=4)
    await reporter.start()
    for n in range(1, 6):
        assert reporter.reserve()
        reporter.submit(exchange(n, "/" + "y" * 1000), reserved=True)
    await reporter.stop(deadline=5)
    assert len(sender.trace_ids) == 10
    assert reporter.queue_bytes() == 0
    assert value(metrics, "gateway_span_queue_bytes") == 0


async def test_retries_back_off_exponentially_up_to_a_cap() -> None:
    metrics, sleep = Metrics(), RecordedSleep()
    sender = Sender([RetryableError("503")] * 9)
    reporter = make(sender, metrics, sleep, max_attempts=10)
    await reporter.start()
    assert reporter.reserve()
    reporter.submit(exchange(1), reserved=True)
    await reporter.stop(deadline=5)

    assert sleep.delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert sender.attempts == 10 and len(sender.trace_ids) == 2
    assert value(metrics, "gateway_spans_reported_total") == 2


async def test_spans_submitted_while_stopping_are_still_sent() -> None:
    metrics, sender = Metrics(), Sender()
    reporter = make(sender, metrics, flush_interval=30, batch_spans=1000)
    await reporter.start()
    assert reporter.reserve()
    # A request cancelled at the end of a graceful shutdown submits from its `finally`, after stop() has begun.
    asyncio.get_running_loop().call_soon(reporter.submit, exchange(7), True)
    await reporter.stop(deadline=5)
    assert len(sender.trace_ids) == 2
    assert value(metrics, "gateway_spans_dropped_total") == 0


async def test_spans_submitted_after_the_reporter_stopped_are_counted_as_lost_to_the_shutdown() -> None:
    metrics, sender = Metrics(), Sender()
    reporter = make(sender, metrics)
    await reporter.start()
    assert reporter.reserve()
    await reporter.stop(deadline=5)
    reporter.submit(exchange(1), reserved=True)
    reporter.submit(exchange(2), reserved=False)
    assert sender.trace_ids == []
    assert value(metrics, "gateway_spans_dropped_total", reason="shutdown") == 2
    assert value(metrics, "gateway_spans_dropped_total", reason="queue_full") == 2

"""Span export: a queue bounded in spans and bytes, batches, retries, a flush on shutdown. Never in a request's way.

Modelled on OpenTelemetry's BatchProcessor, with one change: a trace's spans are queued together or not at all, and
room is reserved when a new trace is sampled, so that a full queue stops sampling instead of dropping half traces.
A batch the collector cannot take now (down, refusing, slow, 5xx, a reset connection) is retried with exponential
backoff while the spans behind it wait in the queue: an outage fills the queue and suspends sampling, and the traces
already sampled are delivered, whole, once the collector is back.

The queue's bookkeeping is `span_queue.py`, a batch's encoding and retries `batch_delivery.py`, the backoff
`retry_policy.py` and the collector seam `span_sender.py`; this module runs the loop between them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from py_zipkin.encoding import Endpoint

from gateway.batch_delivery import BatchDelivery, Sleep
from gateway.logs import RateLimitedLog
from gateway.metrics import Metrics
from gateway.retry_policy import RetryPolicy
from gateway.span_payload import SPANS_PER_EXCHANGE, SpanEncoder
from gateway.span_queue import QUEUE_FULL, SHUTDOWN, SpanQueue
from gateway.span_sender import SpanSender
from gateway.spans import Exchange
from gateway.zipkin_json import ZipkinJsonEncoder

logger = logging.getLogger("gateway.reporter")

# Seconds between refreshes of the queue's gauges when several workers share prometheus-client's files: a scrape
# sees them at most this old, as it sees the connection gauges (gateway/client_guard.py).
GAUGE_REFRESH = 1.0


class SpanReporter(Protocol):
    def reserve(self) -> bool: ...

    def release(self) -> None:
        """Gives back a reservation whose trace was not sampled after all (another exporter had no room)."""
        ...

    def submit(self, exchange: Exchange, reserved: bool) -> None: ...

    async def start(self) -> None: ...

    async def stop(self, deadline: float) -> None: ...


class DisabledReporter:
    """GATEWAY_ZIPKIN_URL and GATEWAY_OTLP_URL are empty: decisions still travel upstream, but nothing is exported."""

    def reserve(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def submit(self, exchange: Exchange, reserved: bool) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self, deadline: float) -> None:
        return None


class Reporter:
    def __init__(
        self,
        sender: SpanSender,
        local_endpoint: Endpoint,
        metrics: Metrics,
        *,
        max_queue_spans: int,
        batch_spans: int,
        flush_interval: float,
        max_attempts: int,
        max_queue_bytes: int = 16 * 1024 * 1024,
        encoder: SpanEncoder | None = None,
        exporter: str = "zipkin",
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        """``encoder`` writes the spans (Zipkin v2 JSON for ``local_endpoint`` unless given); ``exporter`` labels
        this reporter's metrics. ``sleep`` waits out flush intervals and backoff pauses, and ``jitter`` spreads the
        pauses (`RetryPolicy`): tests pass fakes, so that no time has to pass."""
        self._sender = sender
        self._queue = SpanQueue(max_queue_spans, max_queue_bytes, max(1, batch_spans // SPANS_PER_EXCHANGE))
        self._delivery = BatchDelivery(
            sender,
            encoder if encoder is not None else ZipkinJsonEncoder(local_endpoint),
            metrics,
            exporter,
            RetryPolicy(max_attempts, jitter),
            sleep,
        )
        self._flush_interval = flush_interval
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._suspended = False
        self._full_log = RateLimitedLog(logger)
        self._dropped_queue_full = metrics.spans_dropped.labels(exporter, QUEUE_FULL)
        self._dropped_shutdown = metrics.spans_dropped.labels(exporter, SHUTDOWN)
        self._queue_depth = metrics.span_queue_depth.labels(exporter)
        self._queue_bytes = metrics.span_queue_bytes.labels(exporter)
        # The queue's gauges are read when /metrics is collected rather than set on every sampled request: a set
        # takes prometheus-client's lock, about 0.4 us, a twentieth of what tracing a request cost. Several workers'
        # gauges live in prometheus-client's files, which only a set writes: those are refreshed every GAUGE_REFRESH
        # seconds instead.
        self._refresh_gauges = metrics.shared_files
        if not self._refresh_gauges:
            self._queue_depth.set_function(self._queue.spans)
            self._queue_bytes.set_function(self._queue.estimated_bytes)
        self._refresher: asyncio.Task[None] | None = None
        self._suspended_gauge = metrics.sampling_suspended.labels(exporter)

    def reserve(self) -> bool:
        """Holds room for one sampled exchange's spans; False (and sampling suspended) when there is none."""
        if self._stopping or not self._queue.reserve():
            self._set_suspended(True)
            self._full_log.warning("span queue full: new traces are not sampled until the collector catches up")
            return False
        if self._suspended:
            self._set_suspended(False)
        return True

    def release(self) -> None:
        self._queue.release()

    def submit(self, exchange: Exchange, reserved: bool) -> None:
        """Queues one exchange's spans, in the room reserved for them, or drops both if there is none.

        A reserved exchange is queued even a little past the byte bound (its size is known only now), unless the
        reporter has stopped: then its spans are counted as lost to the shutdown.
        """
        dropped = self._queue.submit(exchange, reserved)
        if dropped is not None:
            counter = self._dropped_shutdown if dropped == SHUTDOWN else self._dropped_queue_full
            counter.inc(SPANS_PER_EXCHANGE)
            return
        if self._queue.full_batch:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="span-reporter")
        if self._refresh_gauges:
            self._refresher = asyncio.create_task(self._refresh_gauges_forever(), name="span-queue-gauges")

    async def stop(self, deadline: float) -> None:
        """Sends everything queued, giving up (and counting the loss) after `deadline` seconds."""
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + deadline
        # Requests cancelled at the end of a graceful shutdown submit their exchanges from `finally` blocks that run
        # only once this task yields: let them, and drain again whatever arrived after the reporter's loop ended.
        await asyncio.sleep(0)
        try:
            while self._task is not None:
                await asyncio.wait_for(asyncio.shield(self._task), max(0.0, give_up_at - loop.time()))
                self._task = asyncio.create_task(self._run(), name="span-reporter") if self._queue else None
        except TimeoutError:
            if self._task is not None:
                self._task.cancel()
        if self._refresher is not None:
            self._refresher.cancel()
        lost = self._queue.close()
        if lost:
            self._dropped_shutdown.inc(lost)
            logger.error("shutdown deadline reached: %d spans not reported", lost)
        self._update_gauges()
        await self._sender.aclose()

    def queue_depth(self) -> int:
        return self._queue.spans()

    def queue_bytes(self) -> int:
        """Estimated bytes held by queued and in-flight exchanges, and by reservations."""
        return self._queue.estimated_bytes()

    def _set_suspended(self, suspended: bool) -> None:
        if suspended != self._suspended:
            self._suspended = suspended
            self._suspended_gauge.set(int(suspended))

    def _update_gauges(self) -> None:
        if self._refresh_gauges:
            self._queue_depth.set(self._queue.spans())
            self._queue_bytes.set(self._queue.estimated_bytes())

    async def _refresh_gauges_forever(self) -> None:
        while True:
            await asyncio.sleep(GAUGE_REFRESH)
            self._update_gauges()

    async def _run(self) -> None:
        # A full batch goes at once; a partial one only after a flush interval with no full batch. Sending whatever
        # queued while the last POST was in flight made batches of a few dozen spans, and each POST costs as much
        # as encoding hundreds of spans.
        while True:
            self._update_gauges()
            if self._queue.has_full_batch() or (self._stopping and self._queue):
                await self._export(self._take_batch())
                continue
            if self._stopping:
                return
            self._wake.clear()
            if not await self._woken_within(self._flush_interval) and self._queue:
                await self._export(self._take_batch())

    async def _woken_within(self, seconds: float) -> bool:
        """Waits for a wake-up or for ``seconds`` of sleep, whichever ends first; True when woken."""
        woken = asyncio.ensure_future(self._wake.wait())
        slept = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait((woken, slept), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            slept.cancel()
        return self._wake.is_set()

    def _take_batch(self) -> list[Exchange]:
        batch = self._queue.take_batch()
        self._update_gauges()
        return batch

    async def _export(self, batch: Sequence[Exchange]) -> None:
        try:
            await self._delivery.deliver(batch)
        finally:
            self._queue.batch_done()
            self._update_gauges()

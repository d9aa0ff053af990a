"""Span export: a queue bounded in spans and bytes, batches, retries, a flush on shutdown. Never in a request's way.

Modelled on OpenTelemetry's BatchProcessor, with one change: a trace's spans are queued together or not at all, and
room is reserved when a new trace is sampled, so that a full queue stops sampling instead of dropping half traces.
A batch the collector cannot take now (down, refusing, slow, 5xx, a reset connection) is retried with exponential
backoff while the spans behind it wait in the queue: an outage fills the queue and suspends sampling, and the traces
already sampled are delivered, whole, once the collector is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import httpx
from py_zipkin.encoding import Endpoint

from gateway.logs import RateLimitedLog
from gateway.metrics import SPAN_BATCH_OUTCOMES, SPAN_DROP_REASONS, Metrics
from gateway.span_payload import (
    SPANS_PER_EXCHANGE,
    GzipSpanList,
    Payload,
    SpanEncoder,
    encode_slice,
)
from gateway.spans import Exchange
from gateway.zipkin_json import ZipkinJsonEncoder

# The most JSON (before compression) in one POST: a batch whose texts are long is split.
MAX_BATCH_BYTES = 4 * 1024 * 1024
# A batch is encoded and compressed in slices with the event loop let in between: done in one go, a batch of 500
# exchanges would hold every request in flight for a millisecond or more (about 2.4 us each), adding to their latency.
EXCHANGES_PER_SLICE = 25
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
# A collector's Retry-After is honoured up to this many seconds: longer, and the queue would fill behind one batch.
RETRY_AFTER_MAX = 30.0
# An exchange's memory besides its path, name and host (tracemalloc: about 500 bytes for the object, its ints, floats
# and short strings, plus the client address string and the deque slot).
EXCHANGE_BYTES = 640
# Room held for a sampled request in flight, until its exchange arrives with its real size.
RESERVED_BYTES = 1024
# Longer paths, names and hosts are cut in the spans: a client's 60 KiB URL must not cost 60 KiB per queued exchange,
# and a tag that long is of no use in a trace view anyway.
MAX_TEXT_CHARS = 4096
TRUNCATED_MARK = "\u2026"
_RETRYABLE_STATUSES = frozenset({408, 429})
# The reporter's own requests must not start traces in a meshed collector: a B3 "deny" decision.
_SPAN_POST_HEADERS = {"content-type": "application/json", "content-encoding": "gzip", "b3": "0"}

logger = logging.getLogger("gateway.reporter")


class RetryableError(Exception):
    """The collector may accept the same batch later (5xx, 408, 429, connection errors, timeouts).

    ``retry_after`` is the collector's Retry-After in seconds, when it said one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RejectedError(Exception):
    """The collector refused the batch (any other 4xx, or a redirect): sending it again would not help."""


class SpanSender(Protocol):
    async def send(self, payload: bytes) -> int | None:
        """Delivers ``payload``, a gzip-compressed document of spans, or raises one of the errors above; returns
        how many of its spans the collector accepted the request but refused (an OTLP partial success), if any."""
        ...

    async def aclose(self) -> None: ...


class HttpSpanSender:
    """POSTs gzip-compressed Zipkin v2 JSON to the collector with httpx."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout, trust_env=False, headers=_SPAN_POST_HEADERS)

    async def send(self, payload: bytes) -> None:
        response = await post_payload(self._client, self._url, payload)
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in _RETRYABLE_STATUSES or status >= 500:
            raise RetryableError(f"collector answered {status}")
        if 300 <= status < 400:
            # Redirects are not followed: a 3xx taken for success would count spans reported that went nowhere.
            location = response.headers.get("location", "")
            raise RejectedError(f"collector answered {status} to {location!r}: GATEWAY_ZIPKIN_URL should be the target")
        raise RejectedError(f"collector answered {status}: {response.text[:200]}")

    async def aclose(self) -> None:
        await self._client.aclose()


async def post_payload(client: httpx.AsyncClient, url: str, payload: bytes) -> httpx.Response:
    """POSTs a batch; a connection that fails or times out is a RetryableError (the collector may be back soon)."""
    try:
        return await client.post(url, content=payload)
    except httpx.TransportError as exc:
        raise RetryableError(f"{type(exc).__name__}: {exc}") from exc


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
    ) -> None:
        """``encoder`` writes the spans (Zipkin v2 JSON for ``local_endpoint`` unless given); ``exporter`` labels
        this reporter's metrics."""
        self._sender = sender
        self._encoder: SpanEncoder = encoder if encoder is not None else ZipkinJsonEncoder(local_endpoint)
        self._exporter = exporter
        self._metrics = metrics
        self._max_spans = max_queue_spans
        self._max_bytes = max_queue_bytes
        self._batch_exchanges = max(1, batch_spans // SPANS_PER_EXCHANGE)
        self._flush_interval = flush_interval
        self._max_attempts = max_attempts
        self._queue: deque[Exchange] = deque()
        self._reserved = 0
        self._in_flight = 0
        # Estimated bytes of the exchanges queued or in flight, plus RESERVED_BYTES per reservation.
        self._bytes = 0
        self._in_flight_bytes = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._suspended = False
        self._full_log = RateLimitedLog(logger)
        self._retry_log = RateLimitedLog(logger)
        self._dropped = {reason: metrics.spans_dropped.labels(exporter, reason) for reason in SPAN_DROP_REASONS}
        self._batches = {outcome: metrics.span_batches.labels(exporter, outcome) for outcome in SPAN_BATCH_OUTCOMES}
        self._reported = metrics.spans_reported.labels(exporter)
        self._dropped_queue_full = self._dropped["queue_full"]
        self._dropped_shutdown = self._dropped["shutdown"]
        self._queue_depth = metrics.span_queue_depth.labels(exporter)
        self._queue_bytes = metrics.span_queue_bytes.labels(exporter)
        self._suspended_gauge = metrics.sampling_suspended.labels(exporter)
        self._partial_log = RateLimitedLog(logger)

    def reserve(self) -> bool:
        """Holds room for one sampled exchange's spans; False (and sampling suspended) when there is none."""
        if (
            self._used() + SPANS_PER_EXCHANGE > self._max_spans
            or self._bytes + RESERVED_BYTES > self._max_bytes
            or self._stopping
        ):
            self._set_suspended(True)
            self._full_log.warning("span queue full: new traces are not sampled until the collector catches up")
            return False
        self._reserved += SPANS_PER_EXCHANGE
        self._bytes += RESERVED_BYTES
        self._queue_depth.set(self._used())
        if self._suspended:
            self._set_suspended(False)
        return True

    def release(self) -> None:
        self._reserved -= SPANS_PER_EXCHANGE
        self._bytes -= RESERVED_BYTES
        self._queue_depth.set(self._used())

    def submit(self, exchange: Exchange, reserved: bool) -> None:
        """Queues one exchange's spans, in the room reserved for them, or drops both if there is none.

        A reserved exchange is queued even a little past the byte bound (its size is known only now), unless the
        reporter has stopped: then its spans are counted as lost to the shutdown.
        """
        exchange = with_texts_cut(exchange)
        size = exchange_bytes(exchange)
        if reserved:
            self._reserved -= SPANS_PER_EXCHANGE
            if self._closed:
                self._dropped_shutdown.inc(SPANS_PER_EXCHANGE)
                return
            self._bytes += size - RESERVED_BYTES
        elif (
            self._closed or self._used() + SPANS_PER_EXCHANGE > self._max_spans or self._bytes + size > self._max_bytes
        ):
            self._dropped_queue_full.inc(SPANS_PER_EXCHANGE)
            return
        else:
            self._bytes += size
            self._queue_depth.set(self._used() + SPANS_PER_EXCHANGE)
        self._queue.append(exchange)
        if len(self._queue) >= self._batch_exchanges:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="span-reporter")

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
        lost = len(self._queue) * SPANS_PER_EXCHANGE + self._in_flight
        if lost:
            self._dropped_shutdown.inc(lost)
            logger.error("shutdown deadline reached: %d spans not reported", lost)
            self._queue.clear()
            self._in_flight = 0
        self._closed = True
        self._bytes = self._in_flight_bytes = 0
        self._update_gauges()
        await self._sender.aclose()

    def queue_depth(self) -> int:
        return self._used()

    def queue_bytes(self) -> int:
        """Estimated bytes held by queued and in-flight exchanges, and by reservations."""
        return self._bytes

    def _set_suspended(self, suspended: bool) -> None:
        if suspended != self._suspended:
            self._suspended = suspended
            self._suspended_gauge.set(int(suspended))

    def _used(self) -> int:
        return len(self._queue) * SPANS_PER_EXCHANGE + self._reserved + self._in_flight

    def _update_gauges(self) -> None:
        self._queue_depth.set(self._used())
        self._queue_bytes.set(self._bytes)

    async def _run(self) -> None:
        # A full batch goes at once; a partial one only after a flush interval with no full batch. Sending whatever
        # queued while the last POST was in flight made batches of a few dozen spans, and each POST costs as much
        # as encoding hundreds of spans.
        while True:
            self._update_gauges()
            if len(self._queue) >= self._batch_exchanges or (self._stopping and self._queue):
                await self._export(self._take_batch())
                continue
            if self._stopping:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            except TimeoutError:
                if self._queue:
                    await self._export(self._take_batch())

    def _take_batch(self) -> list[Exchange]:
        count = min(len(self._queue), self._batch_exchanges)
        batch = [self._queue.popleft() for _ in range(count)]
        self._in_flight = count * SPANS_PER_EXCHANGE
        # Recomputed rather than stored with each exchange: the queued copy's texts were cut when it was submitted.
        self._in_flight_bytes = sum(exchange_bytes(exchange) for exchange in batch)
        self._update_gauges()
        return batch

    async def _export(self, batch: Sequence[Exchange]) -> None:
        spans = len(batch) * SPANS_PER_EXCHANGE
        try:
            for payload in await self._payloads(batch):
                await self._send_with_retries(payload.body, payload.spans)
        except Exception:
            # A bug in encoding must cost spans, never the reporter: the loop goes on with the next batch.
            logger.exception("could not encode a span batch")
            self._dropped["encode_error"].inc(spans)
        finally:
            self._in_flight = 0
            self._bytes -= self._in_flight_bytes
            self._in_flight_bytes = 0
            self._update_gauges()

    async def _payloads(self, batch: Sequence[Exchange]) -> list[Payload]:
        """The batch's spans as gzipped documents of at most MAX_BATCH_BYTES before compression (one, unless its
        texts are long: a slice alone is far smaller, its paths, names and hosts cut to MAX_TEXT_CHARS)."""
        payloads: list[Payload] = []
        framing = self._encoder.framing
        current = GzipSpanList(framing)
        for start in range(0, len(batch), EXCHANGES_PER_SLICE):
            piece = encode_slice(batch[start : start + EXCHANGES_PER_SLICE], self._encoder)
            if current.spans and current.json_bytes + len(piece.body) > MAX_BATCH_BYTES:
                payloads.append(current.close())
                current = GzipSpanList(framing)
            current.add(piece)
            await asyncio.sleep(0)
        payloads.append(current.close())
        return payloads

    async def _send_with_retries(self, payload: bytes, span_count: int) -> None:
        delay = BACKOFF_FIRST
        for attempt in range(1, self._max_attempts + 1):
            try:
                refused = await self._sender.send(payload) or 0
            except RejectedError as exc:
                logger.error("%s collector rejected %d spans: %s", self._exporter, span_count, exc)
                self._batches["failed"].inc()
                self._dropped["rejected"].inc(span_count)
                return
            except RetryableError as exc:
                if attempt == self._max_attempts:
                    logger.warning(
                        "giving up on %d spans for %s after %d attempts: %s", span_count, self._exporter, attempt, exc
                    )
                    self._batches["failed"].inc()
                    self._dropped["retries_exhausted"].inc(span_count)
                    return
                self._batches["retried"].inc()
                if attempt == 1:
                    self._retry_log.warning(
                        f"{self._exporter} collector unavailable, retrying span batches with backoff: {exc}"
                    )
                pause = delay * random.uniform(0.5, 1.0)
                if exc.retry_after is not None:
                    pause = max(pause, min(exc.retry_after, RETRY_AFTER_MAX))
                await asyncio.sleep(pause)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            refused = min(max(0, refused), span_count)
            if refused:
                # OTLP's partial success: the request was accepted, some spans were not; sending again would not help.
                self._partial_log.warning(f"{self._exporter} collector refused {refused} of {span_count} spans")
                self._dropped["partially_rejected"].inc(refused)
            self._batches["ok"].inc()
            self._reported.inc(span_count - refused)
            return


def with_texts_cut(exchange: Exchange) -> Exchange:
    """``exchange``, or a copy of it with a path, name or host longer than MAX_TEXT_CHARS cut: never changed in place
    (the request flow, a test or another exporter may hold the same record)."""
    if max(len(exchange.path), len(exchange.name), len(exchange.host)) <= MAX_TEXT_CHARS:
        return exchange
    return dataclasses.replace(exchange, path=_cut(exchange.path), name=_cut(exchange.name), host=_cut(exchange.host))


def exchange_bytes(exchange: Exchange) -> int:
    """The memory an exchange holds, estimated."""
    return EXCHANGE_BYTES + len(exchange.path) + len(exchange.name) + len(exchange.host)


def _cut(text: str) -> str:
    return _truncated(text) if len(text) > MAX_TEXT_CHARS else text


def _truncated(text: str) -> str:
    return text[: MAX_TEXT_CHARS - len(TRUNCATED_MARK)] + TRUNCATED_MARK

"""One span batch to the collector: encoded a slice at a time into gzipped documents, each sent with retries, and
every span counted as reported or dropped with its reason."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from gateway.logs import RateLimitedLog
from gateway.metrics import SPAN_BATCH_OUTCOMES, SPAN_DROP_REASONS, Metrics
from gateway.retry_policy import RetryPolicy
from gateway.span_payload import SPANS_PER_EXCHANGE, GzipSpanList, Payload, SpanEncoder, encode_slice
from gateway.span_sender import RejectedError, RetryableError, SpanSender
from gateway.spans import Exchange

# The most JSON (before compression) in one POST: a batch whose texts are long is split.
MAX_BATCH_BYTES = 4 * 1024 * 1024
# A batch is encoded and compressed in slices with the event loop let in between: done in one go, a batch of 500
# exchanges would hold every request in flight for a millisecond or more (about 2.8 us each), adding to their latency.
# 50 holds them for about 0.15 ms; each slice costs about 35,000 instructions besides its spans.
EXCHANGES_PER_SLICE = 50

Sleep = Callable[[float], Awaitable[None]]

logger = logging.getLogger("gateway.reporter")


class BatchDelivery:
    """Delivers batches through ``sender`` in ``encoder``'s format; ``exporter`` labels the metrics. ``sleep`` waits
    out the pauses between attempts (``asyncio.sleep`` unless a test passes a fake)."""

    def __init__(
        self,
        sender: SpanSender,
        encoder: SpanEncoder,
        metrics: Metrics,
        exporter: str,
        retry_policy: RetryPolicy,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._sender = sender
        self._encoder = encoder
        self._exporter = exporter
        self._retry_policy = retry_policy
        self._sleep = sleep
        self._dropped = {reason: metrics.spans_dropped.labels(exporter, reason) for reason in SPAN_DROP_REASONS}
        self._batches = {outcome: metrics.span_batches.labels(exporter, outcome) for outcome in SPAN_BATCH_OUTCOMES}
        self._reported = metrics.spans_reported.labels(exporter)
        self._retry_log = RateLimitedLog(logger)
        self._partial_log = RateLimitedLog(logger)

    async def deliver(self, batch: Sequence[Exchange]) -> None:
        """Sends the batch's spans; errors are logged and counted, never raised."""
        spans = len(batch) * SPANS_PER_EXCHANGE
        try:
            for payload in await self._payloads(batch):
                await self._send_with_retries(payload.body, payload.spans)
        except Exception:
            # A bug in encoding must cost spans, never the reporter: the loop goes on with the next batch.
            logger.exception("could not encode a span batch")
            self._dropped["encode_error"].inc(spans)

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
        for attempt in range(1, self._retry_policy.max_attempts + 1):
            try:
                refused = await self._sender.send(payload) or 0
            except RejectedError as exc:
                logger.error("%s collector rejected %d spans: %s", self._exporter, span_count, exc)
                self._batches["failed"].inc()
                self._dropped["rejected"].inc(span_count)
                return
            except RetryableError as exc:
                if self._retry_policy.is_last(attempt):
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
                await self._sleep(self._retry_policy.pause(attempt, exc.retry_after))
                continue
            refused = min(max(0, refused), span_count)
            if refused:
                # OTLP's partial success: the request was accepted, some spans were not; sending again would not help.
                self._partial_log.warning(f"{self._exporter} collector refused {refused} of {span_count} spans")
                self._dropped["partially_rejected"].inc(refused)
            self._batches["ok"].inc()
            self._reported.inc(span_count - refused)
            return

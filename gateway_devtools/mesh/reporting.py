"""Sends a service's finished spans to the collector in batches, from a background task: never in a request's way.

A small cousin of the gateway's Reporter: a request's spans are queued together or dropped together when the queue
is full, a failed batch is logged (at most every few seconds) and dropped, and stopping drains by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence

from py_zipkin.encoding import Span

from gateway.logs import RateLimitedLog
from gateway.span_payload import gzipped
from gateway.span_sender import RejectedError, RetryableError, SpanSender
from gateway.zipkin_json import encode_spans

DEFAULT_MAX_QUEUE = 10_000
DEFAULT_BATCH_SIZE = 200
DEFAULT_FLUSH_INTERVAL = 0.5

logger = logging.getLogger("gateway_devtools.mesh")


class SpanBatcher:
    def __init__(
        self,
        sender: SpanSender,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
    ) -> None:
        self._sender = sender
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue: deque[Span] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._failure_log = RateLimitedLog(logger)
        self.dropped = 0

    def submit(self, spans: Sequence[Span]) -> None:
        """Queues one request's spans, or drops (and counts) all of them when they do not fit."""
        if len(self._queue) + len(spans) > self._max_queue:
            self.dropped += len(spans)
            self._failure_log.warning("span queue full: dropping spans")
            return
        self._queue.extend(spans)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mesh-span-batcher")

    async def stop(self, deadline: float) -> None:
        """Sends what is queued, giving up after `deadline` seconds, then closes the sender."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, deadline)
            except TimeoutError:
                self.dropped += len(self._queue)
                logger.warning("shutdown deadline reached: %d spans not reported", len(self._queue))
        await self._sender.aclose()

    async def _run(self) -> None:
        while True:
            if not self._stopping and len(self._queue) < self._batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            while self._queue:
                await self._send([self._queue.popleft() for _ in range(min(len(self._queue), self._batch_size))])
            if self._stopping:
                return

    async def _send(self, batch: list[Span]) -> None:
        try:
            await self._sender.send(gzipped(encode_spans(batch)))
        except (RetryableError, RejectedError) as exc:
            self.dropped += len(batch)
            self._failure_log.warning(f"could not report {len(batch)} spans: {exc}")
        except Exception:
            # A bug in encoding must cost spans, never the batcher: the loop goes on with the next batch.
            self.dropped += len(batch)
            logger.exception("could not encode %d spans", len(batch))

"""The reporter's queue and its account: exchanges held, bounded in spans and in estimated bytes, room reserved.

Pure bookkeeping, no I/O: the reporter asks it what to admit and what to send, and counts what it refuses.
A trace's spans are admitted together or not at all, and room is reserved when a new trace is sampled, so that a full
queue stops sampling instead of dropping half traces.
"""

from __future__ import annotations

import dataclasses

from gateway.span_payload import SPANS_PER_EXCHANGE
from gateway.spans import Exchange

# An exchange's memory besides its path, name and host (tracemalloc: about 500 bytes for the object, its ints, floats
# and short strings, plus the client address string and the deque slot).
EXCHANGE_BYTES = 640
# Room held for a sampled request in flight, until its exchange arrives with its real size.
RESERVED_BYTES = 1024
# Longer paths, names and hosts are cut in the spans: a client's 60 KiB URL must not cost 60 KiB per queued exchange,
# and a tag that long is of no use in a trace view anyway.
MAX_TEXT_CHARS = 4096
TRUNCATED_MARK = "\u2026"
# Why submit() refused an exchange: the reason labels of gateway_spans_dropped_total.
QUEUE_FULL = "queue_full"
SHUTDOWN = "shutdown"


class SpanQueue:
    """Exchanges waiting to be exported, the batch in flight and the reservations, within ``max_spans`` spans and
    ``max_bytes`` estimated bytes; batches of ``batch_exchanges``."""

    def __init__(self, max_spans: int, max_bytes: int, batch_exchanges: int) -> None:
        self._max_spans = max_spans
        self._max_bytes = max_bytes
        self._batch_exchanges = batch_exchanges
        # A list, not a deque: a batch is usually everything waiting, taken whole by swapping in a new list.
        self._waiting: list[Exchange] = []
        self._waiting_bytes = 0  # the estimated bytes of the exchanges waiting, a part of _bytes
        self._reserved = 0
        self._in_flight = 0
        # Estimated bytes of the exchanges queued or in flight, plus RESERVED_BYTES per reservation.
        self._bytes = 0
        self._in_flight_bytes = 0
        self._closed = False
        # Whether a whole batch waits: kept up to date by whatever adds or takes exchanges, so that the reporter
        # reads an attribute after each submit rather than calls a method.
        self.full_batch = False

    def __len__(self) -> int:
        """Exchanges waiting, not counting the batch in flight."""
        return len(self._waiting)

    def spans(self) -> int:
        """Spans waiting, in flight or reserved."""
        return len(self._waiting) * SPANS_PER_EXCHANGE + self._reserved + self._in_flight

    def estimated_bytes(self) -> int:
        """Estimated bytes held by waiting and in-flight exchanges, and by reservations."""
        return self._bytes

    def has_full_batch(self) -> bool:
        return self.full_batch

    def reserve(self) -> bool:
        """Holds room for one sampled exchange's spans; False when there is none."""
        # spans() inline: this runs on every sampled request, and a call costs as much as the sums.
        if (
            len(self._waiting) * SPANS_PER_EXCHANGE + self._reserved + self._in_flight + SPANS_PER_EXCHANGE
            > self._max_spans
            or self._bytes + RESERVED_BYTES > self._max_bytes
        ):
            return False
        self._reserved += SPANS_PER_EXCHANGE
        self._bytes += RESERVED_BYTES
        return True

    def release(self) -> None:
        self._reserved -= SPANS_PER_EXCHANGE
        self._bytes -= RESERVED_BYTES

    def submit(self, exchange: Exchange, reserved: bool) -> str | None:
        """Queues one exchange's spans, in the room reserved for them, or returns why both are dropped
        (QUEUE_FULL, SHUTDOWN).

        A reserved exchange is queued even a little past the byte bound (its size is known only now), unless the
        queue is closed: then its spans are lost to the shutdown.
        """
        texts = len(exchange.path) + len(exchange.name) + len(exchange.host)
        if texts > MAX_TEXT_CHARS:
            exchange = with_texts_cut(exchange)
            texts = len(exchange.path) + len(exchange.name) + len(exchange.host)
        size = EXCHANGE_BYTES + texts  # exchange_bytes(), inline: this runs on every sampled request
        if reserved:
            self._reserved -= SPANS_PER_EXCHANGE
            if self._closed:
                return SHUTDOWN
            self._bytes += size - RESERVED_BYTES
        elif (
            self._closed or self.spans() + SPANS_PER_EXCHANGE > self._max_spans or self._bytes + size > self._max_bytes
        ):
            return QUEUE_FULL
        else:
            self._bytes += size
        self._waiting.append(exchange)
        self._waiting_bytes += size
        self.full_batch = len(self._waiting) >= self._batch_exchanges
        return None

    def take_batch(self) -> list[Exchange]:
        """The next batch, in flight (and still counted) until ``batch_done``."""
        waiting = self._waiting
        count = min(len(waiting), self._batch_exchanges)
        if count == len(waiting):
            batch, self._waiting = waiting, []
            in_flight_bytes = self._waiting_bytes
        else:  # a backlog (the collector was slow or down): the batch's share of the bytes, counted again
            batch = waiting[:count]
            del waiting[:count]
            in_flight_bytes = count * EXCHANGE_BYTES + sum(
                [len(exchange.path) + len(exchange.name) + len(exchange.host) for exchange in batch]
            )
        self._waiting_bytes -= in_flight_bytes
        self._in_flight_bytes = in_flight_bytes
        self.full_batch = len(self._waiting) >= self._batch_exchanges
        self._in_flight = count * SPANS_PER_EXCHANGE
        return batch

    def batch_done(self) -> None:
        self._in_flight = 0
        self._bytes -= self._in_flight_bytes
        self._in_flight_bytes = 0

    def close(self) -> int:
        """Empties the queue for good; returns the spans it still held, waiting or in flight (lost)."""
        lost = len(self._waiting) * SPANS_PER_EXCHANGE + self._in_flight
        if lost:
            self._waiting.clear()
            self._waiting_bytes = 0
            self.full_batch = False
            self._in_flight = 0
        self._closed = True
        self._bytes = self._in_flight_bytes = 0
        return lost


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

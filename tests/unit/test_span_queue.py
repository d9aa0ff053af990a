"""The reporter's queue as bookkeeping alone: what it admits, what a batch takes, what closing it loses."""

from __future__ import annotations

import dataclasses

from gateway.span_queue import (
    EXCHANGE_BYTES,
    MAX_TEXT_CHARS,
    QUEUE_FULL,
    RESERVED_BYTES,
    SHUTDOWN,
    TRUNCATED_MARK,
    SpanQueue,
    exchange_bytes,
    with_texts_cut,
)
from tests.unit.test_reporter import exchange


def test_an_exchange_is_sized_by_its_texts_and_long_ones_are_cut() -> None:
    short = exchange(1, "/api/vote")
    assert exchange_bytes(short) == EXCHANGE_BYTES + len("/api/vote") + len("GET /api/vote") + len("example.com")

    original = dataclasses.replace(exchange(2, "/" + "p" * 10_000), host="h" * 9_000)
    long = with_texts_cut(original)
    size = exchange_bytes(long)
    assert len(long.path) == len(long.name) == len(long.host) == MAX_TEXT_CHARS
    assert long.path.endswith(TRUNCATED_MARK) and long.path.startswith("/ppp")
    assert size == EXCHANGE_BYTES + 3 * MAX_TEXT_CHARS
    assert with_texts_cut(long) is long  # cutting again cuts nothing more
    assert len(original.path) == 10_001, "the record given is never changed: a copy is cut"
    assert with_texts_cut(short) is short


def test_a_reservation_holds_two_spans_and_reserved_bytes_until_its_exchange_arrives() -> None:
    queue = SpanQueue(max_spans=4, max_bytes=10_000, batch_exchanges=2)
    assert queue.reserve() and queue.reserve()
    assert (queue.spans(), queue.estimated_bytes()) == (4, 2 * RESERVED_BYTES)
    assert not queue.reserve()
    queue.release()
    assert (queue.spans(), queue.estimated_bytes()) == (2, RESERVED_BYTES)
    assert queue.submit(exchange(1), reserved=True) is None
    assert (len(queue), queue.spans(), queue.estimated_bytes()) == (1, 2, exchange_bytes(exchange(1)))


def test_an_unreserved_exchange_that_does_not_fit_is_refused_whole() -> None:
    queue = SpanQueue(max_spans=3, max_bytes=10_000, batch_exchanges=10)
    assert queue.submit(exchange(1), reserved=False) is None
    assert queue.submit(exchange(2), reserved=False) == QUEUE_FULL
    assert queue.spans() == 2


def test_a_batch_is_counted_until_it_is_done() -> None:
    queue = SpanQueue(max_spans=100, max_bytes=100_000, batch_exchanges=2)
    for n in range(1, 4):
        assert queue.submit(exchange(n), reserved=False) is None
    assert queue.has_full_batch()
    batch = queue.take_batch()
    assert [item.trace_id for item in batch] == [1, 2]
    assert (len(queue), queue.spans()) == (1, 6)
    assert not queue.has_full_batch()
    queue.batch_done()
    assert (queue.spans(), queue.estimated_bytes()) == (2, exchange_bytes(exchange(3)))


def test_closing_loses_what_waits_and_what_is_in_flight_and_refuses_the_rest() -> None:
    queue = SpanQueue(max_spans=100, max_bytes=100_000, batch_exchanges=1)
    assert queue.reserve()
    queue.submit(exchange(1), reserved=False)
    queue.submit(exchange(2), reserved=False)
    queue.take_batch()
    assert queue.close() == 4
    assert queue.estimated_bytes() == 0
    assert queue.submit(exchange(3), reserved=True) == SHUTDOWN
    assert queue.submit(exchange(4), reserved=False) == QUEUE_FULL
    assert len(queue) == 0

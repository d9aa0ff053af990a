"""The access log's buffer, its chunks, its drop warnings, and its writer on a real pipe (flushed by hand)."""

from __future__ import annotations

import fcntl
import logging
import os
import select
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.access_log import AccessLogWriter, Added, DropWarnings, LineBuffer, chunks
from gateway.metrics import Metrics
from tests.support import FakeClock
from tests.waiting import WAIT

LINE = b'{"msg":"GET / 200"}\n'


def test_a_line_is_kept_until_the_buffer_is_full_then_dropped_and_counted():
    buffer = LineBuffer(max_bytes=3 * len(LINE), flush_bytes=10 * len(LINE))
    assert [buffer.add(LINE) for _ in range(4)] == [Added.KEPT, Added.KEPT, Added.KEPT, Added.DROPPED]
    assert buffer.dropped == 1
    assert buffer.take() == [LINE] * 3


def test_lines_being_written_still_count_against_the_bound_until_released():
    buffer = LineBuffer(max_bytes=2 * len(LINE))
    buffer.add(LINE)
    buffer.add(LINE)
    taken = buffer.take()
    assert buffer.add(LINE) is Added.DROPPED
    buffer.release(len(b"".join(taken)))
    assert buffer.held == 0
    assert buffer.add(LINE) is Added.KEPT


def test_a_failed_write_counts_its_lines_as_dropped():
    buffer = LineBuffer(max_bytes=1024)
    buffer.add(LINE)
    buffer.release(len(LINE), lost_lines=1)
    assert (buffer.dropped, buffer.held) == (1, 0)


def test_passing_the_flush_threshold_asks_for_a_flush_until_taken():
    buffer = LineBuffer(max_bytes=1024, flush_bytes=2 * len(LINE))
    assert buffer.add(LINE) is Added.KEPT
    assert buffer.add(LINE) is Added.KEPT_FLUSH
    assert buffer.add(LINE) is Added.KEPT_FLUSH
    buffer.take()
    assert buffer.add(LINE) is Added.KEPT


@given(st.lists(st.binary(min_size=1, max_size=300).map(lambda body: body + b"\n"), max_size=60))
def test_chunks_end_at_line_ends_and_stay_within_the_limit_unless_one_line_is_longer(lines):
    limit = 256
    made = list(chunks(lines, limit))
    assert b"".join(chunk for chunk, _ in made) == b"".join(lines)
    assert sum(count for _, count in made) == len(lines)
    position = 0
    for chunk, count in made:
        assert chunk == b"".join(lines[position : position + count])
        assert len(chunk) <= limit or count == 1
        position += count


def test_chunks_fill_up_to_the_limit():
    assert [count for _, count in chunks([b"a\n"] * 5, 4)] == [2, 2, 1]


def test_a_drop_episode_is_announced_once_at_its_start_and_once_at_its_end():
    clock = FakeClock()
    warnings = DropWarnings(interval=10.0, now=clock)
    assert warnings.observe(0) is None
    started = warnings.observe(3)
    assert started is not None and "dropped" in started
    assert warnings.observe(7) is None  # still dropping: nothing more
    ended = warnings.observe(7)
    assert ended == "access log: lines flow again, 7 dropped meanwhile"
    assert warnings.observe(7) is None


def test_an_episode_within_the_interval_is_announced_once_the_interval_has_passed():
    clock = FakeClock()
    warnings = DropWarnings(interval=10.0, now=clock)
    assert warnings.observe(1) is not None
    assert warnings.observe(1) is not None  # flows again
    clock.advance(1.0)
    assert warnings.observe(2) is None  # a second episode, too soon
    assert warnings.observe(2) is None  # and its end is not announced either
    assert warnings.observe(5) is None  # a third, from 2 dropped
    clock.advance(9.0)
    assert warnings.observe(6) is not None  # still dropping, the interval has passed
    assert warnings.observe(6) == "access log: lines flow again, 4 dropped meanwhile"


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    try:
        yield read_end, write_end
    finally:
        for fd in (read_end, write_end):
            try:
                os.close(fd)
            except OSError:
                pass


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return data


def dropped(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("gateway_access_log_dropped_lines_total")


def test_flush_writes_the_lines_in_order(pipe):
    read_end, write_end = pipe
    metrics = Metrics()
    writer = AccessLogWriter(metrics.access_log_dropped_lines, 1 << 20, fd=write_end)
    lines = [b'{"n":%d}\n' % n for n in range(1000)]
    for line in lines:
        writer.write(line)
    writer.flush()
    assert read_all(read_end) == b"".join(lines)
    assert writer.buffer.held == 0
    assert dropped(metrics) == 0


def test_a_full_buffer_drops_lines_counts_them_and_warns_once(pipe, caplog):
    read_end, write_end = pipe
    metrics = Metrics()
    writer = AccessLogWriter(metrics.access_log_dropped_lines, 4 * len(LINE), fd=write_end)
    for _ in range(10):
        writer.write(LINE)
    assert dropped(metrics) == 6
    with caplog.at_level(logging.WARNING, logger="gateway"):
        writer.flush()
        writer.write(LINE)
        writer.flush()
    assert read_all(read_end) == LINE * 5
    assert [record.getMessage() for record in caplog.records] == [
        "access log: stderr is not keeping up, access lines are dropped "
        "(counted in gateway_access_log_dropped_lines_total)",
        "access log: lines flow again, 6 dropped meanwhile",
    ]


def test_lines_that_cannot_be_written_are_counted_as_dropped(pipe):
    read_end, write_end = pipe
    os.close(read_end)  # EPIPE on every write (Python ignores SIGPIPE)
    metrics = Metrics()
    writer = AccessLogWriter(metrics.access_log_dropped_lines, 1 << 20, fd=write_end)
    writer.write(LINE)
    writer.write(LINE)
    writer.flush()
    assert dropped(metrics) == 2
    assert writer.buffer.held == 0


def test_stop_writes_what_is_buffered_and_ends_the_thread(pipe):
    read_end, write_end = pipe
    writer = AccessLogWriter(Metrics().access_log_dropped_lines, 1 << 20, fd=write_end, flush_interval=3600.0)
    writer.start()
    for _ in range(3):
        writer.write(LINE)
    writer.stop(timeout=10.0)
    assert read_all(read_end) == LINE * 3


def test_stop_gives_up_on_a_blocked_pipe_after_its_timeout(pipe):
    read_end, write_end = pipe
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    # A line as big as the pipe: the writer thread blocks on the second one, and nobody reads.
    big = b"x" * 4095 + b"\n"
    writer = AccessLogWriter(Metrics().access_log_dropped_lines, 1 << 20, fd=write_end, flush_interval=3600.0)
    writer.start()
    writer.write(big)
    writer.write(big)
    writer.stop(timeout=0)  # a deadline already reached: stop must not wait for the writer thread
    assert writer.buffer.held > 0  # the second line is not written: the thread blocks on it, or has not got to it
    # The thread was woken to write all the same: the first line arrives (the second cannot, nobody reads).
    assert select.select([read_end], [], [], WAIT)[0] == [read_end]
    assert len(read_all(read_end)) >= len(big)

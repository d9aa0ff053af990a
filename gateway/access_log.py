"""The access log, written off the event loop: lines go into a bounded buffer that a thread of its own writes out.

A request only appends its line's bytes to a list. The writer thread wakes every `FLUSH_INTERVAL`, or sooner once
`FLUSH_BYTES` are waiting, and writes them to stderr. When stderr does not keep up (a full pipe, a stuck log
collector), the thread blocks in `write()` in the requests' stead; once `max_bytes` are held, new lines are dropped
and counted, never the request.

Why a thread rather than non-blocking writes: O_NONBLOCK is a flag of the open file description, which a `dup()` of
fd 2 shares with fd 2 itself and with every process that inherited it (the shell, the other workers). Setting it for
the access log would make `logging`'s own writes to stderr fail with EAGAIN. Reopening `/proc/self/fd/2` would give
a description of its own for a pipe or a file, but not for a socket (systemd's journal takes stdout as one). A thread
blocking in `write()` works whatever stderr is.

Lines are written in chunks of at most `PIPE_BUF` bytes, ending at a line's end: POSIX makes such a write to a pipe
atomic, so the lines of several workers sharing one stderr pipe, and the other loggers' lines, never interleave
within a line.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from enum import Enum

from prometheus_client import Counter

FLUSH_INTERVAL = 0.1
FLUSH_BYTES = 64 * 1024
DROP_WARNING_INTERVAL = 10.0
STDERR = 2

logger = logging.getLogger("gateway")


class Added(Enum):
    KEPT = "kept"
    KEPT_FLUSH = "kept, flush now"
    DROPPED = "dropped"


class LineBuffer:
    """Lines waiting to be written, bounded in bytes, those being written included; thread-safe."""

    def __init__(self, max_bytes: int, flush_bytes: int = FLUSH_BYTES) -> None:
        self._max_bytes = max_bytes
        self._flush_bytes = flush_bytes
        self._lock = threading.Lock()
        self._lines: list[bytes] = []
        self._waiting = 0
        self._held = 0
        self.dropped = 0

    @property
    def held(self) -> int:
        return self._held

    def add(self, line: bytes) -> Added:
        size = len(line)
        with self._lock:
            if self._held + size > self._max_bytes:
                self.dropped += 1
                return Added.DROPPED
            self._lines.append(line)
            self._waiting += size
            self._held += size
            return Added.KEPT_FLUSH if self._waiting >= self._flush_bytes else Added.KEPT

    def take(self) -> list[bytes]:
        """The lines waiting; their bytes stay held until `release`d, once written."""
        with self._lock:
            lines, self._lines = self._lines, []
            self._waiting = 0
        return lines

    def release(self, size: int, lost_lines: int = 0) -> None:
        with self._lock:
            self._held -= size
            self.dropped += lost_lines


class DropWarnings:
    """One warning when lines start being dropped, one when they flow again; at most one episode per `interval`
    is announced, and an episode that starts within it is announced once the interval has passed."""

    def __init__(self, interval: float = DROP_WARNING_INTERVAL, now: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._now = now
        self._seen = 0
        self._dropping = False
        self._announced = False
        self._episode_from = 0
        self._last_warning: float | None = None

    def observe(self, dropped: int) -> str | None:
        """The warning to write, if any, given the lines dropped so far (a running total)."""
        new, self._seen = dropped - self._seen, dropped
        if new and not self._dropping:
            self._dropping, self._announced, self._episode_from = True, False, dropped - new
        elif not new and self._dropping:
            self._dropping = False
            if self._announced:
                return f"access log: lines flow again, {dropped - self._episode_from} dropped meanwhile"
            return None
        if self._dropping and not self._announced and self._may_warn():
            self._announced = True
            self._last_warning = self._now()
            return (
                "access log: stderr is not keeping up, access lines are dropped "
                "(counted in gateway_access_log_dropped_lines_total)"
            )
        return None

    def _may_warn(self) -> bool:
        return self._last_warning is None or self._now() - self._last_warning >= self._interval


class AccessLogWriter:
    """Writes a `LineBuffer` to `fd` from a daemon thread; `write` is what the event loop calls."""

    def __init__(
        self,
        dropped: Counter,
        max_bytes: int,
        *,
        fd: int = STDERR,
        flush_interval: float = FLUSH_INTERVAL,
        flush_bytes: int = FLUSH_BYTES,
        warnings: DropWarnings | None = None,
    ) -> None:
        self._dropped = dropped
        self._fd = fd
        self._interval = flush_interval
        self.buffer = LineBuffer(max_bytes, flush_bytes)
        self._warnings = warnings if warnings is not None else DropWarnings()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def write(self, line: bytes) -> None:
        added = self.buffer.add(line)
        if added is Added.KEPT:
            return
        if added is Added.DROPPED:
            self._dropped.inc()
        else:
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Write what is buffered and end the thread, waiting at most `timeout`: a blocked stderr holds no exit."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return
        self.flush()

    def flush(self) -> None:
        """Write the lines waiting now, in atomic chunks; a failed write counts its lines as dropped."""
        for chunk, count in chunks(self.buffer.take(), select.PIPE_BUF):
            try:
                _write_all(self._fd, chunk)
            except OSError:
                self.buffer.release(len(chunk), count)
                self._dropped.inc(count)
            else:
                self.buffer.release(len(chunk))
        warning = self._warnings.observe(self.buffer.dropped)
        if warning is not None:
            logger.warning(warning, extra={"dropped": self.buffer.dropped})

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()


def chunks(lines: Sequence[bytes], limit: int) -> Iterator[tuple[bytes, int]]:
    """`lines` joined into chunks of at most `limit` bytes (a longer line alone), with their line counts."""
    start, size = 0, 0
    for index, line in enumerate(lines):
        if size and size + len(line) > limit:
            yield b"".join(lines[start:index]), index - start
            start, size = index, 0
        size += len(line)
    if size:
        yield b"".join(lines[start:]), len(lines) - start


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]

"""Live reload of the route file: on SIGHUP, and when the file changes (a timer compares its stat, off the
request path). A file that does not load is rejected with one logged line and the table in force stays.

Each worker process reloads for itself: every worker watches the file, and with several workers the supervisor
passes SIGHUP on to each of them (`gateway.__main__`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.route_file import RouteFileError, parse_routes, read_route_file
from gateway.routes import Route
from gateway.routing import RouteSource

SIGHUP_TRIGGER = "SIGHUP"
FILE_CHANGE_TRIGGER = "file change"
OK = "ok"
UNCHANGED = "unchanged"
REJECTED = "rejected"

logger = logging.getLogger("gateway.routes")


@dataclass(frozen=True, slots=True)
class FileSignature:
    """What changes when a file is rewritten in place or replaced (an editor's rename, a ConfigMap's symlink)."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True, slots=True)
class LoadedRoutes:
    routes: list[Route]
    source: RouteSource
    signature: FileSignature | None


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    at: float  # epoch seconds
    trigger: str
    outcome: str  # OK, UNCHANGED or REJECTED
    reason: str | None
    version: str | None  # the digest of the table in force afterwards


def file_signature(path: Path) -> FileSignature | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return FileSignature(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def load_route_file(path: Path, wall_clock: Callable[[], float] = time.time) -> LoadedRoutes:
    """Read, hash and parse the route file (raises RouteFileError). The signature is taken before reading, so
    that a write during the read shows as a change at the next check."""
    signature = file_signature(path)
    text = read_route_file(path)
    routes = parse_routes(text, path)
    digest = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedRoutes(routes, RouteSource(path, digest, wall_clock()), signature)


class RouteReloader:
    """Reloads the route file when asked (`request`, from a signal handler) or when it changes.

    ``apply`` puts a loaded table in force (and may raise to refuse it); ``record`` hears every outcome.
    Reloads run one at a time; the file is read and parsed in a thread, so a big file does not stall the loop.
    ``sleep`` waits out the interval between checks (tests pass a fake, so that no time has to pass).
    """

    def __init__(
        self,
        current: LoadedRoutes,
        interval: float,
        apply: Callable[[LoadedRoutes], None],
        record: Callable[[ReloadOutcome], None],
        wall_clock: Callable[[], float] = time.time,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._path = current.source.path
        self._current = current
        self._seen = current.signature
        self._interval = interval
        self._apply = apply
        self._record = record
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._interval > 0:
            self._spawn(self._watch())

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def request(self) -> None:
        """Reload soon; safe from a signal handler (`loop.add_signal_handler`) or another thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._spawn_reload, SIGHUP_TRIGGER)

    async def reload(self, trigger: str) -> bool:
        """Load the file and put it in force unless it is unchanged; False when it was rejected."""
        async with self._lock:
            signature = file_signature(self._path)
            try:
                loaded = await asyncio.get_running_loop().run_in_executor(
                    None, load_route_file, self._path, self._wall_clock
                )
            except Exception as exc:  # RouteFileError, or anything PyYAML may raise on a pathological file
                # Remembered, so that a bad file is reported once, not at every check until it is fixed.
                self._seen = signature
                return self._rejected(trigger, str(exc) if isinstance(exc, RouteFileError) else self._reason(exc))
            self._seen = loaded.signature
            if loaded.source.digest == self._current.source.digest:
                self._done(trigger, UNCHANGED, None)
                logger.info("route file unchanged (%s), nothing to reload", trigger, extra=self._fields(trigger))
                return True
            try:
                self._apply(loaded)
            except Exception as exc:  # a table that loads but cannot be built must not take the gateway down
                return self._rejected(trigger, self._reason(exc))
            self._current = loaded
            self._done(trigger, OK, None)
            logger.info(
                "routes reloaded from %s on %s: %d routes",
                self._path,
                trigger,
                len(loaded.routes),
                extra={**self._fields(trigger), "routes": len(loaded.routes)},
            )
            return True

    async def _watch(self) -> None:
        while True:
            await self._sleep(self._interval)
            # A stat per interval, never per request: a changed signature is a rewritten or replaced file.
            if file_signature(self._path) != self._seen:
                try:
                    await self.reload(FILE_CHANGE_TRIGGER)
                except Exception:  # the watch must outlive any one reload
                    logger.exception("reloading %s failed", self._path)

    def _spawn_reload(self, trigger: str) -> None:
        self._spawn(self.reload(trigger))

    def _spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rejected(self, trigger: str, reason: str) -> bool:
        self._done(trigger, REJECTED, reason)
        logger.error(
            "route file rejected (%s), the routes in force stay: %s",
            trigger,
            reason,
            extra={**self._fields(trigger), "reason": reason},
        )
        return False

    def _done(self, trigger: str, outcome: str, reason: str | None) -> None:
        self._record(ReloadOutcome(self._wall_clock(), trigger, outcome, reason, self._current.source.digest))

    def _reason(self, exc: Exception) -> str:
        return " ".join(f"{self._path}: {type(exc).__name__}: {exc}".split())

    def _fields(self, trigger: str) -> dict[str, object]:
        return {"routes_file": str(self._path), "trigger": trigger, "version": self._current.source.digest}

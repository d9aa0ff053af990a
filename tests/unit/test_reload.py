"""The route file's reloader against real files in a temporary directory, on a real event loop.

The watch's interval is a ``ManualSleep``: a test ends it when it wants the file checked, so no time has to pass.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.reload import (
    FILE_CHANGE_TRIGGER,
    OK,
    REJECTED,
    SIGHUP_TRIGGER,
    UNCHANGED,
    LoadedRoutes,
    ReloadOutcome,
    RouteReloader,
    file_signature,
    load_route_file,
)
from gateway.route_file import RouteFileError
from tests.waiting import WAIT, ManualSleep

pytestmark = pytest.mark.anyio

ONE = "routes:\n  - {name: one, upstream: 'http://one'}\n"
TWO = "routes:\n  - {name: two, upstream: 'http://two'}\n  - {name: three, path_prefix: /3, upstream: 'http://3'}\n"
BAD = "routes:\n  - {name: bad, upstream: 'http://bad', sample_rate: 2}\n"


def replace_file(path: Path, text: str) -> None:
    """As editors and Kubernetes do: a new file renamed over the old one."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


def digest_of(text: str, directory: Path) -> str:
    path = directory / "digest-of.yaml"
    path.write_text(text)
    return load_route_file(path).source.digest


async def next_check(sleep: ManualSleep) -> None:
    """Ends the watch's interval and waits until it has checked the file (and reloaded it, if it changed) and sleeps
    again: the watch awaits each reload before its next interval."""
    began = len(sleep.delays)
    sleep.elapse()
    await sleep.slept(began + 1)


class Recorder:
    def __init__(self, refuse: bool = False) -> None:
        self.applied: list[LoadedRoutes] = []
        self.outcomes: list[ReloadOutcome] = []
        self.refuse = refuse
        self._recorded = asyncio.Event()

    def apply(self, loaded: LoadedRoutes) -> None:
        if self.refuse:
            raise ValueError("cannot build\nthis table")
        self.applied.append(loaded)

    def record(self, outcome: ReloadOutcome) -> None:
        self.outcomes.append(outcome)
        self._recorded.set()

    async def recorded(self, count: int) -> None:
        """Waits (bounded by WAIT) until ``count`` outcomes have been recorded."""
        async with asyncio.timeout(WAIT):
            while len(self.outcomes) < count:
                self._recorded.clear()
                await self._recorded.wait()

    def names(self) -> list[list[str]]:
        return [[route.name for route in loaded.routes] for loaded in self.applied]

    def kinds(self) -> list[tuple[str, str]]:
        return [(outcome.trigger, outcome.outcome) for outcome in self.outcomes]


@asynccontextmanager
async def reloader_for(
    path: Path, interval: float = 0.02, recorder: Recorder | None = None
) -> AsyncIterator[tuple[RouteReloader, Recorder, ManualSleep]]:
    """A started reloader, its watch (if it has one) asleep in its first interval."""
    recorder, sleep = recorder or Recorder(), ManualSleep()
    reloader = RouteReloader(load_route_file(path), interval, recorder.apply, recorder.record, sleep=sleep)
    reloader.start()
    try:
        if interval > 0:
            await sleep.slept(1)
        yield reloader, recorder, sleep
    finally:
        await reloader.stop()


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(ONE)
    return path


def test_load_route_file_hashes_the_text_and_signs_the_file(routes_file):
    loaded = load_route_file(routes_file, wall_clock=lambda: 123.0)
    assert [route.name for route in loaded.routes] == ["one"]
    assert loaded.source.path == routes_file
    assert loaded.source.digest.startswith("sha256:") and len(loaded.source.digest) == 7 + 64
    assert loaded.source.loaded_at == 123.0
    assert loaded.signature == file_signature(routes_file)
    replace_file(routes_file, TWO)
    assert load_route_file(routes_file).source.digest != loaded.source.digest


def test_file_signature_of_a_missing_file_is_none(tmp_path):
    assert file_signature(tmp_path / "missing.yaml") is None


async def test_a_replaced_file_is_reloaded(routes_file):
    async with reloader_for(routes_file) as (_, recorder, sleep):
        await next_check(sleep)
        assert recorder.outcomes == [], "an unchanged file is not even read"
        replace_file(routes_file, TWO)
        await next_check(sleep)
    assert recorder.names() == [["two", "three"]]
    assert recorder.kinds() == [(FILE_CHANGE_TRIGGER, OK)]
    assert recorder.outcomes[0].version == recorder.applied[0].source.digest


async def test_a_file_rewritten_in_place_is_reloaded(routes_file):
    async with reloader_for(routes_file) as (_, recorder, sleep):
        with routes_file.open("a") as file:
            file.write("  - {name: appended, path_prefix: /a, upstream: 'http://a'}\n")
        await next_check(sleep)
    assert recorder.names() == [["one", "appended"]]


async def test_a_bad_file_is_rejected_once_and_the_next_good_one_is_taken(routes_file, caplog):
    caplog.set_level(logging.INFO, logger="gateway.routes")
    async with reloader_for(routes_file) as (_, recorder, sleep):
        replace_file(routes_file, BAD)
        await next_check(sleep)
        # Several checks go by: the same bad file is not reported again.
        for _ in range(3):
            await next_check(sleep)
        assert recorder.kinds() == [(FILE_CHANGE_TRIGGER, REJECTED)]
        assert recorder.applied == []
        replace_file(routes_file, TWO)
        await next_check(sleep)
    assert recorder.kinds() == [(FILE_CHANGE_TRIGGER, REJECTED), (FILE_CHANGE_TRIGGER, OK)]
    reason = f"{routes_file}:2: routes[0].sample_rate: must be within [0.0, 1.0] (got 2)"
    assert recorder.outcomes[0].reason == reason
    # The version after a rejection is still the first file's: the table in force did not change.
    assert recorder.outcomes[0].version == digest_of(ONE, routes_file.parent)
    [rejection] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert rejection.getMessage() == f"route file rejected (file change), the routes in force stay: {reason}"


async def test_a_deleted_file_is_rejected_and_the_table_stays(routes_file):
    async with reloader_for(routes_file) as (_, recorder, sleep):
        routes_file.unlink()
        await next_check(sleep)
    [outcome] = recorder.outcomes
    assert outcome.outcome == REJECTED
    assert outcome.reason == f"{routes_file}: cannot read route file: No such file or directory"


async def test_a_touched_file_with_the_same_text_is_unchanged(routes_file):
    async with reloader_for(routes_file) as (_, recorder, sleep):
        replace_file(routes_file, ONE)
        await next_check(sleep)
    assert recorder.kinds() == [(FILE_CHANGE_TRIGGER, UNCHANGED)]
    assert recorder.applied == []


async def test_a_request_from_another_thread_reloads_even_without_watching(routes_file):
    async with reloader_for(routes_file, interval=0) as (reloader, recorder, sleep):
        replace_file(routes_file, TWO)
        await asyncio.sleep(0)
        assert sleep.delays == [] and recorder.outcomes == []  # interval 0: no watching, only requests
        thread = threading.Thread(target=reloader.request)
        thread.start()
        thread.join()
        await recorder.recorded(1)
    assert recorder.kinds() == [(SIGHUP_TRIGGER, OK)]
    assert recorder.names() == [["two", "three"]]


async def test_a_table_that_cannot_be_applied_is_rejected_in_one_line(routes_file):
    async with reloader_for(routes_file, interval=0, recorder=Recorder(refuse=True)) as (reloader, recorder, _):
        replace_file(routes_file, TWO)
        assert await reloader.reload(SIGHUP_TRIGGER) is False
        # Rejected, so the same file is tried again on the next request rather than taken as in force.
        assert await reloader.reload(SIGHUP_TRIGGER) is False
    assert recorder.kinds() == [(SIGHUP_TRIGGER, REJECTED)] * 2
    assert recorder.outcomes[0].reason == f"{routes_file}: ValueError: cannot build this table"


async def test_reloads_run_one_at_a_time(routes_file):
    async with reloader_for(routes_file, interval=0) as (reloader, recorder, _):
        replace_file(routes_file, TWO)
        results = await asyncio.gather(*(reloader.reload(SIGHUP_TRIGGER) for _ in range(5)))
    assert results == [True] * 5
    assert [outcome.outcome for outcome in recorder.outcomes] == [OK] + [UNCHANGED] * 4


async def test_stop_ends_the_watch(routes_file):
    async with reloader_for(routes_file) as (reloader, recorder, sleep):
        assert sleep.sleeping == 1
    assert sleep.sleeping == 0, "the watch still waits for its next check after stop()"
    replace_file(routes_file, TWO)
    sleep.elapse()
    await asyncio.sleep(0)
    assert recorder.outcomes == []
    await reloader.stop()


def test_load_route_file_raises_for_a_bad_file(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(BAD)
    with pytest.raises(RouteFileError, match=r"routes.yaml:2: routes\[0\].sample_rate"):
        load_route_file(path)

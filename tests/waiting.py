"""Waiting in tests without sleeping: sleeps that a test ends by hand, and bounded polling of a condition.

Unit tests never wait for time to pass (tests/unit/test_no_sleeps.py keeps it so): code that sleeps takes a `sleep`
and the test passes one of these, or the test waits for the event it expects, bounded by WAIT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Seconds: only an upper bound for waiting on something that happens at once on an idle machine, never an expectation
# (a busy machine may take hundreds of times longer than an idle one and still pass).
WAIT = 30.0


async def until(condition: Callable[[], object], timeout: float = WAIT) -> None:
    """Lets the event loop run until ``condition()`` holds, returning as soon as it does; fails after ``timeout``.

    For conditions that work on the same event loop makes true: it polls between the loop's turns, without sleeping.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0)


class RecordedSleep:
    """Stands in for ``asyncio.sleep``: keeps the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


class ManualSleep:
    """Stands in for ``asyncio.sleep``: keeps the delays asked for, and a sleep ends only when the test calls
    ``elapse()``, as if its time had passed."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._sleeping: list[asyncio.Future[None]] = []
        self._began = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self._began.set()
        wake_up = asyncio.get_running_loop().create_future()
        self._sleeping.append(wake_up)
        try:
            await wake_up
        finally:
            self._sleeping.remove(wake_up)

    @property
    def sleeping(self) -> int:
        """How many sleeps are in progress."""
        return len(self._sleeping)

    async def slept(self, count: int) -> None:
        """Waits (bounded by WAIT) until ``count`` sleeps have begun in all."""
        async with asyncio.timeout(WAIT):
            while len(self.delays) < count:
                self._began.clear()
                await self._began.wait()

    def elapse(self) -> None:
        """Ends every sleep in progress."""
        for wake_up in self._sleeping:
            if not wake_up.done():
                wake_up.set_result(None)

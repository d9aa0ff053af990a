"""Several workers' metrics, summed, with the live gauges of dead workers left out.

prometheus-client keeps a worker's "live" gauges (workers ready, span queue depth, connections, tasks) until
`mark_process_dead` is called for it; uvicorn's supervisor replaces a crashed worker without telling anyone, so a
dead worker would go on counting as ready, with its last queue depth, forever. Each scrape checks first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


class LiveWorkersCollector(MultiProcessCollector):
    def __init__(self, registry: CollectorRegistry, path: str | None = None) -> None:
        super().__init__(registry, path)  # type: ignore[no-untyped-call]
        self._directory = Path(self._path)

    def collect(self) -> Iterable[Metric]:
        forget_dead_workers(self._directory)
        return super().collect()  # type: ignore[no-untyped-call,no-any-return]


def forget_dead_workers(directory: Path) -> list[int]:
    """Removes the live gauges of every worker that is no longer running; returns those workers' pids."""
    pids = {int(match[1]) for path in directory.iterdir() if (match := _LIVE_GAUGE_FILE.fullmatch(path.name))}
    dead = sorted(pid for pid in pids if not is_running(pid))
    for pid in dead:
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
    return dead


def is_running(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie, exited but not yet reaped, has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: kill() said it exists
    # The state follows the parenthesised command name, which may itself contain ") ".
    return stat[stat.rindex(")") + 2 :][:1] != "Z"

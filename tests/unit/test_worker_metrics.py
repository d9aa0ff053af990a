from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.worker_metrics import forget_dead_workers, is_running


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_running_process_runs_and_an_exited_one_does_not() -> None:
    assert is_running(os.getpid())
    assert not is_running(exited_pid())


def test_a_zombie_does_not_run() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Waits for the child to exit but leaves it unreaped (WNOWAIT): a zombie until child.wait() below.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert not is_running(child.pid), "an exited child that was not reaped yet counted as running"
    finally:
        child.wait()


def test_the_live_gauges_of_dead_workers_are_forgotten_and_the_rest_kept(tmp_path: Path) -> None:
    dead, alive = exited_pid(), os.getpid()
    files = [
        f"gauge_livesum_{dead}.db",
        f"gauge_livemax_{dead}.db",
        f"gauge_liveall_{dead}.db",
        f"gauge_livesum_{alive}.db",
        f"counter_{dead}.db",
        f"histogram_{dead}.db",
        f"gauge_all_{dead}.db",
    ]
    for name in files:
        (tmp_path / name).write_bytes(b"")

    assert forget_dead_workers(tmp_path) == [dead]

    left = sorted(path.name for path in tmp_path.iterdir())
    # Counters and histograms of a dead worker still count: only its "live" gauges go.
    assert left == sorted(
        [f"gauge_livesum_{alive}.db", f"counter_{dead}.db", f"histogram_{dead}.db", f"gauge_all_{dead}.db"]
    )

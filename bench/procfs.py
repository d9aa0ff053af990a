"""Linux /proc: CPU time and resident memory of a process tree, busy time of each CPU (see proc(5))."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcessStat:
    pid: int
    name: str
    ppid: int
    # utime + stime + cutime + cstime: its own CPU time and that of the children it has reaped, so a
    # tree's sum over its live processes loses nothing and counts nothing twice.
    cpu_ticks: int
    start_ticks: int  # since boot; with the pid it names one process even after the pid is reused


@dataclass(frozen=True, slots=True)
class CpuTicks:
    busy: int  # all but idle and iowait
    interrupts: int  # irq and softirq: mostly the packets the processes on this CPU send over loopback
    total: int


def parse_stat(text: str) -> ProcessStat:
    # Field 2, the name, is in parentheses and may hold spaces and ")" itself: split at the last ")".
    head, _, rest = text.rpartition(")")
    pid, _, name = head.partition(" (")
    fields = rest.split()  # fields[0] is field 3, "state", in proc(5)'s numbering
    return ProcessStat(
        pid=int(pid),
        name=name,
        ppid=int(fields[1]),
        cpu_ticks=sum(int(value) for value in fields[11:15]),
        start_ticks=int(fields[19]),
    )


def parse_cpu_ticks(text: str) -> dict[int, CpuTicks]:
    """Per-CPU ticks from the cpuN lines of /proc/stat."""
    ticks = {}
    for line in text.splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            user, nice, system, idle, iowait, irq, softirq, steal = (int(value) for value in values[:8])
            total = user + nice + system + idle + iowait + irq + softirq + steal
            ticks[int(name[3:])] = CpuTicks(busy=total - idle - iowait, interrupts=irq + softirq, total=total)
    return ticks


def busy_percent(before: dict[int, CpuTicks], after: dict[int, CpuTicks]) -> dict[int, float]:
    return {cpu: _percent(before[cpu], end, end.busy - before[cpu].busy) for cpu, end in after.items()}


def interrupts_percent(before: dict[int, CpuTicks], after: dict[int, CpuTicks]) -> dict[int, float]:
    return {cpu: _percent(before[cpu], end, end.interrupts - before[cpu].interrupts) for cpu, end in after.items()}


def elapsed_seconds(before: dict[int, CpuTicks], after: dict[int, CpuTicks], cpus: Iterable[int]) -> float:
    """The time `cpus` together had between two readings: the denominator of a share of them."""
    return sum(after[cpu].total - before[cpu].total for cpu in cpus) / CLOCK_TICKS


def read_stat(pid: int) -> ProcessStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except OSError:  # gone, or going while it was read
        return None


def read_cpu_ticks() -> dict[int, CpuTicks]:
    return parse_cpu_ticks((PROC / "stat").read_text())


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, from the parent links of all processes."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None:
            children.setdefault(stat.ppid, []).append(stat.pid)
    found, pending = [], [pid]
    while pending:
        below = children.get(pending.pop(), [])
        found.extend(below)
        pending.extend(below)
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    return sum(stat.cpu_ticks for pid in pids if (stat := read_stat(pid)) is not None) / CLOCK_TICKS


def rss_bytes(pid: int) -> int | None:
    try:
        return int((PROC / str(pid) / "statm").read_text().split()[1]) * PAGE_SIZE
    except OSError:
        return None


def _percent(start: CpuTicks, end: CpuTicks, ticks: int) -> float:
    total = end.total - start.total
    return 100.0 * ticks / total if total > 0 else 0.0

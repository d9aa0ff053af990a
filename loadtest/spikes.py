"""When a burst load shape (loadtest/spike.py) runs how many users (no I/O, no locust: importing locust patches the
standard library for gevent)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_BASE_USERS = 10
DEFAULT_EVERY = 30.0
DEFAULT_LENGTH = 10.0
DEFAULT_SPIKE_FACTOR = 5


@dataclass(frozen=True, slots=True)
class Spikes:
    base_users: int
    base_rate: float
    peak_users: int
    every: float
    length: float
    run_time: float | None = None  # None: until stopped

    def stage(self, elapsed: float) -> tuple[int, float] | None:
        """(users, spawn rate) at `elapsed` seconds into the run, None once it is over. Each period of `every`
        seconds ends with its spike, so that a run starts at the baseline."""
        if self.run_time is not None and elapsed >= self.run_time:
            return None
        # All of a spike's users start within about a second, and stop as fast: a burst, not a ramp.
        burst = float(max(self.peak_users, 1))
        if self.every - (elapsed % self.every) <= self.length:
            return self.peak_users, burst
        before_first_spike = elapsed < self.every - self.length
        return self.base_users, self.base_rate if before_first_spike else max(self.base_rate, burst)


def spikes_from(options: Any) -> Spikes:
    """The spikes locust's options ask for: -u, -r and -t, and loadtest/spike.py's own."""
    base = options.num_users if options.num_users is not None else DEFAULT_BASE_USERS
    return Spikes(
        base_users=base,
        base_rate=options.spawn_rate if options.spawn_rate is not None else float(base),
        peak_users=options.spike_users if options.spike_users is not None else DEFAULT_SPIKE_FACTOR * base,
        every=options.spike_every,
        length=min(options.spike_length, options.spike_every),
        run_time=options.run_time,
    )

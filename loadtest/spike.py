"""A burst load shape: a steady baseline of users and, every `--spike-every` seconds, a spike to `--spike-users`.

    locust -f loadtest/locustfile.py,loadtest/spike.py --headless --host http://127.0.0.1:8080 \\
        -u 10 -r 5 -t 2m --spike-users 60 --spike-every 30 --spike-length 10

Given as a second locustfile, so that `loadtest/locustfile.py` alone keeps locust's usual -u/-r/-t behaviour (locust
uses any LoadTestShape it finds in place of them). Here -u is the baseline, -r its spawn rate, -t the length of the
run; each spike starts its users within about a second, holds them `--spike-length` seconds, then stops them as
fast. Spikes are what fill a gateway's span queue: the trace check then proves that what it sheds is whole traces.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from locust import LoadTestShape, events
from locust.argument_parser import LocustArgumentParser

# locust puts this file's folder on sys.path; the repository root makes `loadtest.*` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.spikes import DEFAULT_EVERY, DEFAULT_LENGTH, DEFAULT_SPIKE_FACTOR, spikes_from


class SpikeShape(LoadTestShape):
    """Locust runs this shape in place of a constant user count (see the module's docstring)."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        # get_run_time() is not annotated; this is what it computes.
        return spikes_from(self.runner.environment.parsed_options).stage(time.perf_counter() - self.start_time)


def _add_arguments(parser: LocustArgumentParser, **kwargs: Any) -> None:
    group = parser.add_argument_group("spikes (loadtest/spike.py)")
    group.add_argument(
        "--spike-users",
        type=int,
        default=None,
        metavar="N",
        help=f"users during a spike (default: {DEFAULT_SPIKE_FACTOR} x -u)",
    )
    group.add_argument(
        "--spike-every",
        type=_seconds,
        default=DEFAULT_EVERY,
        metavar="SECONDS",
        help="seconds from one spike to the next (default: %(default)s)",
    )
    group.add_argument(
        "--spike-length",
        type=_seconds,
        default=DEFAULT_LENGTH,
        metavar="SECONDS",
        help="seconds each spike lasts (default: %(default)s)",
    )


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


events.init_command_line_parser.add_listener(_add_arguments)  # type: ignore[no-untyped-call]  # not annotated

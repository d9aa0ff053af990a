"""The burst load shape: a baseline, a spike at the end of every period, the end of the run."""

from __future__ import annotations

from argparse import Namespace

import pytest

from loadtest.spikes import DEFAULT_BASE_USERS, Spikes, spikes_from

SPIKES = Spikes(base_users=10, base_rate=2.0, peak_users=50, every=30.0, length=10.0, run_time=95.0)


@pytest.mark.parametrize(
    ("elapsed", "stage"),
    [
        (0.0, (10, 2.0)),  # the ramp to the baseline at -r
        (19.9, (10, 2.0)),
        (20.0, (50, 50.0)),  # the first spike: every user within a second
        (29.9, (50, 50.0)),
        (30.0, (10, 50.0)),  # back to the baseline as fast
        (49.0, (10, 50.0)),
        (50.0, (50, 50.0)),
        (89.9, (50, 50.0)),
        (94.9, (10, 50.0)),
        (95.0, None),  # -t reached
    ],
)
def test_stage(elapsed, stage):
    assert SPIKES.stage(elapsed) == stage


def test_without_a_run_time_the_spikes_go_on():
    spikes = Spikes(base_users=1, base_rate=1.0, peak_users=5, every=2.0, length=1.0)
    assert spikes.stage(10_000.5) == (1, 5.0)
    assert spikes.stage(10_001.5) == (5, 5.0)


def test_spikes_from_locusts_options():
    options = Namespace(
        num_users=4, spawn_rate=None, spike_users=None, spike_every=20.0, spike_length=30.0, run_time=60
    )
    assert spikes_from(options) == Spikes(4, 4.0, 20, 20.0, 20.0, 60)
    defaults = Namespace(
        num_users=None, spawn_rate=None, spike_users=7, spike_every=5.0, spike_length=1.0, run_time=None
    )
    assert spikes_from(defaults).base_users == DEFAULT_BASE_USERS
    assert spikes_from(defaults).peak_users == 7

"""`make soak`, short: tools/soak.py runs load against a flapping collector and fails when the gateway's memory,
descriptors or tasks grow past their bounds, or a span goes unaccounted for."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from types import ModuleType

import pytest

from tests.support import REPO_ROOT

pytestmark = pytest.mark.e2e

SOAK = REPO_ROOT / "tools" / "soak.py"


def soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_short_soak_with_a_flapping_collector_stays_within_its_bounds() -> None:
    args = ["--minutes", "0.35", "--interval", "4", "--down", "3", "--up", "3", "--rate", "100"]
    run = subprocess.run([sys.executable, str(SOAK), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    samples = [line for line in output.splitlines() if line.startswith("t=")]
    assert len(samples) >= 5, output
    assert "PASS:" in output and " 0 dropped" in output, output


def test_the_soak_fails_when_a_measure_grows_past_its_bound() -> None:
    soak = soak_module()
    bounds = argparse.Namespace(max_rss_growth=40.0, max_fd_growth=40, max_task_growth=40)
    flat = [soak.Sample(at, 60_000, 20, 6, 0, 2) for at in (60, 120, 180)]
    assert soak._bounds(bounds, flat) == []
    leaking = [*flat, soak.Sample(240, 60_000 + 50 * 1024, 70, 6, 0, 2)]
    problems = soak._bounds(bounds, leaking)
    assert any(problem.startswith("RSS grew by 50.0MiB") for problem in problems), problems
    assert any(problem.startswith("open descriptors grew by 50") for problem in problems), problems
    assert soak._bounds(bounds, flat[:1]) == ["fewer than two samples: run longer than --interval"]

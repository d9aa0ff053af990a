"""No unit test waits for time to pass: a real sleep makes a test slow on an idle machine and flaky on a busy one.

Code that sleeps takes a ``sleep`` (or a clock) and the test passes a fake (`tests/waiting.py`), or the test waits for
the event it expects. ``asyncio.sleep(0)``, which only lets the event loop run, is allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

UNIT_TESTS = Path(__file__).resolve().parent
# The modules whose sleep() waits for real; `anyio` is there because the suite runs async tests with it.
_SLEEPING_MODULES = frozenset({"time", "asyncio", "anyio", "trio"})


def sleeping_calls(source: str) -> list[int]:
    """The lines of ``source`` that call a module's ``sleep`` (however imported) with anything but a literal 0."""
    tree = ast.parse(source)
    modules: set[str] = set()  # names bound to a sleeping module: `import time`, `import asyncio as aio`
    functions: set[str] = set()  # names bound to a sleep function: `from time import sleep as pause`
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.asname or alias.name for alias in node.names if alias.name in _SLEEPING_MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module in _SLEEPING_MODULES:
            functions.update(alias.asname or alias.name for alias in node.names if alias.name == "sleep")
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_sleep(node.func, modules, functions) and not _zero_delay(node):
            lines.append(node.lineno)
    return sorted(lines)


def _is_sleep(func: ast.expr, modules: set[str], functions: set[str]) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "sleep" and isinstance(func.value, ast.Name) and func.value.id in modules
    return isinstance(func, ast.Name) and func.id in functions


def _zero_delay(call: ast.Call) -> bool:
    delays = [*call.args[:1], *(keyword.value for keyword in call.keywords if keyword.arg in ("delay", "seconds"))]
    return len(delays) == 1 and isinstance(delays[0], ast.Constant) and delays[0].value == 0


def test_no_unit_test_sleeps() -> None:
    found = [
        f"{path.relative_to(UNIT_TESTS.parent.parent)}:{line}"
        for path in sorted(UNIT_TESTS.rglob("*.py"))
        for line in sleeping_calls(path.read_text())
    ]
    assert found == [], "unit tests that sleep (use an event, a fake sleep or clock, or `until`): " + ", ".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import time\ntime.sleep(0.02)",
        "import asyncio\nasync def f():\n    await asyncio.sleep(0.01)",
        "import asyncio as aio\nasync def f(delay):\n    await aio.sleep(delay)",
        "from time import sleep\nsleep(1)",
        "from asyncio import sleep as pause\nasync def f():\n    await pause(delay=0.5)",
        "import anyio\nasync def f():\n    await anyio.sleep(1)",
        "import time\ntime.sleep()",
    ],
)
def test_a_sleep_is_found_however_it_is_imported_and_spelled(source: str) -> None:
    assert sleeping_calls(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio\nasync def f():\n    await asyncio.sleep(0)",
        "import asyncio\nasync def f():\n    await asyncio.sleep(0.0)",
        "import time\ntime.monotonic()",
        "async def f(sleep):\n    await sleep(5)",  # an injected fake, not a module's sleep
    ],
)
def test_yielding_to_the_loop_and_fake_sleeps_are_allowed(source: str) -> None:
    assert sleeping_calls(source) == []

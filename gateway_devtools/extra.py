"""The dev tools' own dependencies, pyproject.toml's `dev-tools` extra: a command run without them says so in one line.

The gateway's `pip install .` leaves them out, so a tool started from such an install names the missing packages and
the command that installs them, instead of a traceback about a module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable

INSTALL = "pip install 'ingress-gateway[dev-tools]'"
EXIT_NOT_INSTALLED = 2
# Each distribution of the extra and the module it provides; tests/unit/devtools/test_packaging.py holds this table
# equal to pyproject.toml's list.
EXTRA_MODULES = {"starlette": "starlette", "grpcio": "grpc"}


def missing_distributions() -> list[str]:
    return [name for name, module in EXTRA_MODULES.items() if importlib.util.find_spec(module) is None]


def run_if_installed(command: str) -> int:
    """Runs the module `command`'s `main()` once the extra is installed; else one line on stderr, and exit status 2."""
    missing = missing_distributions()
    if missing:
        tool = command.rpartition(".")[0]
        print(f"{tool}: the dev tools need {', '.join(missing)}, not installed: {INSTALL}", file=sys.stderr)
        return EXIT_NOT_INSTALLED
    main: Callable[[], int] = importlib.import_module(command).main
    return main()

"""The dev tools apart from the gateway: `pip install .` pulls none of their dependencies, and the gateway never
imports them nor anything only they need (pyproject.toml's `dev-tools` extra, gateway_devtools/extra.py)."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from gateway_devtools import extra
from tests.support import REPO_ROOT

GATEWAY = REPO_ROOT / "gateway"
DEV_TOOLS = REPO_ROOT / "gateway_devtools"
DEV_TOOLS_PACKAGE = "gateway_devtools"
SUBPROCESS_TIMEOUT = 120
# Imports every module of the gateway, as a process serving it could, and prints every module then loaded.
_IMPORT_THE_GATEWAY = """
import importlib, pkgutil, sys
import gateway
for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
    importlib.import_module(module.name)
print("\\n".join(sorted(sys.modules)))
"""


def project() -> dict[str, Any]:
    document: dict[str, Any] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return document


def names(requirements: list[str]) -> set[str]:
    return {_normalise(Requirement(text).name) for text in requirements}


def runtime_distributions() -> set[str]:
    return names(project()["dependencies"])


def dev_tools_distributions() -> set[str]:
    return names(project()["optional-dependencies"]["dev-tools"])


def dev_tools_only_modules() -> set[str]:
    """The top-level modules that the extra's distributions provide and the gateway's own dependencies do not."""
    only = dev_tools_distributions() - runtime_distributions()
    providers = importlib.metadata.packages_distributions()
    return {module for module, dists in providers.items() if only & {_normalise(dist) for dist in dists}}


def third_party_imports(root: Path) -> dict[str, set[str]]:
    """Top-level modules imported anywhere below `root` (in functions too), outside the standard library and the
    project, each with the files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                found.setdefault(module.split(".")[0], set()).add(path.relative_to(REPO_ROOT).as_posix())
    return {
        module: files
        for module, files in found.items()
        if module not in sys.stdlib_module_names and module not in ("gateway", DEV_TOOLS_PACKAGE)
    }


def test_the_gateway_installs_no_dependency_of_the_dev_tools():
    assert dev_tools_distributions() == {"starlette", "grpcio"}
    assert dev_tools_distributions() & runtime_distributions() == set()


def test_the_extra_table_of_the_dev_tools_names_the_extra_in_pyproject():
    assert set(extra.EXTRA_MODULES) == dev_tools_distributions()
    providers = importlib.metadata.packages_distributions()
    for distribution, module in extra.EXTRA_MODULES.items():
        assert distribution in {_normalise(name) for name in providers.get(module, [])}, (distribution, module)


def test_the_dev_tools_import_only_what_the_gateway_or_their_extra_installs():
    declared = runtime_distributions() | dev_tools_distributions()
    providers = importlib.metadata.packages_distributions()
    for module, files in third_party_imports(DEV_TOOLS).items():
        distributions = {_normalise(name) for name in providers.get(module, [])}
        assert distributions & declared, f"{sorted(files)} import {module}, which neither list declares"


def test_no_gateway_module_imports_a_dev_tool_or_what_only_the_dev_tools_need():
    dev_only = dev_tools_only_modules()
    assert {"starlette", "grpc"} <= dev_only
    imports = third_party_imports(GATEWAY)
    assert {module: sorted(files) for module, files in imports.items() if module in dev_only} == {}
    for path in GATEWAY.rglob("*.py"):
        assert DEV_TOOLS_PACKAGE not in path.read_text(), f"{path} names the dev tools"


def test_importing_every_gateway_module_loads_no_dev_tool_and_no_dependency_only_they_need():
    completed = subprocess.run(
        [sys.executable, "-c", _IMPORT_THE_GATEWAY],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=True,
    )
    loaded = set(completed.stdout.split())
    assert {"gateway.app", "gateway.__main__", "gateway.propagation.w3c"} <= loaded
    unwanted = dev_tools_only_modules() | {DEV_TOOLS_PACKAGE}
    assert sorted(name for name in loaded if name.split(".")[0] in unwanted) == []


@pytest.mark.parametrize("tool", ["collector", "mesh", "demo"])
def test_a_dev_tool_without_its_extra_says_how_to_install_it_in_one_line(tool):
    # sys.modules[name] = None makes the module unimportable, as an install without the extra leaves it.
    hide_starlette = (
        "import runpy, sys; sys.modules['starlette'] = None; "
        f"runpy.run_module('gateway_devtools.{tool}', run_name='__main__', alter_sys=True)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", hide_starlette],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert completed.returncode == extra.EXIT_NOT_INSTALLED
    assert completed.stdout == ""
    assert completed.stderr == (
        f"gateway_devtools.{tool}: the dev tools need starlette, not installed: "
        "pip install 'ingress-gateway[dev-tools]'\n"
    )


def test_a_dev_tool_with_its_extra_runs_its_main(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["collector", "--help"])
    with pytest.raises(SystemExit) as exited:
        extra.run_if_installed("gateway_devtools.collector.cli")
    assert exited.value.code == 0


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-")

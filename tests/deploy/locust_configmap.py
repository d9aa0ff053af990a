"""The ConfigMap locust-loadtest, as the command deploy/README.md gives makes it with kubectl.

kustomize cannot generate it: its files live in loadtest/, outside deploy/locust, where kustomize's load restrictor
forbids reading. So the README has a `kubectl create configmap` command; this module reads that very command
and does what kubectl does with its `--from-file` sources (a directory: each regular file in it, named by its file
name; `KEY=PATH`: that file under KEY), so that the tests check what a user will apply.
"""

from __future__ import annotations

import functools
import shlex
from pathlib import Path
from typing import Any

from tests.deploy.kustomize import CONFIGMAP_KEY
from tests.deploy.manifests import DEPLOY
from tests.support import REPO_ROOT

NAME = "locust-loadtest"
NAMESPACE = "locust"
COMMAND_START = f"kubectl -n {NAMESPACE} create configmap {NAME}"


def readme_command() -> list[str]:
    """The words of the README's command, its backslash continuations joined, up to the first pipe."""
    text = (DEPLOY / "README.md").read_text().replace("\\\n", " ")
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith(COMMAND_START)]
    assert len(commands) == 1, f"deploy/README.md should give the command `{COMMAND_START} ...` once"
    return shlex.split(commands[0].split("|", 1)[0])


@functools.cache
def _configmap() -> tuple[tuple[str, str], ...]:
    data: dict[str, str] = {}
    sources = [word.removeprefix("--from-file=") for word in readme_command() if word.startswith("--from-file=")]
    assert sources, "the README's command takes no --from-file"
    for source in sources:
        key, sep, path_text = source.partition("=")
        path = REPO_ROOT / (path_text if sep else key)
        if not sep and path.is_dir():
            files = [(item.name, item) for item in sorted(path.iterdir()) if item.is_file()]
        else:
            files = [(key if sep else path.name, path)]
        for file_key, file_path in files:
            assert CONFIGMAP_KEY.fullmatch(file_key), f"kubectl refuses the key {file_key!r}"
            assert file_key not in data, f"kubectl refuses the key {file_key!r} given twice"
            data[file_key] = file_path.read_text()
    return tuple(data.items())


def loadtest_configmap() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "data": dict(_configmap()),
    }


def source_of(key: str) -> Path:
    """The file of the repository a key of the ConfigMap is read from."""
    for source in [word.removeprefix("--from-file=") for word in readme_command() if word.startswith("--from-file=")]:
        source_key, sep, path_text = source.partition("=")
        path = REPO_ROOT / (path_text if sep else source_key)
        if sep and source_key == key:
            return path
        if not sep and path.is_dir() and (path / key).is_file():
            return path / key
    raise KeyError(key)

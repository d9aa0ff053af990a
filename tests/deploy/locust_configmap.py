"""The ConfigMap locust-loadtest, as the command deploy/README.md gives makes it with kubectl.

kustomize cannot generate it: its files live in loadtest/, outside deploy/locust, where kustomize's load restrictor
forbids reading. So the README has a `kubectl create configmap` command; this module runs that very command with
the pinned kubectl, offline (`--dry-run=client`), so that the tests check what a user will apply.
"""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path
from typing import Any

from tests.deploy.kustomize import kubectl
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
    words = readme_command()
    assert "--dry-run=client" in words, "the README's command must build the ConfigMap offline and pipe it to apply"
    # The user's output format is for `kubectl apply`; the tests read JSON.
    arguments = [word for word in words[1:] if word not in ("-o", "yaml", "json")]
    configmap = json.loads(kubectl(*arguments, "-o", "json", cwd=REPO_ROOT))
    return tuple(configmap["data"].items())


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

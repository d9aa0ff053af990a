"""The real images, built and run with podman (Docker is not on these machines): a Debian base made by mmdebstrap,
the images built from deploy/'s Dockerfiles on it, and containers run as the manifests run them. Every container a
test starts is removed by its id; every wait is bounded."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support import REPO_ROOT

BASE_IMAGE = "localhost/ingress-gateway-test-base"
LIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
# The machine's CA bundle, for pip behind a TLS-intercepting proxy (the Dockerfiles' ARG PIP_CERT).
HOST_CA_BUNDLE = Path(
    os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
)


def podman(*arguments: str, timeout: float = 60) -> str:
    result = subprocess.run(["podman", *arguments], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"podman {' '.join(arguments[:3])} failed:\n{result.stderr[-4000:]}"
    return result.stdout


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], timeout=60, check=False).returncode == 0


def debian_base(work: Path) -> str:
    """A Debian bookworm image with python3 and python3-venv, made once per machine (about a minute)."""
    if not image_exists(BASE_IMAGE):
        tarball = work / "base.tar"
        subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(tarball),
            ],
            capture_output=True,
            timeout=900,
            check=True,
        )
        podman("import", str(tarball), BASE_IMAGE, timeout=300)
        tarball.unlink()
    return BASE_IMAGE


def build(dockerfile: Path, tag: str, base: str) -> dict[str, Any]:
    """`podman build` from the repository root, as deploy/README.md says; the built image's configuration."""
    arguments = ["build", "--isolation=chroot", *LIMITS, "--build-arg", f"BASE_IMAGE={base}"]
    if HOST_CA_BUNDLE.is_file():
        arguments += ["-v", f"{HOST_CA_BUNDLE}:/run/build-ca.crt:ro", "--build-arg", "PIP_CERT=/run/build-ca.crt"]
    previous = _image_id(tag)
    podman(*arguments, "-f", str(dockerfile), "-t", tag, str(REPO_ROOT), timeout=1800)
    if previous and previous != _image_id(tag):
        # The image an earlier run built under this tag, now superseded: each would keep hundreds of MB.
        subprocess.run(["podman", "rmi", previous], capture_output=True, timeout=120, check=False)
    [inspected] = json.loads(podman("image", "inspect", tag))
    config: dict[str, Any] = inspected["Config"]
    return config


def _image_id(name: str) -> str:
    result = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True, timeout=60
    )
    return result.stdout.strip() if result.returncode == 0 else ""


class Container:
    """`podman run -d`, removed by its id on exit."""

    def __init__(self, image: str, *options: str, command: tuple[str, ...] = ()) -> None:
        self.image, self.options, self.command = image, options, command
        self.id = ""

    def __enter__(self) -> Container:
        self.id = podman(
            "run", "-d", "--runtime=runc", "--network=host", *LIMITS, *self.options, self.image, *self.command
        ).strip()
        return self

    def logs(self) -> str:
        result = subprocess.run(["podman", "logs", self.id], capture_output=True, text=True, timeout=60, check=False)
        return result.stdout + result.stderr

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["podman", "rm", "-f", "-t", "10", self.id], capture_output=True, timeout=60, check=False)

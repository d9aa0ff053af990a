"""`ingress-gateway check` against what the manifests deploy: the ConfigMap's environment and its route file.

This is the pre-check docs/deploy.md shows for a ConfigMap change, run on the real command in a clean environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from tests.deploy.manifests import BASE, EMOJIVOTO, gateway_env, mounted_file, one, rendered

GATEWAY_BIN = str(Path(sys.executable).with_name("ingress-gateway"))


@pytest.mark.parametrize("directory", [BASE, EMOJIVOTO], ids=["base", "emojivoto"])
def test_check_passes_on_the_settings_and_routes_each_overlay_deploys(directory: Path, tmp_path: Path) -> None:
    objects = rendered(directory)
    env = gateway_env(objects)
    deployment = one(objects, "Deployment", "ingress-gateway")
    routes = tmp_path / "routes.yaml"
    routes.write_text(mounted_file(objects, deployment, env["GATEWAY_ROUTES_FILE"], "ingress-gateway"))
    # The Secret's files as the kubelet would mount them: a certificate that check can really load.
    tls = {}
    if env.get("GATEWAY_TLS_CERT_FILE"):
        certificate = trustme.CA().issue_cert("gateway.example.com")
        cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
        certificate.cert_chain_pems[0].write_to_path(str(cert))
        certificate.private_key_pem.write_to_path(str(key))
        tls = {"GATEWAY_TLS_CERT_FILE": str(cert), "GATEWAY_TLS_KEY_FILE": str(key)}
    clean = {name: value for name, value in os.environ.items() if not name.upper().startswith("GATEWAY_")}
    result = subprocess.run(
        [GATEWAY_BIN, "check", "--strict"],
        env={**clean, **env, **tls, "GATEWAY_ROUTES_FILE": str(routes)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # --strict: not even a warning (an unknown variable, no exporter) in what the manifests deploy.
    assert result.returncode == 0, result.stderr
    shown = dict(line.split("=", 1) for line in result.stdout.splitlines())
    for name, value in env.items():
        if name not in ("GATEWAY_ROUTES_FILE", *tls):
            assert shown[name] == value or float(shown[name]) == float(value), (name, value, shown[name])

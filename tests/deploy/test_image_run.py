"""The images built for real from deploy/'s Dockerfiles (podman, on a Debian base made by mmdebstrap), checked
against the manifests by what the BUILT images say (podman image inspect), and the gateway's image run as the
manifests run it: non-root, read-only root filesystem, their environment, sending traced requests to an upstream and
a collector on 127.0.0.1.

Minutes of building: `make image-test` runs these (and .ci/run runs that target); plain pytest skips them.
"""

from __future__ import annotations

import gzip
import os
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.deploy.locust_configmap import loadtest_configmap
from tests.deploy.manifests import (
    EMOJIVOTO,
    GATEWAY_DOCKERFILE,
    LOCUST,
    LOCUST_DOCKERFILE,
    container,
    gateway_env,
    one,
    port_number,
    referenced_configmap,
    rendered,
)
from tests.deploy.podman import LIMITS, Container, build, debian_base, podman
from tests.support import LOOPBACK, ThreadedServer, free_port

pytestmark = pytest.mark.skipif(
    os.environ.get("INGRESS_GATEWAY_IMAGE_TEST") != "1", reason="builds images for minutes: run `make image-test`"
)
GATEWAY_TAG = "registry.example.com/ingress-gateway:image-test"
LOCUST_TAG = "registry.example.com/ingress-gateway-locust:image-test"
FORGED_TRACE_ID = "f" * 32


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    return debian_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def gateway_image(base) -> dict[str, Any]:
    return build(GATEWAY_DOCKERFILE, GATEWAY_TAG, base)


@pytest.fixture(scope="module")
def locust_image(base) -> dict[str, Any]:
    return build(LOCUST_DOCKERFILE, LOCUST_TAG, base)


def check_against_manifests(config: dict[str, Any], workloads: list[dict[str, Any]]) -> None:
    uid, _, gid = config["User"].partition(":")
    exposed = {int(port.split("/")[0]) for port in config.get("ExposedPorts", {})}
    for workload in workloads:
        item = container(workload)
        security = item["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))
        assert security["runAsNonRoot"] and int(uid) != 0
        assert {port["containerPort"] for port in item.get("ports", [])} == exposed
        for probe in ("livenessProbe", "readinessProbe"):
            if probe in item:
                port = item[probe]["httpGet"]["port"]
                assert port in {p["name"] for p in item["ports"]} | exposed, f"{probe} asks a port the image lacks"
        assert "command" not in item, "the manifests run the image's entrypoint"
    assert config["StopSignal"] == "SIGTERM"


def test_the_built_gateway_image_is_what_the_manifests_expect(gateway_image):
    assert gateway_image["Entrypoint"] == ["ingress-gateway"]
    assert gateway_image["WorkingDir"] == "/app"
    check_against_manifests(gateway_image, [one(rendered(EMOJIVOTO), "Deployment", "ingress-gateway")])


def test_the_locust_master_starts_from_its_image_as_the_manifests_run_it(locust_image, tmp_path):
    """The master's args, environment, user and mounts (locust-config, the locust-loadtest ConfigMap as the package
    loadtest), read-only, on free ports: its readiness probe's page answers, so the image imports the scenarios and
    the check and reads the configuration."""
    tmp_path.chmod(0o755)
    objects = rendered(LOCUST)
    master = one(objects, "Deployment", "locust-master")
    item = container(master)
    security = item["securityContext"]
    assert security["readOnlyRootFilesystem"]
    mounts: list[str] = []
    volumes = {volume["name"]: volume for volume in master["spec"]["template"]["spec"]["volumes"]}
    for mount in item["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" not in volume:
            assert mount["mountPath"] == "/tmp", f"volume {mount['name']} is neither a ConfigMap nor /tmp"
            continue
        name = volume["configMap"]["name"]
        if name == loadtest_configmap()["metadata"]["name"]:
            data = loadtest_configmap()["data"]
        else:
            data = referenced_configmap(objects, master, name)["data"]
        directory = readable_dir(tmp_path / mount["name"])
        for key, value in data.items():
            (directory / key).write_text(value)
            (directory / key).chmod(0o644)
        mounts += ["-v", f"{directory}:{mount['mountPath']}:ro"]
    env = [f"{variable['name']}={variable['value']}" for variable in item.get("env", [])]
    web_port, master_port = free_port(), free_port()
    probe = item["readinessProbe"]["httpGet"]
    assert port_number(master, probe["port"]) == 8089
    options = [
        "--read-only", "--tmpfs", "/tmp", "--cap-drop=ALL", "--security-opt", "no-new-privileges",
        "--user", f"{security['runAsUser']}:{security['runAsGroup']}", *mounts,
        *(word for variable in env for word in ("--env", variable)),
    ]  # fmt: skip
    command = (*item["args"], "--web-host", LOOPBACK, "--web-port", str(web_port), "--master-bind-host", LOOPBACK,
               "--master-bind-port", str(master_port))  # fmt: skip
    with Container(LOCUST_TAG, *options, command=command) as run:
        wait_until_ready(run, f"http://{LOOPBACK}:{web_port}{probe['path']}")


def test_the_built_locust_image_is_what_the_manifests_expect(locust_image):
    assert locust_image["Entrypoint"] == ["locust"]
    objects = rendered(LOCUST)
    check_against_manifests(locust_image, [one(objects, "Deployment", "locust-master")])
    # Workers listen on nothing: their ports are a subset.
    worker = container(one(objects, "Deployment", "locust-worker"))
    assert worker["securityContext"]["runAsUser"] == int(locust_image["User"].partition(":")[0])
    with Container(LOCUST_TAG, "--read-only", "--tmpfs", "/tmp", command=("--version",)) as run:
        status = subprocess.run(["podman", "wait", run.id], capture_output=True, text=True, timeout=120, check=True)
        assert status.stdout.strip() == "0", run.logs()
        assert "locust" in run.logs().lower()


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append((request.url.path, dict(request.headers), body))
        return PlainTextResponse("ok", status_code=202 if request.method == "POST" else 200)


def readable_dir(path: Path) -> Path:
    # The container runs as uid 10001: what it reads must be readable by others.
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def wait_until_ready(run: Container, probe_url: str) -> None:
    """Until the container's readiness probe answers 200 (60 s at most); its log in the failure otherwise."""

    def ready() -> bool:
        try:
            return httpx.get(probe_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 60, f"answer from {probe_url}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{run.logs()}") from None


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.2)


OPENSSL_SELF_SIGNED = [
    "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
]  # fmt: skip


@dataclass
class GatewayRun:
    """How the manifests run the gateway, moved onto loopback: podman options, the listeners' ports, the scheme."""

    options: list[str]
    port: int
    redirect_port: int
    admin_port: int
    scheme: str


def as_the_manifests_run_it(tmp_path: Path, upstream_url: str, collector_url: str) -> GatewayRun:
    """The manifests' environment, user and read-only root filesystem; the routes file and the TLS Secret mounted
    where the Deployment mounts them; only the addresses changed to loopback and free ports."""
    tmp_path.chmod(0o755)
    security = container(one(rendered(EMOJIVOTO), "Deployment", "ingress-gateway"))["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["runAsNonRoot"]
    env = gateway_env(rendered(EMOJIVOTO))
    routes = readable_dir(tmp_path / "routes")
    (routes / "routes.yaml").write_text(f"routes:\n  - name: web\n    upstream: {upstream_url}\n")
    (routes / "routes.yaml").chmod(0o644)
    port, redirect_port, admin_port = free_port(), free_port(), free_port()
    env.update(
        GATEWAY_HOST=LOOPBACK,
        GATEWAY_PORT=str(port),
        GATEWAY_HTTP_REDIRECT_PORT=str(redirect_port),
        GATEWAY_ADMIN_PORT=str(admin_port),
        GATEWAY_SAMPLE_RATE="1.0",
        GATEWAY_REPORTER_FLUSH_INTERVAL="0.2",
    )
    env["GATEWAY_OTLP_URL"] = f"{collector_url}/v1/traces"
    assert env["GATEWAY_ROUTES_FILE"] == "/etc/ingress-gateway/routes/routes.yaml"
    mounts = ["-v", f"{routes}:/etc/ingress-gateway/routes:ro"]
    scheme = "https"
    tls = readable_dir(tmp_path / "tls")
    key, cert = tls / "tls.key", tls / "tls.crt"
    command = [*OPENSSL_SELF_SIGNED, "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, capture_output=True, timeout=60, check=True)
    key.chmod(0o644)
    cert.chmod(0o644)
    assert env["GATEWAY_TLS_CERT_FILE"] == "/etc/ingress-gateway/tls/default/tls.crt"
    mounts += ["-v", f"{tls}:/etc/ingress-gateway/tls/default:ro"]
    env_file = tmp_path / "gateway.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    options = [
        "--read-only", "--tmpfs", "/tmp", "--cap-drop=ALL", "--security-opt", "no-new-privileges",
        "--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--env-file", str(env_file), *mounts,
    ]  # fmt: skip
    return GatewayRun(options, port, redirect_port, admin_port, scheme)


def recording_servers() -> tuple[Recorder, Recorder, ThreadedServer, ThreadedServer]:
    upstream, collector = Recorder(), Recorder()
    upstream_app = Starlette(routes=[Route("/{path:path}", upstream.handle, methods=["GET"])])
    collector_app = Starlette(routes=[Route("/{path:path}", collector.handle, methods=["POST"])])
    return upstream, collector, ThreadedServer(upstream_app), ThreadedServer(collector_app)


def test_the_image_runs_read_only_as_the_manifests_do_and_traces_requests(gateway_image, tmp_path):
    upstream, collector, upstream_server, collector_server = recording_servers()
    with upstream_server, collector_server:
        run = as_the_manifests_run_it(tmp_path, upstream_server.url, collector_server.url)
        with Container(GATEWAY_TAG, *run.options) as gateway:
            admin = f"http://{LOOPBACK}:{run.admin_port}"
            wait_until_ready(gateway, f"{admin}/ready")
            forged = {"X-B3-TraceId": FORGED_TRACE_ID, "X-B3-SpanId": "f" * 16, "X-B3-Sampled": "1"}
            with httpx.Client(verify=False, timeout=10) as client:
                for number in range(5):
                    response = client.get(f"{run.scheme}://{LOOPBACK}:{run.port}/vote/{number}", headers=forged)
                    assert response.status_code == 200, response.text
            seen = [headers for path, headers, _ in upstream.requests]
            assert len(seen) == 5
            trace_ids = {headers["x-b3-traceid"] for headers in seen}
            # B3 reaches the upstream, from the gateway's own decision: the client's forged ids are gone.
            assert FORGED_TRACE_ID not in trace_ids and len(trace_ids) == 5
            assert {headers["x-b3-sampled"] for headers in seen} == {"1"}

            def bodies() -> bytes:
                return b"".join(
                    gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body for _, _, body in collector.requests
                )

            def every_trace_reported() -> bool:
                data = bodies()
                return all(tid.encode() in data or bytes.fromhex(tid) in data for tid in trace_ids)

            wait_until(every_trace_reported, 30, "spans of every trace at the collector")
            assert FORGED_TRACE_ID.encode() not in bodies() and bytes.fromhex(FORGED_TRACE_ID) not in bodies()
            assert httpx.get(f"{admin}/metrics", timeout=10).status_code == 200


def test_the_image_serves_tls_from_the_mounted_secret_and_redirects_port_80(gateway_image, tmp_path):
    upstream, _, upstream_server, collector_server = recording_servers()
    with upstream_server, collector_server:
        run = as_the_manifests_run_it(tmp_path, upstream_server.url, collector_server.url)
        assert run.scheme == "https"
        with Container(GATEWAY_TAG, *run.options) as gateway:
            wait_until_ready(gateway, f"http://{LOOPBACK}:{run.admin_port}/ready")
            # Verified against the certificate mounted as the Secret: the gateway serves that very one.
            trusting = ssl.create_default_context(cafile=str(tmp_path / "tls" / "tls.crt"))
            with httpx.Client(verify=trusting, timeout=10) as client:
                response = client.get(f"https://localhost:{run.port}/vote/1")
            assert response.status_code == 200 and len(upstream.requests) == 1
            redirect = httpx.get(f"http://{LOOPBACK}:{run.redirect_port}/vote/1?x=1", timeout=10)
            assert redirect.status_code == 308
            assert redirect.headers["location"].startswith("https://") and "/vote/1" in redirect.headers["location"]


def test_ingress_gateway_check_accepts_the_manifests_settings_in_the_image(gateway_image, tmp_path):
    """`ingress-gateway check`, run in the image with the manifests' environment and mounts: the certificate the
    Secret mounts included."""
    run = as_the_manifests_run_it(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9")
    with Container(GATEWAY_TAG, *run.options, command=("check",)) as checked:
        status = subprocess.run(["podman", "wait", checked.id], capture_output=True, text=True, timeout=60)
        assert status.stdout.strip() == "0", checked.logs()


def test_the_gateway_image_carries_neither_the_dev_tools_nor_their_dependencies(gateway_image):
    """The image's `pip install .` builds the gateway alone: no gateway_devtools, no starlette, no grpcio."""
    absent = (
        "import importlib.util; "
        "print(*(name for name in ('gateway', 'gateway_devtools', 'starlette', 'grpc') "
        "if importlib.util.find_spec(name) is not None))"
    )
    run = ("run", "--rm", "--runtime=runc", "--network=none", *LIMITS, "--entrypoint=python3", GATEWAY_TAG)
    found = podman(*run, "-c", absent)
    assert found.split() == ["gateway"]

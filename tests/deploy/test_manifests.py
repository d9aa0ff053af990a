"""deploy/: the manifests parse, name only real settings, probe the real admin listener, and agree with each other."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge
from pydantic import ValidationError

from gateway.admin import READY_METRIC, AdminServer
from gateway.routes import load_routes
from gateway.settings import ENV_PREFIX, Settings
from tests.support import LOOPBACK, REPO_ROOT, free_port

DEPLOY = REPO_ROOT / "deploy"
BASE = DEPLOY / "base"
DOCKERFILE = DEPLOY / "Dockerfile"
NAMESPACE = "ingress-gateway"
CONSOLE_SCRIPT = "ingress-gateway"
LINKERD_COLLECTOR_SPANS = "http://linkerd-collector.linkerd:9411/api/v2/spans"


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(BASE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for doc in documents() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    document: dict[str, Any] = found[0]
    return document


def container() -> dict[str, Any]:
    [gateway] = one("Deployment")["spec"]["template"]["spec"]["containers"]
    spec: dict[str, Any] = gateway
    return spec


def env_config() -> dict[str, str]:
    """Every GATEWAY_* variable the pod gets: its ConfigMap's, then the container's own `env` entries."""
    refs = [source["configMapRef"]["name"] for source in container()["envFrom"]]
    values: dict[str, str] = {}
    for ref in refs:
        values.update(one("ConfigMap", ref)["data"])
    values.update({item["name"]: item["value"] for item in container().get("env", [])})
    return {name: value for name, value in values.items() if name.startswith(ENV_PREFIX)}


def port_of(name: str) -> int:
    [port] = [port["containerPort"] for port in container()["ports"] if port["name"] == name]
    return int(port)


def routes_file_content() -> str:
    mount_dir, file_name = env_config()["GATEWAY_ROUTES_FILE"].rsplit("/", 1)
    [mount] = [mount for mount in container()["volumeMounts"] if mount["mountPath"] == mount_dir]
    volumes = one("Deployment")["spec"]["template"]["spec"]["volumes"]
    [volume] = [volume for volume in volumes if volume["name"] == mount["name"]]
    return str(one("ConfigMap", volume["configMap"]["name"])["data"][file_name])


# --- every file ---------------------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_nothing_else():
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(path.name for path in BASE.glob("*.yaml") if path.name != "kustomization.yaml")
    assert len(set(listed)) == len(listed)


def test_every_manifest_is_a_named_kubernetes_object_in_the_gateway_namespace():
    kinds = sorted(doc["kind"] for doc in documents())
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    for doc in documents():
        assert doc["apiVersion"] and doc["metadata"]["name"], doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    assert one("Namespace")["metadata"]["name"] == NAMESPACE


# --- settings -----------------------------------------------------------------------------------------------------


def test_every_gateway_variable_is_a_setting():
    fields = set(Settings.model_fields)
    unknown = sorted(name for name in env_config() if name.removeprefix(ENV_PREFIX).lower() not in fields)
    assert unknown == []
    # Every variable of the ConfigMap's data is a GATEWAY_ one: a typo'd prefix would be silently ignored.
    assert set(one("ConfigMap", "ingress-gateway-env")["data"]) <= set(env_config())


def test_settings_of_the_manifests_are_valid(tmp_path, monkeypatch):
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_file_content())
    for name, value in env_config().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GATEWAY_ROUTES_FILE", str(routes))
    try:
        settings = Settings(_env_file=None)
    except ValidationError as exc:
        pytest.fail(f"the ConfigMap's settings are invalid:\n{exc}")
    assert settings.zipkin_url == LINKERD_COLLECTOR_SPANS
    assert settings.sample_rate == 0.5
    assert not settings.trust_incoming_trace
    assert not settings.preserve_host


def test_routes_configmap_loads_as_a_route_table(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(routes_file_content())
    routes = load_routes(path)
    assert [route.name for route in routes] == ["emojivoto-vote", "emojivoto-api"]
    assert {route.upstream.host for route in routes} == {"web-svc.emojivoto.svc.cluster.local"}


# --- ports and probes ---------------------------------------------------------------------------------------------


def test_container_ports_are_the_configured_listeners():
    settings = env_config()
    assert port_of("http") == int(settings["GATEWAY_PORT"]) == 8080
    assert port_of("admin") == int(settings["GATEWAY_ADMIN_PORT"]) == 9901
    [service_port] = one("Service")["spec"]["ports"]
    assert service_port["targetPort"] == "http"
    assert one("Service")["spec"]["type"] == "LoadBalancer"


@pytest.mark.parametrize(("probe", "path"), [("livenessProbe", "/live"), ("readinessProbe", "/ready")])
def test_probes_ask_the_admin_listener(probe, path):
    check = container()[probe]["httpGet"]
    assert (check["path"], check["port"]) == (path, "admin")


@pytest.fixture
def admin() -> Iterator[tuple[str, Gauge]]:
    registry = CollectorRegistry()
    ready = Gauge(READY_METRIC, "workers ready", registry=registry)
    server = AdminServer(LOOPBACK, free_port(), registry)
    server.start()
    try:
        yield f"http://{LOOPBACK}:{server.port}", ready
    finally:
        server.stop()


def test_probe_paths_answer_on_the_real_admin_listener(admin):
    url, ready = admin
    paths = {probe: container()[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe")}
    assert httpx.get(url + paths["livenessProbe"]).status_code == 200
    # Not ready until a worker is: the pod gets no traffic before then.
    assert httpx.get(url + paths["readinessProbe"]).status_code == 503
    ready.set(1)
    assert httpx.get(url + paths["readinessProbe"]).status_code == 200
    scrape = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(scrape["prometheus.io/port"]) == port_of("admin")
    assert httpx.get(url + scrape["prometheus.io/path"]).status_code == 200


# --- the pod ------------------------------------------------------------------------------------------------------


def test_deployment_runs_the_console_script_from_the_configured_image():
    assert container()["command"] == [CONSOLE_SCRIPT]
    assert container()["image"] in {
        image["name"] for image in yaml.safe_load((BASE / "kustomization.yaml").read_text())["images"]
    }
    assert one("Deployment")["spec"]["replicas"] == 2


def test_selectors_match_the_pods():
    deployment = one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        one("Service")["spec"]["selector"],
        one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    assert one("PodDisruptionBudget")["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]


def test_grace_period_outlasts_drain_requests_and_span_flush():
    pod = one("Deployment")["spec"]["template"]
    [sleep, seconds] = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"
    shutdown = float(env_config()["GATEWAY_SHUTDOWN_TIMEOUT"])
    needed = int(seconds) + 2 * shutdown  # preStop, then requests in flight, then queued spans
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    proxy_wait = int(pod["metadata"]["annotations"]["config.alpha.linkerd.io/proxy-wait-before-exit-seconds"])
    assert needed <= proxy_wait < grace


def test_pod_is_meshed_in_ingress_mode_and_traced():
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["linkerd.io/inject"] == "ingress"
    assert annotations["config.linkerd.io/trace-collector"] == "linkerd-collector.linkerd:55678"
    assert annotations["config.alpha.linkerd.io/trace-collector-service-account"] == "linkerd-collector"
    assert one("Namespace")["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"
    assert env_config()["GATEWAY_ZIPKIN_URL"] == LINKERD_COLLECTOR_SPANS


def test_container_is_unprivileged_with_a_read_only_root():
    security = container()["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == dockerfile_user() != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "/tmp" in {mount["mountPath"] for mount in container()["volumeMounts"]}
    assert container()["resources"]["requests"] and container()["resources"]["limits"]


# --- the image ----------------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile_user() -> int:
    [user] = [argument for instruction, argument in dockerfile_instructions() if instruction == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot check it"
    return int(uid)


def test_dockerfile_entrypoint_is_the_console_script():
    [entrypoint] = [argument for instruction, argument in dockerfile_instructions() if instruction == "ENTRYPOINT"]
    assert json.loads(entrypoint) == [CONSOLE_SCRIPT]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[CONSOLE_SCRIPT] == "gateway.__main__:main"


def test_dockerfile_builds_the_package_on_python_311_slim_as_a_non_root_user():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(
        instruction == "RUN" and re.search(r"\bpip install \.", argument) for instruction, argument in instructions
    )
    assert dockerfile_user() >= 1000
    for instruction, argument in instructions:
        if instruction == "COPY":
            *sources, _ = shlex.split(argument)
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository (build from its root)"
    exposed = {
        int(port) for instruction, argument in instructions if instruction == "EXPOSE" for port in argument.split()
    }
    assert exposed == {port_of("http"), port_of("admin")}


def test_readmes_name_the_files_that_exist():
    readme = (DEPLOY / "README.md").read_text()
    for path in [*BASE.glob("*.yaml"), DOCKERFILE]:
        assert path.name in readme, f"deploy/README.md does not mention {path.name}"
    assert Path(REPO_ROOT / "loadtest" / "README.md").exists()

"""deploy/ agrees with the code and with itself: real settings, the real admin listener, ports that meet."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge
from pydantic import ValidationError

from gateway.admin import READY_METRIC, AdminServer
from gateway.route_file import load_routes
from gateway.route_table import RouteTable
from gateway.routes import Route, parse_upstream
from gateway.settings import ENV_PREFIX, Settings
from tests.deploy.kustomize import pod_spec
from tests.deploy.manifests import (
    BASE,
    COLLECTOR,
    DEPLOY,
    EMOJIVOTO,
    GATEWAY_OVERLAYS,
    MONITORING,
    OPENCENSUS,
    Obj,
    cluster,
    container,
    environment,
    gateway_env,
    mounted_file,
    one,
    only,
    port_number,
    rendered,
    resolve,
    service_target,
)
from tests.support import LOOPBACK, free_port

GATEWAY = "ingress-gateway"
GATEWAY_VARIABLE = re.compile(r"\bGATEWAY_[A-Z0-9_]+\b")
EMOJIVOTO_WEB = "web-svc.emojivoto.svc.cluster.local"
# Receivers of the collector and the Linkerd proxy protocol (config.linkerd.io/trace-collector-protocol) each serves.
PROXY_PROTOCOL_RECEIVERS = {"opencensus": "opencensus", "opentelemetry": "otlp"}
TEXT_SUFFIXES = {".yaml", ".yml", ".env", ".conf", ".md", ".txt", ""}


def gateway_objects(directory=EMOJIVOTO) -> list[Obj]:
    return rendered(directory)


def gateway_deployment(objects: list[Obj]) -> Obj:
    return one(objects, "Deployment", GATEWAY)


def pod_annotations(workload: Obj) -> dict[str, str]:
    annotations: dict[str, str] = workload["spec"]["template"]["metadata"]["annotations"]
    return annotations


def collector_config() -> Obj:
    objects = rendered(COLLECTOR)
    collector = one(objects, "Deployment", "otel-collector")
    [args] = container(collector)["args"]
    config_path = args.removeprefix("--config=")
    config: Obj = yaml.safe_load(mounted_file(objects, collector, config_path))
    return config


def receiver_ports(config: Obj) -> dict[str, int]:
    """Each receiver's listening port, `otlp` being its gRPC one."""
    ports: dict[str, int] = {}
    for name, receiver in config["receivers"].items():
        endpoint = receiver["protocols"]["grpc"]["endpoint"] if name == "otlp" else receiver["endpoint"]
        host, _, port = endpoint.rpartition(":")
        # 0.0.0.0: since collector v0.104 an endpoint without host is localhost, which no other pod reaches.
        assert host == "0.0.0.0", f"receiver {name} listens on {endpoint}: other pods cannot reach it"
        ports[name] = int(port)
    return ports


# --- settings -------------------------------------------------------------------------------------------------------


def test_every_gateway_variable_named_in_deploy_is_a_setting():
    fields = set(Settings.model_fields)
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name == "Dockerfile"):
            names = set(GATEWAY_VARIABLE.findall(path.read_text()))
            unknown = sorted(name for name in names if name.removeprefix(ENV_PREFIX).lower() not in fields)
            assert unknown == [], f"{path.relative_to(DEPLOY)} names variables Settings does not read: {unknown}"


def test_the_base_configmap_sets_every_setting():
    env = environment(rendered(BASE), gateway_deployment(rendered(BASE)), GATEWAY)
    expected = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert set(env) == expected, f"add to deploy/kubernetes/base/gateway.env: {sorted(expected - set(env))}"


@pytest.mark.parametrize("directory", [BASE, EMOJIVOTO, OPENCENSUS], ids=["base", "emojivoto", "linkerd-opencensus"])
def test_the_settings_and_routes_of_each_overlay_load(directory, tmp_path, monkeypatch):
    objects = rendered(directory)
    env = gateway_env(objects)
    routes = tmp_path / "routes.yaml"
    routes.write_text(mounted_file(objects, gateway_deployment(objects), env["GATEWAY_ROUTES_FILE"], GATEWAY))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GATEWAY_ROUTES_FILE", str(routes))
    try:
        settings = Settings(_env_file=None)
    except ValidationError as exc:
        pytest.fail(f"the ConfigMap's settings are invalid:\n{exc}")
    assert settings.routes_file is not None
    assert load_routes(settings.routes_file)
    assert settings.sample_rate == 0.5
    assert not settings.trust_incoming_trace
    assert settings.trusted_cidrs == []


@pytest.mark.parametrize(
    ("host", "path"), [("emojivoto.example.com", "/"), ("203.0.113.9", "/api/vote"), ("x", "/js/app.js")]
)
def test_emojivoto_overlay_routes_every_request_to_web_svc(host, path, tmp_path, monkeypatch):
    objects = rendered(EMOJIVOTO)
    env = gateway_env(objects)
    routes = tmp_path / "routes.yaml"
    routes.write_text(mounted_file(objects, gateway_deployment(objects), env["GATEWAY_ROUTES_FILE"], GATEWAY))
    fallback = env["GATEWAY_UPSTREAM_URL"]
    default = Route(name="default", upstream=parse_upstream(fallback)) if fallback else None
    route = RouteTable(load_routes(routes), default).match(host, path)
    assert route is not None
    assert (route.upstream.host, route.upstream.port) == (EMOJIVOTO_WEB, 80)
    assert route.sample_rate is None, "the reference samples every emojivoto request at the global rate"


# --- ports and probes -----------------------------------------------------------------------------------------------


def test_container_ports_are_the_configured_listeners():
    objects = gateway_objects()
    env = gateway_env(objects)
    deployment = gateway_deployment(objects)
    assert port_number(deployment, "https") == int(env["GATEWAY_PORT"])
    assert port_number(deployment, "http") == int(env["GATEWAY_HTTP_REDIRECT_PORT"])
    assert port_number(deployment, "admin") == int(env["GATEWAY_ADMIN_PORT"])
    service = one(objects, "Service", GATEWAY)
    assert service["spec"]["type"] == "LoadBalancer"
    assert {item["port"] for item in service["spec"]["ports"]} == {443, 80}
    assert service_target(objects, service, 443) == (deployment, int(env["GATEWAY_PORT"]))
    assert service_target(objects, service, 80) == (deployment, int(env["GATEWAY_HTTP_REDIRECT_PORT"]))


@pytest.mark.parametrize(("probe", "path"), [("livenessProbe", "/live"), ("readinessProbe", "/ready")])
def test_probes_ask_the_admin_listener(probe, path):
    objects = gateway_objects()
    deployment = gateway_deployment(objects)
    check = container(deployment, GATEWAY)[probe]["httpGet"]
    assert check["path"] == path
    assert port_number(deployment, check["port"]) == int(gateway_env(objects)["GATEWAY_ADMIN_PORT"])


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


def test_probe_and_scrape_paths_answer_on_the_real_admin_listener(admin):
    url, ready = admin
    objects = gateway_objects()
    deployment = gateway_deployment(objects)
    gateway = container(deployment, GATEWAY)
    assert httpx.get(url + gateway["livenessProbe"]["httpGet"]["path"]).status_code == 200
    # Not ready until a worker is: the pod gets no traffic before then.
    readiness = url + gateway["readinessProbe"]["httpGet"]["path"]
    assert httpx.get(readiness).status_code == 503
    ready.set(1)
    assert httpx.get(readiness).status_code == 200

    annotations = pod_annotations(deployment)
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port_number(deployment, "admin")
    scrape = httpx.get(url + annotations["prometheus.io/path"])
    assert scrape.status_code == 200
    assert READY_METRIC in scrape.text
    [endpoint] = only(rendered(MONITORING), "ServiceMonitor")["spec"]["endpoints"]
    assert httpx.get(url + endpoint["path"]).text == scrape.text


def test_the_servicemonitor_scrapes_the_admin_port_of_the_gateway_pods():
    monitoring = rendered(MONITORING)
    monitor = only(monitoring, "ServiceMonitor")
    [service] = [
        obj
        for obj in monitoring
        if obj["kind"] == "Service"
        and monitor["spec"]["selector"]["matchLabels"].items() <= obj["metadata"]["labels"].items()
    ]
    [endpoint] = monitor["spec"]["endpoints"]
    [port] = [port for port in service["spec"]["ports"] if port["name"] == endpoint["port"]]
    objects = gateway_objects()
    deployment = gateway_deployment(objects)
    assert service["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert port_number(deployment, port["targetPort"]) == int(gateway_env(objects)["GATEWAY_ADMIN_PORT"])


# --- the pod --------------------------------------------------------------------------------------------------------


def test_every_selector_selects_exactly_one_workloads_pods():
    everything = cluster()
    workloads = [obj for obj in everything if pod_spec(obj) is not None]
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for obj in everything:
        if obj["kind"] == "Service":
            selector = obj["spec"]["selector"]
        elif obj["kind"] == "PodDisruptionBudget":
            selector = obj["spec"]["selector"]["matchLabels"]
        else:
            continue
        selected = [
            workload
            for workload in workloads
            if workload["metadata"]["namespace"] == obj["metadata"]["namespace"]
            and selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"{obj['kind']} {obj['metadata']['name']} selects {len(selected)} workloads"


def test_two_replicas_scaled_by_cpu_and_drained_one_at_a_time():
    objects = gateway_objects()
    deployment = gateway_deployment(objects)
    autoscaler = only(objects, "HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", GATEWAY)
    assert deployment["spec"]["replicas"] == autoscaler["spec"]["minReplicas"] == 2
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["containerResource"]["container"] == GATEWAY
    assert metric["containerResource"]["name"] == "cpu"
    assert "cpu" in container(deployment, GATEWAY)["resources"]["requests"], "utilization is of the CPU request"
    budget = only(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] < autoscaler["spec"]["minReplicas"]


def test_grace_period_outlasts_drain_requests_and_span_flush():
    objects = gateway_objects()
    deployment = gateway_deployment(objects)
    [sleep, seconds] = container(deployment, GATEWAY)["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"
    shutdown = float(gateway_env(objects)["GATEWAY_SHUTDOWN_TIMEOUT"])
    needed = int(seconds) + 2 * shutdown  # preStop, then requests in flight, then queued spans
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    proxy_wait = int(pod_annotations(deployment)["config.alpha.linkerd.io/proxy-wait-before-exit-seconds"])
    assert needed <= proxy_wait < grace


def test_every_container_is_unprivileged_read_only_and_bounded():
    for workload in cluster():
        spec = pod_spec(workload)
        for item in spec["containers"] if spec is not None else []:
            where = f"{workload['metadata']['name']}/{item['name']}"
            security = item["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security["runAsUser"] != 0, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= item["resources"]["requests"].keys(), where
            assert "memory" in item["resources"]["limits"], where


# --- the mesh and the collector -------------------------------------------------------------------------------------


def test_the_gateway_and_the_collector_are_meshed():
    namespace = one(gateway_objects(), "Namespace", GATEWAY)
    assert namespace["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"
    # The gateway's own pods: Linkerd's ingress mode (tests/deploy/test_edge.py checks what follows from it).
    assert pod_annotations(gateway_deployment(gateway_objects()))["linkerd.io/inject"] == "ingress"
    # The proxies send spans over mTLS only: an unmeshed collector receives none ("I don't see any traces").
    tracing = one(rendered(COLLECTOR), "Namespace", "tracing")
    assert tracing["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"
    for workload in [obj for obj in rendered(COLLECTOR) if pod_spec(obj) is not None]:
        assert workload["spec"]["template"]["metadata"].get("annotations", {}).get("linkerd.io/inject") != "disabled"


@pytest.mark.parametrize("directory", GATEWAY_OVERLAYS, ids=lambda path: path.name)
def test_the_gateway_exports_otlp_to_the_collectors_otlp_http_receiver(directory):
    env = gateway_env(gateway_objects(directory))
    # One exporter: with Zipkin too, every span would reach Jaeger twice.
    assert env["GATEWAY_ZIPKIN_URL"] == ""
    url = urlsplit(env["GATEWAY_OTLP_URL"])
    assert url.scheme == "http"
    assert url.path == "/v1/traces"
    assert url.hostname is not None
    _, workload, container_port = resolve(url.hostname, url.port or 80)
    assert workload["metadata"]["name"] == "otel-collector"
    http = collector_config()["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http == f"0.0.0.0:{container_port}" and container_port == 4318


def test_current_linkerd_gets_no_tracing_annotations_and_both_propagation_formats():
    # Linkerd 2.19 and later: the control plane's proxy.tracing values tell every proxy where to send spans.
    objects = gateway_objects(EMOJIVOTO)
    annotations = pod_annotations(gateway_deployment(objects))
    assert not [name for name in annotations if "trace-collector" in name]
    assert gateway_env(objects)["GATEWAY_PROPAGATION"].split(",") == ["b3multi", "tracecontext"]


def test_the_opencensus_overlay_gives_the_proxy_its_collector_and_b3_only():
    objects = gateway_objects(OPENCENSUS)
    assert gateway_env(objects)["GATEWAY_PROPAGATION"] == "b3multi"
    annotations = pod_annotations(gateway_deployment(objects))
    assert annotations["config.linkerd.io/trace-collector-protocol"] == "opencensus"
    host, _, port = annotations["config.linkerd.io/trace-collector"].rpartition(":")
    _, workload, container_port = resolve(host, int(port))
    receiver = PROXY_PROTOCOL_RECEIVERS[annotations["config.linkerd.io/trace-collector-protocol"]]
    assert receiver_ports(collector_config())[receiver] == container_port
    # The proxy checks the collector's mTLS identity against this account.
    account = workload["spec"]["template"]["spec"]["serviceAccountName"]
    assert annotations["config.alpha.linkerd.io/trace-collector-service-account"] == account
    assert one(rendered(COLLECTOR), "ServiceAccount", account)


def test_the_collector_pipeline_receives_on_its_ports_and_exports_to_jaegers_otlp_port():
    config = collector_config()
    [pipeline] = config["service"]["pipelines"].values()
    assert set(pipeline["receivers"]) == set(config["receivers"])
    assert set(pipeline["processors"]) <= set(config["processors"])
    objects = rendered(COLLECTOR)
    collector = one(objects, "Deployment", "otel-collector")
    service = one(objects, "Service", "otel-collector")
    for name, port in receiver_ports(config).items():
        assert port in {item["containerPort"] for item in container(collector)["ports"]}, name
        assert port in {service_target(objects, service, item["port"])[1] for item in service["spec"]["ports"]}, name
    [exporter] = pipeline["exporters"]
    assert exporter.split("/")[0] == "otlp"
    host, _, port = config["exporters"][exporter]["endpoint"].rpartition(":")
    _, jaeger, container_port = resolve(host, int(port))
    assert jaeger["metadata"]["name"] == "jaeger"
    assert {item["name"]: item["value"] for item in container(jaeger)["env"]}["COLLECTOR_OTLP_ENABLED"] == "true"
    assert container_port == 4317, "Jaeger's OTLP gRPC port"
    health = config["extensions"]["health_check"]["endpoint"].rpartition(":")[2]
    assert port_number(collector, container(collector)["readinessProbe"]["httpGet"]["port"]) == int(health)


def test_the_gateway_image_is_the_one_kustomize_sets():
    objects = gateway_objects()
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    [image] = kustomization["images"]
    assert container(gateway_deployment(objects), GATEWAY)["image"] == f"{image['name']}:{image['newTag']}"
    # A placeholder of the user's registry, never a bare name that Docker Hub would resolve.
    assert image["name"].startswith("registry.example.com/")


def test_the_deploy_readme_covers_every_part_and_says_who_builds_the_images():
    readme = (DEPLOY / "README.md").read_text()
    for directory in sorted({path.parent for path in DEPLOY.rglob("*") if path.is_file()} - {DEPLOY}):
        assert f"`{directory.relative_to(DEPLOY).as_posix()}/`" in readme, f"deploy/README.md skips {directory}"
    for name in ("Dockerfile", "requirements.txt", "locust.conf", "gateway.env", "routes.yaml", ".dockerignore"):
        assert name in readme, f"deploy/README.md does not mention {name}"
    assert "built and run by your CI" in readme
    for heading in (
        "### I don't see any spans for the proxies",
        "### I don't see any traces",
        "## Changing the sample rate",
    ):
        assert heading in readme


def test_a_settings_change_rolls_the_pods_and_a_routes_change_reloads_in_place():
    objects = gateway_objects()
    deployment = gateway_deployment(objects)
    gateway = container(deployment, GATEWAY)
    # The environment is read once: its ConfigMap's name follows its content, so a change rolls the pods.
    [env_source] = gateway["envFrom"]
    assert env_source["configMapRef"]["name"].startswith("ingress-gateway-env-")
    # The route file is reloaded: the same ConfigMap, mounted as a directory (a subPath mount is never updated).
    env = gateway_env(objects)
    directory = env["GATEWAY_ROUTES_FILE"].rsplit("/", 1)[0]
    [mount] = [mount for mount in gateway["volumeMounts"] if mount["mountPath"] == directory]
    assert "subPath" not in mount
    [volume] = [
        volume for volume in deployment["spec"]["template"]["spec"]["volumes"] if volume["name"] == mount["name"]
    ]
    assert volume["configMap"]["name"] == "ingress-gateway-routes"
    assert float(env["GATEWAY_ROUTES_RELOAD_INTERVAL"]) > 0

"""deploy/locust: the master and the workers start with options loadtest/locustfile.py accepts, and those options
point at the gateway, at Jaeger, and at files the ConfigMap locust-loadtest really mounts."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.locust_configmap import loadtest_configmap, source_of
from tests.deploy.manifests import (
    EMOJIVOTO,
    LOCUST,
    Obj,
    container,
    environment,
    gateway_env,
    mounted_file,
    one,
    rendered,
    resolve,
)
from tests.support import REPO_ROOT

LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"
# Kubernetes refuses a ConfigMap over 1 MiB.
CONFIGMAP_LIMIT = 1024 * 1024
# Locust's own parser, with the locustfile's options added as `locust -f` adds them; the options as JSON. A
# subprocess: importing locust patches the standard library with gevent.
PARSE_OPTIONS = """
import importlib.util, json, sys
from locust.argument_parser import get_parser
spec = importlib.util.spec_from_file_location("locustfile", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
options = get_parser(default_config_files=[]).parse_args(sys.argv[2:])
print(json.dumps({name: value if value is None or isinstance(value, (bool, int, float)) else str(value)
                  for name, value in vars(options).items() if not isinstance(value, (list, dict))}))
"""


def workload(name: str) -> Obj:
    return one(rendered(LOCUST), "Deployment", name)


def locust_options(name: str, tmp_path) -> dict[str, Any]:
    """What locust parses in that Deployment's container, its config file read from the rendered ConfigMap."""
    objects = rendered(LOCUST)
    deployment = workload(name)
    args = list(container(deployment)["args"])
    config_at = args.index("--config") + 1
    config = tmp_path / "locust.conf"
    config.write_text(mounted_file(objects, deployment, args[config_at]))
    args[config_at] = str(config)
    result = subprocess.run(
        [sys.executable, "-c", PARSE_OPTIONS, str(LOCUSTFILE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, f"locust refuses the options of {name}:\n{result.stderr[-2000:]}"
    options: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return options


def mounted_key(deployment: Obj, path: str) -> str:
    """The key of locust-loadtest a path in the container is, after checking the volume is that ConfigMap."""
    directory, key = path.rsplit("/", 1)
    [mount] = [mount for mount in container(deployment)["volumeMounts"] if mount["mountPath"] == directory]
    [volume] = [
        volume for volume in deployment["spec"]["template"]["spec"]["volumes"] if volume["name"] == mount["name"]
    ]
    assert volume["configMap"]["name"] == loadtest_configmap()["metadata"]["name"]
    assert key in loadtest_configmap()["data"], f"{path}: locust-loadtest has no key {key}"
    return key


@pytest.fixture(scope="module")
def master(tmp_path_factory) -> dict[str, Any]:
    return locust_options("locust-master", tmp_path_factory.mktemp("master"))


def test_the_master_runs_the_locustfile_from_the_loadtest_configmap(master):
    assert master["master"] is True
    key = mounted_key(workload("locust-master"), master["locustfile"])
    assert source_of(key) == LOCUSTFILE


def test_the_loadtest_package_is_importable_from_its_mount():
    for name in ("locust-master", "locust-worker"):
        deployment = workload(name)
        [mount] = [mount for mount in container(deployment)["volumeMounts"] if mount["name"] == "loadtest"]
        parent, package = mount["mountPath"].rsplit("/", 1)
        assert package == "loadtest", "`import loadtest.check` needs the files in a directory named loadtest"
        assert environment(rendered(LOCUST), deployment)["PYTHONPATH"] == parent


def test_the_load_goes_to_the_gateways_service(master):
    url = urlsplit(master["host"])
    assert url.hostname is not None
    # TLS: port 80 only redirects.
    assert url.scheme == "https"
    _, gateway, container_port = resolve(url.hostname, url.port or 443)
    assert gateway["metadata"]["name"] == "ingress-gateway"
    assert container_port == int(gateway_env(rendered(EMOJIVOTO))["GATEWAY_PORT"])


def test_the_check_reads_jaegers_query_api(master):
    assert master["trace_backend"] == "jaeger"
    url = urlsplit(master["trace_backend_url"])
    assert url.hostname is not None
    _, jaeger, container_port = resolve(url.hostname, url.port or 80)
    assert jaeger["metadata"]["name"] == "jaeger"
    assert container_port == 16686, "Jaeger's query port, where /api/traces is"


def test_the_check_expects_the_gateways_rate_routes_and_service_name(master):
    env = gateway_env(rendered(EMOJIVOTO))
    assert float(master["trace_rate"]) == float(env["GATEWAY_SAMPLE_RATE"])
    routes_key = mounted_key(workload("locust-master"), master["trace_routes_file"])
    gateway = one(rendered(EMOJIVOTO), "Deployment", "ingress-gateway")
    gateway_routes = mounted_file(rendered(EMOJIVOTO), gateway, env["GATEWAY_ROUTES_FILE"], "ingress-gateway")
    assert loadtest_configmap()["data"][routes_key] == gateway_routes
    expectations_key = mounted_key(workload("locust-master"), master["trace_expectations"])
    expectations = yaml.safe_load(loadtest_configmap()["data"][expectations_key])
    assert (master["trace_gateway_service"] or expectations["gateway_service"]) == env["GATEWAY_SERVICE_NAME"]


def test_workers_join_the_master(tmp_path):
    options = locust_options("locust-worker", tmp_path)
    assert options["worker"] is True
    master = one(rendered(LOCUST), "Service", "locust-master")
    _, deployment, container_port = resolve(options["master_host"], int(options["master_port"]))
    assert deployment["metadata"]["name"] == "locust-master"
    assert master["metadata"]["name"] == options["master_host"].split(".")[0]
    assert container_port == int(options["master_bind_port"])
    assert mounted_key(workload("locust-worker"), options["locustfile"]) == "locustfile.py"


def test_the_loadtest_configmap_fits_and_holds_every_module_of_loadtest():
    data = loadtest_configmap()["data"]
    assert sum(len(key) + len(value.encode()) for key, value in data.items()) < CONFIGMAP_LIMIT
    modules = {path.name for path in LOCUSTFILE.parent.glob("*.py")}
    assert modules <= data.keys()

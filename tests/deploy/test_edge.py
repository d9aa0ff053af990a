"""The gateway at the edge of the mesh, as Linkerd documents an ingress: client-facing ports never reach an inbound
proxy, and the client's own address and the trust settings agree by construction. Each rule is also shown to fail
on a manifest that breaks it."""

from __future__ import annotations

import copy

import pytest

from tests.deploy.edge import client_facing_ports, ingress_routing_problems, proxy_problems, trust_problems
from tests.deploy.manifests import GATEWAY_OVERLAYS, Obj, gateway_env, one, rendered

GATEWAY = "ingress-gateway"


def edge(directory) -> tuple[Obj, Obj, dict[str, str]]:
    objects = rendered(directory)
    return one(objects, "Service", GATEWAY), one(objects, "Deployment", GATEWAY), gateway_env(objects)


def pod_annotations(workload: Obj) -> dict[str, str]:
    result: dict[str, str] = workload["spec"]["template"]["metadata"]["annotations"]
    return result


@pytest.mark.parametrize("directory", GATEWAY_OVERLAYS, ids=lambda path: path.name)
def test_no_client_facing_port_reaches_an_inbound_proxy(directory):
    service, workload, env = edge(directory)
    assert client_facing_ports(service, workload) == {int(env["GATEWAY_PORT"]), int(env["GATEWAY_HTTP_REDIRECT_PORT"])}
    assert proxy_problems(service, workload, int(env["GATEWAY_ADMIN_PORT"])) == []


@pytest.mark.parametrize("directory", GATEWAY_OVERLAYS, ids=lambda path: path.name)
def test_the_traffic_policy_and_the_trust_settings_agree(directory):
    service, workload, env = edge(directory)
    assert trust_problems(service, workload, env) == []


def test_enabled_injection_or_an_unskipped_port_is_refused():
    service, workload, env = edge(GATEWAY_OVERLAYS[0])
    admin = int(env["GATEWAY_ADMIN_PORT"])
    enabled = copy.deepcopy(workload)
    pod_annotations(enabled)["linkerd.io/inject"] = "enabled"
    assert [problem for problem in proxy_problems(service, enabled, admin) if "`ingress` mode" in problem]
    https_only = copy.deepcopy(workload)
    pod_annotations(https_only)["config.linkerd.io/skip-inbound-ports"] = env["GATEWAY_PORT"]
    assert proxy_problems(service, https_only, admin) == [
        f"client-facing port {env['GATEWAY_HTTP_REDIRECT_PORT']} is not in config.linkerd.io/skip-inbound-ports"
    ]
    admin_skipped = copy.deepcopy(workload)
    pod_annotations(admin_skipped)["config.linkerd.io/skip-inbound-ports"] = "8000-9999"
    assert [problem for problem in proxy_problems(service, admin_skipped, admin) if "admin port" in problem]
    outbound_skipped = copy.deepcopy(workload)
    pod_annotations(outbound_skipped)["config.linkerd.io/skip-outbound-ports"] = "80"
    assert [problem for problem in proxy_problems(service, outbound_skipped, admin) if "outbound" in problem]


def test_a_cluster_policy_with_trusted_cidrs_is_refused():
    service, workload, env = edge(GATEWAY_OVERLAYS[0])
    cluster = copy.deepcopy(service)
    cluster["spec"]["externalTrafficPolicy"] = "Cluster"
    problems = trust_problems(cluster, workload, {**env, "GATEWAY_TRUSTED_CIDRS": "10.0.0.0/8"})
    assert len(problems) == 2 and "trusts the whole internet" in problems[1]
    assert trust_problems(service, workload, {**env, "GATEWAY_TRUST_INCOMING_TRACE": "true"})


@pytest.mark.parametrize("directory", GATEWAY_OVERLAYS, ids=lambda path: path.name)
def test_no_service_links_reach_the_gateways_environment(directory):
    # Kubernetes would inject <SERVICE>_PORT=tcp://... for each Service in the namespace: for a Service named
    # `gateway`, variables that read as GATEWAY_* settings.
    _, workload, _ = edge(directory)
    assert workload["spec"]["template"]["spec"]["enableServiceLinks"] is False


@pytest.mark.parametrize("directory", GATEWAY_OVERLAYS, ids=lambda path: path.name)
def test_the_ingress_proxy_routes_by_the_upstreams_name(directory):
    _, workload, env = edge(directory)
    assert ingress_routing_problems(workload, env) == []
    assert ingress_routing_problems(workload, {**env, "GATEWAY_PRESERVE_HOST": "true"})

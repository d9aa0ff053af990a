"""What the rendered manifests imply at the edge: which client-facing ports an inbound Linkerd proxy could reach,
and whether the Service's traffic policy lets the gateway trust client addresses as its settings say it does.

Pure functions over rendered objects, so that tests/deploy/test_edge.py can show each rule fails on a broken
manifest as well as passes on deploy/'s.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
# Service types that take traffic from outside the cluster: their ports are client-facing.
EXTERNAL_SERVICE_TYPES = {"LoadBalancer", "NodePort"}


def _annotations(workload: Obj) -> dict[str, str]:
    annotations: dict[str, str] = workload["spec"]["template"]["metadata"].get("annotations", {})
    return annotations


def _container_port(workload: Obj, target: int | str) -> int:
    if isinstance(target, int):
        return target
    for item in workload["spec"]["template"]["spec"]["containers"]:
        for port in item.get("ports", []):
            if port.get("name") == target:
                return int(port["containerPort"])
    raise AssertionError(f"no container port named {target} in {workload['metadata']['name']}")


def _skipped(value: str) -> set[int]:
    ports: set[int] = set()
    for item in value.replace(" ", "").split(","):
        if not item:
            continue
        low, _, high = item.partition("-")
        ports.update(range(int(low), int(high or low) + 1))
    return ports


def client_facing_ports(service: Obj, workload: Obj) -> set[int]:
    """The container ports behind an externally reachable Service."""
    if service["spec"].get("type", "ClusterIP") not in EXTERNAL_SERVICE_TYPES:
        return set()
    return {_container_port(workload, item.get("targetPort", item["port"])) for item in service["spec"]["ports"]}


def proxy_problems(service: Obj, workload: Obj, admin_port: int) -> list[str]:
    """Why a client-facing port could reach Linkerd's inbound proxy, or outbound calls could skip it."""
    annotations = _annotations(workload)
    problems = []
    mode = annotations.get("linkerd.io/inject")
    if mode != "ingress":
        problems.append(f"linkerd.io/inject is {mode!r}: an ingress is injected in `ingress` mode")
    skipped = _skipped(annotations.get("config.linkerd.io/skip-inbound-ports", ""))
    for port in sorted(client_facing_ports(service, workload) - skipped):
        problems.append(f"client-facing port {port} is not in config.linkerd.io/skip-inbound-ports")
    if admin_port in skipped:
        problems.append(f"the admin port {admin_port} skips the proxy: Prometheus would scrape it without mTLS")
    if annotations.get("config.linkerd.io/skip-outbound-ports") or annotations.get(
        "config.linkerd.io/skip-outbound-ips"
    ):
        problems.append("outbound traffic skips the proxy: calls into the mesh lose mTLS, retries and profiles")
    return problems


def trust_problems(service: Obj, workload: Obj, env: dict[str, str]) -> list[str]:
    """Where the Service's traffic policy and the gateway's trust settings contradict each other."""
    if service["spec"].get("type", "ClusterIP") not in EXTERNAL_SERVICE_TYPES:
        return []
    problems = []
    policy = service["spec"].get("externalTrafficPolicy", "Cluster")
    cidrs = [item for item in env.get("GATEWAY_TRUSTED_CIDRS", "").split(",") if item.strip()]
    if policy != "Local":
        problems.append(
            f"externalTrafficPolicy {policy}: nodes source-NAT clients, so X-Forwarded-For records a node's address"
        )
        if cidrs:
            problems.append(
                f"GATEWAY_TRUSTED_CIDRS={','.join(cidrs)} with externalTrafficPolicy {policy}: every client arrives"
                " from a node's address, and a rule covering the nodes trusts the whole internet"
            )
    if env.get("GATEWAY_TRUST_INCOMING_TRACE", "false").lower() in ("true", "1", "yes", "on"):
        problems.append("GATEWAY_TRUST_INCOMING_TRACE=true on an internet-facing Service: any client forces sampling")
    return problems


def ingress_routing_problems(workload: Obj, env: dict[str, str]) -> list[str]:
    """In `ingress` mode the proxy routes each outbound request by its Host (the gateway sets no l5d-dst-override):
    the Host must be the upstream Service's name, not the client's."""
    if _annotations(workload).get("linkerd.io/inject") != "ingress":
        return []
    if env.get("GATEWAY_PRESERVE_HOST", "false").lower() in ("true", "1", "yes", "on"):
        return [
            "GATEWAY_PRESERVE_HOST=true in ingress mode: the proxy would route by the client's Host, not the route's"
        ]
    return []

"""deploy/ as the tests see it: each kustomization rendered, the objects in it, and the Dockerfiles parsed."""

from __future__ import annotations

import copy
import functools
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.deploy.kustomize import pod_spec, render
from tests.support import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
EMOJIVOTO = KUBERNETES / "overlays" / "emojivoto"
# emojivoto for Linkerd versions with the OpenCensus annotations (deploy/README.md, "Linkerd versions").
OPENCENSUS = KUBERNETES / "overlays" / "linkerd-opencensus"
TLS = KUBERNETES / "tls"
MONITORING = KUBERNETES / "monitoring"
COLLECTOR = DEPLOY / "collector"
LOCUST = DEPLOY / "locust"
# Every kustomization in deploy/, by the name the tests give it.
KUSTOMIZATIONS = {
    "base": BASE,
    "emojivoto": EMOJIVOTO,
    "linkerd-opencensus": OPENCENSUS,
    "tls": TLS,
    "monitoring": MONITORING,
    "collector": COLLECTOR,
    "locust": LOCUST,
}
# What deploy/README.md applies to one cluster, side by side (base is what the overlay builds on, not applied too).
APPLIED_TOGETHER = (EMOJIVOTO, TLS, MONITORING, COLLECTOR, LOCUST)
# The overlays that put the gateway in front of emojivoto, one per Linkerd tracing generation: one of them is applied.
GATEWAY_OVERLAYS = (EMOJIVOTO, OPENCENSUS)
GATEWAY_DOCKERFILE = DEPLOY / "Dockerfile"
LOCUST_DOCKERFILE = LOCUST / "Dockerfile"

Obj = dict[str, Any]


@functools.cache
def _rendered(directory: Path) -> tuple[Obj, ...]:
    return tuple(render(directory))


def rendered(directory: Path) -> list[Obj]:
    """`kustomize build DIRECTORY`, a fresh copy each time: tests may not change each other's view."""
    return copy.deepcopy(list(_rendered(directory)))


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def only(objects: list[Obj], kind: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(workload: Obj, name: str | None = None) -> Obj:
    spec = pod_spec(workload)
    assert spec is not None, f"{workload['kind']} {workload['metadata']['name']} runs no pods"
    containers = spec["containers"]
    found = [item for item in containers if name is None or item["name"] == name]
    assert len(found) == 1, f"expected one container {name or ''} in {workload['metadata']['name']}"
    result: Obj = found[0]
    return result


def referenced_configmap(objects: list[Obj], workload: Obj, name: str) -> Obj:
    """The ConfigMap a workload's volume or envFrom names, through its generated (hash-suffixed) name."""
    namespace = workload["metadata"].get("namespace")
    configmaps = [
        obj
        for obj in objects
        if obj["kind"] == "ConfigMap"
        and obj["metadata"].get("namespace") == namespace
        and obj["metadata"]["name"] == name
    ]
    assert len(configmaps) == 1, f"{workload['metadata']['name']} refers to ConfigMap {name}, which is not rendered"
    return configmaps[0]


def environment(objects: list[Obj], workload: Obj, container_name: str | None = None) -> dict[str, str]:
    """The environment a container starts with: its envFrom ConfigMaps in order, then its own `env`."""
    item = container(workload, container_name)
    values: dict[str, str] = {}
    for source in item.get("envFrom", []):
        values.update(referenced_configmap(objects, workload, source["configMapRef"]["name"])["data"])
    values.update({variable["name"]: variable["value"] for variable in item.get("env", []) if "value" in variable})
    return values


def mounted_file(objects: list[Obj], workload: Obj, path: str, container_name: str | None = None) -> str:
    """The content a container sees at `path`, when a ConfigMap volume provides it."""
    item = container(workload, container_name)
    spec = pod_spec(workload)
    assert spec is not None
    directory, file_name = path.rsplit("/", 1)
    [mount] = [mount for mount in item["volumeMounts"] if mount["mountPath"] == directory]
    [volume] = [volume for volume in spec["volumes"] if volume["name"] == mount["name"]]
    return str(referenced_configmap(objects, workload, volume["configMap"]["name"])["data"][file_name])


def port_number(workload: Obj, port: int | str, container_name: str | None = None) -> int:
    """A container port given by number or by name, as probes and Services give it."""
    if isinstance(port, int):
        return port
    found = [item["containerPort"] for item in container(workload, container_name)["ports"] if item["name"] == port]
    assert len(found) == 1, f"no container port named {port}"
    return int(found[0])


def service_target(objects: list[Obj], service: Obj, port: int) -> tuple[Obj, int]:
    """The workload and container port behind a Service's port."""
    found = [item for item in service["spec"]["ports"] if item["port"] == port]
    assert len(found) == 1, f"Service {service['metadata']['name']} has no port {port}"
    [service_port] = found
    selector = service["spec"]["selector"]
    workloads = [
        obj
        for obj in objects
        if pod_spec(obj) is not None
        and obj["metadata"].get("namespace") == service["metadata"]["namespace"]
        and selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(workloads) == 1, f"Service {service['metadata']['name']} selects {len(workloads)} workloads"
    return workloads[0], port_number(workloads[0], service_port.get("targetPort", port))


def cluster() -> list[Obj]:
    """Every object of the kustomizations applied together."""
    return [obj for directory in APPLIED_TOGETHER for obj in rendered(directory)]


def resolve(authority_host: str, port: int) -> tuple[Obj, Obj, int]:
    """`service.namespace[.svc.cluster.local]` and a port -> the Service, the workload behind it, its container port,
    among the objects applied together."""
    service_name, namespace, *rest = authority_host.split(".")
    assert rest in ([], ["svc", "cluster", "local"]), f"{authority_host} is not a Service's DNS name"
    found = [
        (objects, obj)
        for objects in map(rendered, APPLIED_TOGETHER)
        for obj in objects
        if obj["kind"] == "Service"
        and (obj["metadata"]["name"], obj["metadata"]["namespace"]) == (service_name, namespace)
    ]
    assert len(found) == 1, f"no Service {namespace}/{service_name} in deploy/"
    [(objects, service)] = found
    workload, container_port = service_target(objects, service, port)
    return service, workload, container_port


def gateway_env(objects: list[Obj]) -> dict[str, str]:
    """The gateway container's environment in a rendering of the gateway's base or an overlay."""
    return environment(objects, one(objects, "Deployment", "ingress-gateway"), "ingress-gateway")


def yaml_files(directory: Path) -> Iterator[Path]:
    yield from sorted(path for path in directory.rglob("*") if path.suffix in (".yaml", ".yml"))


# --- Dockerfiles ----------------------------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, instruction: str) -> list[str]:
        return [argument for name, argument in self.instructions if name == instruction]


@dataclass
class Dockerfile:
    path: Path
    stages: list[Stage]

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        stages: list[Stage] = []
        global_arguments: dict[str, str] = {}
        for instruction, argument in _instructions(path.read_text()):
            if instruction == "ARG" and not stages:
                # An ARG before the first FROM may name the base images; its default is what a plain build uses.
                key, _, default = argument.partition("=")
                global_arguments[key.strip()] = default.strip()
            elif instruction == "FROM":
                words = argument.split()
                name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
                base = words[0]
                for key, default in global_arguments.items():
                    base = base.replace("${" + key + "}", default).replace("$" + key, default)
                stages.append(Stage(base, name))
            else:
                assert stages, f"{path}: {instruction} before FROM"
                stages[-1].instructions.append((instruction, argument))
        return cls(path, stages)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def exec_form(self, instruction: str) -> list[str]:
        [argument] = self.final.arguments(instruction)
        value = json.loads(argument)
        assert isinstance(value, list), f"{instruction} must be in exec form (a JSON list)"
        return [str(item) for item in value]

    def user(self) -> tuple[int, int]:
        [user] = self.final.arguments("USER")
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and gid.isdigit(), "a numeric USER uid:gid lets Kubernetes' runAsNonRoot check it"
        return int(uid), int(gid)

    def exposed(self) -> set[int]:
        return {int(port.split("/")[0]) for argument in self.final.arguments("EXPOSE") for port in argument.split()}

    def copy_sources(self) -> list[str]:
        """What every stage copies from the build context (COPY --from copies from a stage, not the context)."""
        sources = []
        for stage in self.stages:
            for argument in stage.arguments("COPY"):
                words = shlex.split(argument)
                if any(word.startswith("--from=") for word in words):
                    continue
                *paths, _ = [word for word in words if not word.startswith("--")]
                sources.extend(paths)
        return sources


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            # A comment inside a continued instruction is dropped, as Docker does.
            continue
        logical += " " + stripped.removesuffix("\\") if logical else stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            instruction, _, argument = logical.strip().partition(" ")
            yield instruction.upper(), argument.strip()
            logical = ""

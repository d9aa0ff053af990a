"""Every manifest of deploy/, file by file and as each kustomization renders it, is valid for the Kubernetes API.

Offline, against the OpenAPI schemas kubernetes-validate ships for each Kubernetes release, in strict mode: a
misspelled or misplaced field fails as the API server's strict field validation would reject it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.deploy.locust_configmap import loadtest_configmap
from tests.deploy.manifests import DEPLOY, EMOJIVOTO, KUSTOMIZATIONS, Obj, cluster, one, rendered, yaml_files

# The oldest release the manifests are written for (autoscaling/v2's ContainerResource metric and the
# PodDisruptionBudget's unhealthyPodEvictionPolicy are stable from 1.30 and 1.31), and the newest one whose
# schemas the pinned kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
SCHEMAS = Path(__file__).with_name("schemas")
# Custom resources: the API server knows them from their CRD, kubernetes-validate does not. Their schemas are
# vendored (see the file's $comment for where each comes from).
CUSTOM_RESOURCE_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-monitoring.coreos.com-v1.json",
    ("cert-manager.io/v1", "Certificate"): SCHEMAS / "certificate-cert-manager.io-v1.json",
}


def validate(obj: Obj, version: str) -> None:
    schema_path = CUSTOM_RESOURCE_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if schema_path is not None:
        jsonschema.Draft202012Validator(json.loads(schema_path.read_text())).validate(obj)
        return
    kubernetes_validate.validate(obj, version, strict=True)


def manifest_documents(path: Path) -> list[Obj]:
    """The Kubernetes objects of a YAML file; route tables, collector configs and kustomizations are not."""
    documents = [document for document in yaml.safe_load_all(path.read_text()) if isinstance(document, dict)]
    return [
        document
        for document in documents
        if {"apiVersion", "kind"} <= document.keys() and document["kind"] not in ("Kustomization", "Component")
    ]


def describe(obj: Obj) -> str:
    return f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


MANIFEST_FILES = [path for path in yaml_files(DEPLOY) if manifest_documents(path)]


def test_the_validator_rejects_what_the_api_server_would():
    deployment = one(rendered(EMOJIVOTO), "Deployment", "ingress-gateway")
    validate(deployment, KUBERNETES_VERSIONS[0])
    misspelled = copy.deepcopy(deployment)
    misspelled["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(jsonschema.ValidationError, match="paht"):
        validate(misspelled, KUBERNETES_VERSIONS[0])
    mistyped = copy.deepcopy(deployment)
    mistyped["spec"]["replicas"] = "2"
    with pytest.raises(jsonschema.ValidationError):
        validate(mistyped, KUBERNETES_VERSIONS[0])


def test_the_vendored_servicemonitor_schema_rejects_unknown_fields():
    monitor = one(rendered(KUSTOMIZATIONS["monitoring"]), "ServiceMonitor", "ingress-gateway")
    validate(monitor, KUBERNETES_VERSIONS[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate(monitor, KUBERNETES_VERSIONS[0])


def test_every_yaml_file_with_kubernetes_objects_is_found():
    # Guards the file list below: each kustomization's resources are among the files validated one by one.
    names = {path.relative_to(DEPLOY).as_posix() for path in MANIFEST_FILES}
    assert {"kubernetes/base/deployment.yaml", "collector/otel-collector.yaml", "locust/master.yaml"} <= names


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda path: path.relative_to(DEPLOY).as_posix())
def test_every_manifest_file_is_valid(path, version):
    for document in manifest_documents(path):
        try:
            validate(document, version)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{path.relative_to(DEPLOY)}: {describe(document)}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_rendered_kustomization_is_valid(name, version):
    objects = rendered(KUSTOMIZATIONS[name])
    assert objects, f"{name} renders nothing"
    for obj in objects:
        try:
            validate(obj, version)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{name}: {describe(obj)}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_loadtest_configmap_is_valid(version):
    validate(loadtest_configmap(), version)


def test_every_namespaced_object_names_a_namespace_that_deploy_creates():
    # kubectl would otherwise put it in whatever namespace the user's context has.
    everything = cluster()
    namespaces = {obj["metadata"]["name"] for obj in everything if obj["kind"] == "Namespace"}
    for obj in everything:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") in namespaces, describe(obj)

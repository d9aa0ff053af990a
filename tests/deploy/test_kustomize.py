"""The test renderer does what kustomize does with each field deploy/ uses, and refuses what it does not implement."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize import KustomizeError, configmap_hash, render

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: demo
spec:
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      containers:
        - name: app
          image: registry.example.com/team/app:1.0
          args: ["--serve"]
          envFrom:
            - configMapRef: {name: app-env}
          env:
            - name: MODE
              valueFrom:
                configMapKeyRef: {name: app-env, key: MODE}
          ports:
            - {name: http, containerPort: 8080}
          volumeMounts:
            - {name: config, mountPath: /etc/app}
      volumes:
        - name: config
          configMap: {name: app-files}
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: app
  namespace: demo
spec:
  selector: {app: app}
  ports:
    - {name: http, port: 80, targetPort: http}
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return directory


def kustomization(**fields: Any) -> str:
    return yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields})


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def deployment_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = by_kind(objects, "Deployment")
    return deployment


# --- the hash -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "suffix"),
    [
        # The examples of the Kubernetes documentation, "Declarative Management of Kubernetes Objects Using
        # Kustomize", as `kubectl kustomize` prints them.
        ("example-configmap-1", {"application.properties": "FOO=Bar\n"}, "8mbdf7882g"),
        ("example-configmap-2", {"FOO": "Bar"}, "g2hdhfc6tk"),
    ],
)
def test_configmap_hash_is_kustomizes(name, data, suffix):
    assert configmap_hash({"metadata": {"name": name}, "data": data}) == suffix


def test_configmap_hash_follows_the_content():
    first = configmap_hash({"metadata": {"name": "a"}, "data": {"K": "1"}})
    assert configmap_hash({"metadata": {"name": "a"}, "data": {"K": "2"}}) != first
    assert configmap_hash({"metadata": {"name": "b"}, "data": {"K": "1"}}) != first


# --- resources ------------------------------------------------------------------------------------------------------


def test_resources_come_from_files_and_nested_kustomizations_in_order(tmp_path):
    write(
        tmp_path,
        {
            "base/kustomization.yaml": kustomization(resources=["deployment.yaml"]),
            "base/deployment.yaml": DEPLOYMENT,
            "overlay/kustomization.yaml": kustomization(resources=["../base", "more.yaml"]),
            "overlay/more.yaml": SERVICE
            + "---\n"
            + SERVICE.replace("name: app\n  namespace", "name: two\n  namespace"),
        },
    )
    objects = render(tmp_path / "overlay")
    assert [(obj["kind"], obj["metadata"]["name"]) for obj in objects] == [
        ("Deployment", "app"),
        ("Service", "app"),
        ("Service", "two"),
    ]


def test_a_file_outside_the_kustomization_is_refused_as_kustomize_does(tmp_path):
    write(
        tmp_path,
        {
            "shared.yaml": SERVICE,
            "app/kustomization.yaml": kustomization(resources=["../shared.yaml"]),
        },
    )
    with pytest.raises(KustomizeError, match="load restrictor"):
        render(tmp_path / "app")


def test_the_same_object_twice_is_refused(tmp_path):
    write(tmp_path, {"kustomization.yaml": kustomization(resources=["a.yaml", "b.yaml"]), "a.yaml": SERVICE})
    (tmp_path / "b.yaml").write_text(SERVICE)
    with pytest.raises(KustomizeError, match="appears twice"):
        render(tmp_path)


@pytest.mark.parametrize(
    "fields",
    [
        {"namespace": "other"},
        {"commonLabels": {"a": "b"}},
        {"secretGenerator": [{"name": "s", "literals": ["a=b"]}]},
        {"labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]},
        {"patches": [{"patch": "- op: move\n  from: /spec\n  path: /x", "target": {"kind": "Service"}}]},
    ],
)
def test_what_it_does_not_implement_fails_the_render(tmp_path, fields):
    write(
        tmp_path, {"kustomization.yaml": kustomization(resources=["service.yaml"], **fields), "service.yaml": SERVICE}
    )
    with pytest.raises(KustomizeError, match="not implemented"):
        render(tmp_path)


# --- configMapGenerator ---------------------------------------------------------------------------------------------


def test_generated_configmaps_get_a_hash_and_every_reference_follows(tmp_path):
    write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(
                resources=["deployment.yaml"],
                configMapGenerator=[
                    {"name": "app-env", "namespace": "demo", "envs": ["app.env"], "literals": ["EXTRA='quoted'"]},
                    {"name": "app-files", "namespace": "demo", "files": ["settings.yaml", "renamed.txt=other.txt"]},
                ],
            ),
            "deployment.yaml": DEPLOYMENT,
            "app.env": "# a comment\nMODE=fast\n  PATH_LIKE=/a=b\n\n",
            "settings.yaml": "key: value\n",
            "other.txt": "text\n",
        },
    )
    objects = render(tmp_path)
    env, files = by_kind(objects, "ConfigMap")
    assert env["data"] == {"MODE": "fast", "PATH_LIKE": "/a=b", "EXTRA": "quoted"}
    assert files["data"] == {"settings.yaml": "key: value\n", "renamed.txt": "text\n"}
    assert (
        env["metadata"]["name"] == f"app-env-{configmap_hash({'metadata': {'name': 'app-env'}, 'data': env['data']})}"
    )
    spec = deployment_of(objects)["spec"]["template"]["spec"]
    [app] = spec["containers"]
    assert app["envFrom"][0]["configMapRef"]["name"] == env["metadata"]["name"]
    assert app["env"][0]["valueFrom"]["configMapKeyRef"]["name"] == env["metadata"]["name"]
    assert spec["volumes"][0]["configMap"]["name"] == files["metadata"]["name"]


def test_an_overlay_merges_into_or_replaces_a_generated_configmap(tmp_path):
    write(
        tmp_path,
        {
            "base/kustomization.yaml": kustomization(
                resources=["deployment.yaml"],
                configMapGenerator=[
                    {"name": "app-env", "namespace": "demo", "literals": ["A=1", "B=2"]},
                    {"name": "app-files", "namespace": "demo", "literals": ["old=1"]},
                ],
            ),
            "base/deployment.yaml": DEPLOYMENT,
            "overlay/kustomization.yaml": kustomization(
                resources=["../base"],
                configMapGenerator=[
                    {"name": "app-env", "namespace": "demo", "behavior": "merge", "literals": ["B=3", "C=4"]},
                    {"name": "app-files", "namespace": "demo", "behavior": "replace", "literals": ["new=1"]},
                ],
            ),
        },
    )
    base_env = by_kind(render(tmp_path / "base"), "ConfigMap")[0]
    env, files = by_kind(render(tmp_path / "overlay"), "ConfigMap")
    assert env["data"] == {"A": "1", "B": "3", "C": "4"}
    assert files["data"] == {"new": "1"}
    # New content, new name: the pods roll.
    assert env["metadata"]["name"] != base_env["metadata"]["name"]


def test_merging_into_a_configmap_no_base_generates_fails(tmp_path):
    write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(
                configMapGenerator=[{"name": "absent", "namespace": "demo", "behavior": "merge", "literals": ["A=1"]}]
            )
        },
    )
    with pytest.raises(KustomizeError, match="no base generates it"):
        render(tmp_path)


def test_an_env_line_without_a_value_is_refused(tmp_path):
    write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(configMapGenerator=[{"name": "e", "envs": ["bad.env"]}]),
            "bad.env": "FROM_THE_ENVIRONMENT\n",
        },
    )
    with pytest.raises(KustomizeError, match="would come from the environment"):
        render(tmp_path)


def test_disabled_name_suffix_keeps_the_name(tmp_path):
    write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(
                generatorOptions={"disableNameSuffixHash": True},
                configMapGenerator=[{"name": "plain", "literals": ["A=1"]}],
            )
        },
    )
    [configmap] = render(tmp_path)
    assert configmap["metadata"] == {"name": "plain"}


# --- patches --------------------------------------------------------------------------------------------------------


def test_strategic_merge_patch_merges_lists_by_their_key_and_replaces_the_others(tmp_path):
    patch = """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: app
          namespace: demo
        spec:
          replicas: 3
          template:
            spec:
              containers:
                - name: app
                  args: ["--other"]
                  ports:
                    - {containerPort: 8080, protocol: TCP}
                    - {name: admin, containerPort: 9901}
                - name: sidecar
                  image: sidecar:1
        """
    write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(resources=["deployment.yaml"], patches=[{"path": "patch.yaml"}]),
            "deployment.yaml": DEPLOYMENT,
            "patch.yaml": patch,
        },
    )
    deployment = deployment_of(render(tmp_path))
    assert deployment["spec"]["replicas"] == 3
    app, sidecar = deployment["spec"]["template"]["spec"]["containers"]
    assert app["args"] == ["--other"]
    assert app["image"] == "registry.example.com/team/app:1.0"
    assert app["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "admin", "containerPort": 9901},
    ]
    assert sidecar == {"name": "sidecar", "image": "sidecar:1"}


def test_a_null_in_a_strategic_merge_patch_deletes_the_field(tmp_path):
    patch = "apiVersion: v1\nkind: Service\nmetadata: {name: app, namespace: demo}\nspec: {selector: null}\n"
    write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(resources=["service.yaml"], patches=[{"patch": patch}]),
            "service.yaml": SERVICE,
        },
    )
    [service] = render(tmp_path)
    assert "selector" not in service["spec"]


def test_json6902_patch_applies_to_its_target(tmp_path):
    operations = """\
        - op: replace
          path: /spec/ports/0/port
          value: 8000
        - op: add
          path: /metadata/annotations
          value: {team: edge}
        - op: test
          path: /spec/type
          value: ClusterIP
        """
    service = SERVICE.replace("spec:\n", "spec:\n  type: ClusterIP\n")
    write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(
                resources=["service.yaml"],
                patches=[{"path": "ops.yaml", "target": {"kind": "Service", "name": "ap+"}}],
            ),
            "service.yaml": service,
            "ops.yaml": operations,
        },
    )
    [rendered] = render(tmp_path)
    assert rendered["spec"]["ports"][0]["port"] == 8000
    assert rendered["metadata"]["annotations"] == {"team": "edge"}


def test_a_patch_that_matches_nothing_fails(tmp_path):
    patch = "apiVersion: v1\nkind: Service\nmetadata: {name: absent}\nspec: {type: NodePort}\n"
    write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(resources=["service.yaml"], patches=[{"patch": patch}]),
            "service.yaml": SERVICE,
        },
    )
    with pytest.raises(KustomizeError, match="matches no resource"):
        render(tmp_path)


# --- labels and images ----------------------------------------------------------------------------------------------


def test_labels_go_on_every_object_and_on_templates_only_when_asked(tmp_path):
    write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(
                resources=["deployment.yaml", "service.yaml"],
                labels=[{"pairs": {"team": "edge"}}, {"pairs": {"tier": "front"}, "includeTemplates": True}],
            ),
            "deployment.yaml": DEPLOYMENT,
            "service.yaml": SERVICE,
        },
    )
    deployment, service = render(tmp_path)
    assert deployment["metadata"]["labels"] == service["metadata"]["labels"] == {"team": "edge", "tier": "front"}
    assert deployment["spec"]["template"]["metadata"]["labels"] == {"app": "app", "tier": "front"}
    # Selectors are left alone: a changed selector cannot be applied to an existing Deployment.
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "app"}
    assert service["spec"]["selector"] == {"app": "app"}


@pytest.mark.parametrize(
    ("entry", "image"),
    [
        ({"newTag": "2.0"}, "registry.example.com/team/app:2.0"),
        ({"newName": "mirror.example.com/app"}, "mirror.example.com/app:1.0"),
        ({"digest": "sha256:" + "a" * 64}, "registry.example.com/team/app@sha256:" + "a" * 64),
    ],
)
def test_images_rewrite_the_matching_containers(tmp_path, entry, image):
    write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(
                resources=["deployment.yaml"],
                images=[{"name": "registry.example.com/team/app", **entry}, {"name": "unrelated", "newTag": "9"}],
            ),
            "deployment.yaml": DEPLOYMENT,
        },
    )
    [app] = deployment_of(render(tmp_path))["spec"]["template"]["spec"]["containers"]
    assert app["image"] == image


@pytest.mark.parametrize(
    ("base_hash", "overlay_hash", "hashed"), [(False, False, False), (False, True, True), (True, False, True)]
)
def test_a_replaced_configmap_stays_unhashed_only_when_both_generators_say_so(
    tmp_path, base_hash, overlay_hash, hashed
):
    def generator(disabled: bool, **fields: Any) -> dict[str, Any]:
        return {"name": "routes", "namespace": "demo", "options": {"disableNameSuffixHash": disabled}, **fields}

    write(
        tmp_path,
        {
            "base/kustomization.yaml": kustomization(configMapGenerator=[generator(not base_hash, literals=["a=1"])]),
            "overlay/kustomization.yaml": kustomization(
                resources=["../base"],
                configMapGenerator=[generator(not overlay_hash, behavior="replace", literals=["b=2"])],
            ),
        },
    )
    [configmap] = render(tmp_path / "overlay")
    assert (configmap["metadata"]["name"] != "routes") is hashed
    assert configmap["data"] == {"b": "2"}

"""A small kustomize, so that the tests render deploy/'s kustomizations offline, without the kustomize binary.

It implements the part of kustomize (https://kubectl.docs.kubernetes.io/references/kustomize/kustomization/) that
deploy/ uses, with kustomize's semantics, and refuses everything else by name: a field it does not know fails the
render instead of being skipped, so a test never passes over a kustomization it did not really build.

- `resources`: YAML files (several documents each) and directories holding a kustomization, recursively. Files
  and generator inputs must lie in or below the kustomization's directory, as kustomize's default load restrictor
  demands (`kubectl apply -k` has no way to lift it).
- `configMapGenerator` (`files`, `envs`, `literals`; `behavior` create, merge or replace) and `generatorOptions`
  (`disableNameSuffixHash`): a generated ConfigMap's name gets kustomize's content hash, and the references to it
  in pod specs follow.
- `patches`: strategic merge patches (lists merged by their Kubernetes merge key) and JSON 6902 patches, from a
  file or inline, aimed by their own kind and name or by a `target`.
- `labels` (`pairs`, `includeTemplates`) and `images` (`newName`, `newTag`, `digest`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_API_VERSION = "kustomize.config.k8s.io/v1beta1"
KUSTOMIZATION_FILE_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")

_FIELDS = {"apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions", "patches", "labels", "images"}
_GENERATOR_FIELDS = {"name", "namespace", "behavior", "files", "envs", "literals", "options"}
_GENERATOR_OPTIONS = {"disableNameSuffixHash"}
_PATCH_FIELDS = {"path", "patch", "target"}
_TARGET_FIELDS = {"group", "version", "kind", "name", "namespace"}
_LABEL_FIELDS = {"pairs", "includeSelectors", "includeTemplates"}
_IMAGE_FIELDS = {"name", "newName", "newTag", "digest"}
_WORKLOADS_WITH_TEMPLATE = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# Lists that a strategic merge patch merges item by item, by this key, instead of replacing them: the
# `patchMergeKey`s of the Kubernetes API for the fields deploy/ has (k8s.io/api/core/v1/types.go).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
}


class KustomizeError(Exception):
    """The kustomization cannot be built, or uses what this renderer does not implement."""


@dataclass
class _Resource:
    obj: dict[str, Any]
    # A configMapGenerator's ConfigMap: its name gets the content hash once the whole build is done.
    generated: bool = False
    hashed: bool = True

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        namespace = self.obj["metadata"].get("namespace")
        return None if namespace is None else str(namespace)


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kustomize build DIRECTORY` prints (in the order loaded; kustomize sorts them by kind)."""
    resources = _build(directory.resolve(), ())
    _name_generated_configmaps(resources)
    return [resource.obj for resource in resources]


def kustomization_file(directory: Path) -> Path:
    found = [directory / name for name in KUSTOMIZATION_FILE_NAMES if (directory / name).is_file()]
    if len(found) != 1:
        raise KustomizeError(f"{directory}: expected one of {', '.join(KUSTOMIZATION_FILE_NAMES)}, found {found}")
    return found[0]


def configmap_hash(configmap: dict[str, Any]) -> str:
    """kustomize's name suffix for a generated ConfigMap (sigs.k8s.io/kustomize/api/hasher)."""
    encoded = {"kind": "ConfigMap", "name": configmap["metadata"]["name"], "data": configmap.get("data", {})}
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Go's encoding/json escapes these; the hash is over its bytes.
    for char in "&<>\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return digest[:10].translate(str.maketrans("013ae", "ghkmt"))


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec a workload object runs, or None for objects that run no pods."""
    kind = obj.get("kind")
    spec: Any
    if kind in _WORKLOADS_WITH_TEMPLATE:
        spec = obj.get("spec", {}).get("template", {}).get("spec")
    elif kind == "CronJob":
        spec = obj.get("spec", {}).get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    elif kind == "Pod":
        spec = obj.get("spec")
    else:
        spec = None
    return spec if isinstance(spec, dict) else None


# --- one kustomization ----------------------------------------------------------------------------------------------


def _build(directory: Path, parents: tuple[Path, ...]) -> list[_Resource]:
    if directory in parents:
        raise KustomizeError(f"{directory}: a kustomization that includes itself")
    path = kustomization_file(directory)
    kustomization = yaml.safe_load(path.read_text())
    if not isinstance(kustomization, dict):
        raise KustomizeError(f"{path}: not a mapping")
    _only(kustomization, _FIELDS, str(path))
    if kustomization.get("apiVersion") != KUSTOMIZATION_API_VERSION or kustomization.get("kind") != "Kustomization":
        raise KustomizeError(f"{path}: expected apiVersion {KUSTOMIZATION_API_VERSION} and kind Kustomization")

    resources: list[_Resource] = []
    for entry in kustomization.get("resources", []):
        resources.extend(_load_resource(directory, str(entry), (*parents, directory)))
    options = kustomization.get("generatorOptions", {})
    _only(options, _GENERATOR_OPTIONS, f"{path}: generatorOptions")
    for generator in kustomization.get("configMapGenerator", []):
        _generate_configmap(directory, generator, bool(options.get("disableNameSuffixHash", False)), resources)
    for patch in kustomization.get("patches", []):
        _apply_patch(directory, patch, resources)
    for labels in kustomization.get("labels", []):
        _apply_labels(labels, resources, str(path))
    for image in kustomization.get("images", []):
        _apply_image(image, resources, str(path))
    _check_unique(resources, str(path))
    return resources


def _load_resource(directory: Path, entry: str, parents: tuple[Path, ...]) -> list[_Resource]:
    if "://" in entry or entry.startswith(("git@", "github.com/")):
        raise KustomizeError(f"{directory}: remote resource {entry!r} is not supported offline")
    target = (directory / entry).resolve()
    if target.is_dir():
        return _build(target, parents)
    _check_within(directory, target, "resource")
    objects = []
    for document in yaml.safe_load_all(target.read_text()):
        if document is None:
            continue
        if not isinstance(document, dict) or not {"apiVersion", "kind", "metadata"} <= document.keys():
            raise KustomizeError(f"{target}: a document without apiVersion, kind and metadata")
        if "name" not in document["metadata"]:
            raise KustomizeError(f"{target}: a {document['kind']} without metadata.name")
        objects.append(_Resource(document))
    return objects


def _check_within(directory: Path, target: Path, what: str) -> None:
    if not target.is_relative_to(directory):
        raise KustomizeError(f"{what} {target} is not in or below {directory}: kustomize's load restrictor refuses it")
    if not target.is_file():
        raise KustomizeError(f"{what} {target}: no such file")


def _check_unique(resources: list[_Resource], where: str) -> None:
    seen: set[tuple[str, str | None, str]] = set()
    for resource in resources:
        key = (resource.kind, resource.namespace, resource.name)
        if key in seen:
            raise KustomizeError(f"{where}: {resource.kind} {resource.namespace}/{resource.name} appears twice")
        seen.add(key)


def _only(mapping: Any, allowed: set[str], where: str) -> None:
    if not isinstance(mapping, dict):
        raise KustomizeError(f"{where}: expected a mapping, got {mapping!r}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise KustomizeError(f"{where}: {', '.join(unknown)} not implemented by this renderer")


# --- configMapGenerator ---------------------------------------------------------------------------------------------


def _generate_configmap(directory: Path, generator: Any, no_hash: bool, resources: list[_Resource]) -> None:
    _only(generator, _GENERATOR_FIELDS, f"{directory}: configMapGenerator")
    name = generator.get("name")
    if not name:
        raise KustomizeError(f"{directory}: a configMapGenerator without a name")
    where = f"{directory}: configMapGenerator {name}"
    options = generator.get("options", {})
    _only(options, _GENERATOR_OPTIONS, f"{where}: options")
    data: dict[str, str] = {}
    for literal in generator.get("literals", []):
        key, value = _key_value(str(literal), where)
        _put(data, key, _unquote(value), where)
    for env_file in generator.get("envs", []):
        path = (directory / env_file).resolve()
        _check_within(directory, path, "env file")
        for key, value in _env_file(path):
            _put(data, key, value, where)
    for source in generator.get("files", []):
        key, sep, file_name = str(source).partition("=")
        path = (directory / (file_name if sep else key)).resolve()
        _check_within(directory, path, "file")
        _put(data, key if sep else path.name, path.read_text(), where)

    namespace = generator.get("namespace")
    behavior = generator.get("behavior", "create")
    existing = [
        resource
        for resource in resources
        if resource.generated and (resource.kind, resource.name, resource.namespace) == ("ConfigMap", name, namespace)
    ]
    hashed = not (no_hash or options.get("disableNameSuffixHash", False))
    if behavior == "create":
        if existing:
            raise KustomizeError(f"{where}: already generated by a base; use behavior merge or replace")
        metadata: dict[str, Any] = {"name": name} | ({"namespace": namespace} if namespace is not None else {})
        configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
        resources.append(_Resource(configmap, generated=True, hashed=hashed))
    elif behavior in ("merge", "replace"):
        if not existing:
            raise KustomizeError(f"{where}: behavior {behavior}, but no base generates it (namespace {namespace})")
        [resource] = existing
        resource.obj["data"] = (resource.obj.get("data", {}) | data) if behavior == "merge" else data
        # kustomize unites the two generators' annotations, its "needs a hash" mark among them: the name stays
        # plain only when neither generator wants a hash.
        resource.hashed = resource.hashed or hashed
    else:
        raise KustomizeError(f"{where}: unknown behavior {behavior!r}")


def _key_value(text: str, where: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise KustomizeError(f"{where}: {text!r} is not KEY=VALUE")
    return key, value


def _unquote(value: str) -> str:
    # kustomize drops one pair of matching quotes around a literal's value (and only a literal's).
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _env_file(path: Path) -> Iterator[tuple[str, str]]:
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            # kustomize would read the value from its own environment: a build that depends on the machine.
            raise KustomizeError(f"{path}:{number}: {line!r} has no '=': its value would come from the environment")
        yield _key_value(line, f"{path}:{number}")


def _put(data: dict[str, str], key: str, value: str, where: str) -> None:
    if not CONFIGMAP_KEY.fullmatch(key):
        raise KustomizeError(f"{where}: {key!r} is not a valid ConfigMap key")
    if key in data:
        raise KustomizeError(f"{where}: key {key!r} given twice")
    data[key] = value


def _name_generated_configmaps(resources: list[_Resource]) -> None:
    for resource in resources:
        if not (resource.generated and resource.hashed):
            continue
        old_name = resource.name
        new_name = f"{old_name}-{configmap_hash(resource.obj)}"
        resource.obj["metadata"]["name"] = new_name
        for other in resources:
            spec = pod_spec(other.obj)
            if spec is not None and other.namespace == resource.namespace:
                _rename_configmap_references(spec, old_name, new_name)


def _rename_configmap_references(spec: dict[str, Any], old: str, new: str) -> None:
    def rename(holder: dict[str, Any] | None) -> None:
        if holder is not None and holder.get("name") == old:
            holder["name"] = new

    for volume in spec.get("volumes", []):
        rename(volume.get("configMap"))
        for source in volume.get("projected", {}).get("sources", []):
            rename(source.get("configMap"))
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        for source in container.get("envFrom", []):
            rename(source.get("configMapRef"))
        for variable in container.get("env", []):
            rename(variable.get("valueFrom", {}).get("configMapKeyRef"))


# --- patches --------------------------------------------------------------------------------------------------------


def _apply_patch(directory: Path, entry: Any, resources: list[_Resource]) -> None:
    _only(entry, _PATCH_FIELDS, f"{directory}: patches")
    if ("path" in entry) == ("patch" in entry):
        raise KustomizeError(f"{directory}: a patch needs exactly one of path and patch")
    if "path" in entry:
        path = (directory / entry["path"]).resolve()
        _check_within(directory, path, "patch")
        text = path.read_text()
    else:
        text = str(entry["patch"])
    documents = [document for document in yaml.safe_load_all(text) if document is not None]
    target = entry.get("target")
    if target is not None:
        _only(target, _TARGET_FIELDS, f"{directory}: patch target")
    if len(documents) == 1 and isinstance(documents[0], list):
        if target is None:
            raise KustomizeError(f"{directory}: a JSON 6902 patch needs a target")
        for resource in _targets(resources, target, directory):
            resource.obj = _json6902(resource.obj, documents[0], directory)
        return
    for document in documents:
        if not isinstance(document, dict):
            raise KustomizeError(f"{directory}: a strategic merge patch must be a mapping")
        aim = target
        if aim is None:
            metadata = document.get("metadata", {})
            aim = {"kind": document.get("kind"), "name": metadata.get("name")}
            if "namespace" in metadata:
                aim["namespace"] = metadata["namespace"]
        for resource in _targets(resources, aim, directory):
            patch = copy.deepcopy(document)
            if target is not None:
                # Aimed by `target`, the patch's own kind and name (often placeholders) rename nothing.
                for field in ("apiVersion", "kind"):
                    patch.pop(field, None)
                metadata = patch.get("metadata")
                if isinstance(metadata, dict):
                    metadata.pop("name", None)
                    metadata.pop("namespace", None)
            resource.obj = _strategic_merge(resource.obj, patch, ())


def _targets(resources: list[_Resource], target: dict[str, Any], directory: Path) -> list[_Resource]:
    def matches(resource: _Resource) -> bool:
        group, _, version = str(resource.obj["apiVersion"]).rpartition("/")
        checks: list[tuple[str, Callable[[str], bool]]] = [
            ("kind", lambda wanted: resource.kind == wanted),
            ("name", lambda wanted: re.fullmatch(wanted, resource.name) is not None),
            ("namespace", lambda wanted: resource.namespace == wanted),
            ("group", lambda wanted: group == wanted),
            ("version", lambda wanted: version == wanted),
        ]
        return all(check(str(target[field])) for field, check in checks if target.get(field) is not None)

    found = [resource for resource in resources if matches(resource)]
    if not found:
        raise KustomizeError(f"{directory}: a patch for {target} matches no resource")
    return found


def _strategic_merge(base: Any, patch: Any, path: tuple[str, ...]) -> Any:
    if isinstance(patch, dict) and isinstance(base, dict):
        merged = dict(base)
        for key, value in patch.items():
            if str(key).startswith("$"):
                raise KustomizeError(f"{'.'.join(path) or 'patch'}: directive {key} not implemented by this renderer")
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _strategic_merge(merged[key], value, (*path, str(key)))
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(patch, list) and isinstance(base, list):
        key = _merge_key(path)
        if key is not None:
            return _merge_list(base, patch, key, path)
    return copy.deepcopy(patch)


def _merge_key(path: tuple[str, ...]) -> str | None:
    # A merged list item extends the path by its key's value: a container's ports sit at
    # (..., "containers", <container name>, "ports"), a Service's at ("spec", "ports").
    if path[-1:] == ("ports",):
        if len(path) >= 3 and path[-3] in ("containers", "initContainers"):
            return "containerPort"
        return "port" if path == ("spec", "ports") else None
    return _MERGE_KEYS.get(path[-1]) if path else None


def _merge_list(base: list[Any], patch: list[Any], key: str, path: tuple[str, ...]) -> list[Any]:
    merged = list(base)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise KustomizeError(f"{'.'.join(path)}: every item of a merged list needs its key {key!r}")
        positions = [index for index, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item[key]]
        if positions:
            merged[positions[0]] = _strategic_merge(merged[positions[0]], item, (*path, str(item[key])))
        else:
            merged.append(copy.deepcopy(item))
    return merged


def _json6902(obj: dict[str, Any], operations: list[Any], directory: Path) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    for operation in operations:
        if not isinstance(operation, dict) or operation.get("op") not in ("add", "remove", "replace", "test"):
            raise KustomizeError(f"{directory}: JSON patch operation {operation!r} not implemented by this renderer")
        *parents, last = _pointer(str(operation.get("path", "")), directory)
        holder: Any = result
        for token in parents:
            holder = holder[int(token)] if isinstance(holder, list) else holder[token]
        op = operation["op"]
        if op == "test":
            current = holder[int(last)] if isinstance(holder, list) else holder[last]
            if current != operation.get("value"):
                raise KustomizeError(f"{directory}: JSON patch test failed at {operation['path']}")
        elif isinstance(holder, list):
            index = len(holder) if last == "-" else int(last)
            if op == "add":
                holder.insert(index, copy.deepcopy(operation["value"]))
            elif op == "remove":
                del holder[index]
            else:
                holder[index] = copy.deepcopy(operation["value"])
        else:
            if op in ("remove", "replace") and last not in holder:
                raise KustomizeError(f"{directory}: JSON patch {op} of a missing {operation['path']}")
            if op == "remove":
                del holder[last]
            else:
                holder[last] = copy.deepcopy(operation["value"])
    return result


def _pointer(pointer: str, directory: Path) -> list[str]:
    if not pointer.startswith("/"):
        raise KustomizeError(f"{directory}: JSON pointer {pointer!r} must start with /")
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/")]


# --- labels and images ----------------------------------------------------------------------------------------------


def _apply_labels(entry: Any, resources: list[_Resource], where: str) -> None:
    _only(entry, _LABEL_FIELDS, f"{where}: labels")
    if entry.get("includeSelectors", False):
        raise KustomizeError(f"{where}: labels with includeSelectors not implemented by this renderer")
    pairs = {str(key): str(value) for key, value in entry.get("pairs", {}).items()}
    for resource in resources:
        resource.obj["metadata"]["labels"] = resource.obj["metadata"].get("labels", {}) | pairs
        if entry.get("includeTemplates", False) and resource.kind in _WORKLOADS_WITH_TEMPLATE:
            template = resource.obj["spec"]["template"].setdefault("metadata", {})
            template["labels"] = template.get("labels", {}) | pairs


def _apply_image(entry: Any, resources: list[_Resource], where: str) -> None:
    _only(entry, _IMAGE_FIELDS, f"{where}: images")
    for resource in resources:
        spec = pod_spec(resource.obj)
        if spec is None:
            continue
        for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            name, tag, digest = _split_image(str(container["image"]))
            if name != entry["name"]:
                continue
            name = entry.get("newName", name)
            if "digest" in entry:
                container["image"] = f"{name}@{entry['digest']}"
            else:
                tag = entry.get("newTag", tag)
                container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1 :], digest or None
    return rest, None, digest or None

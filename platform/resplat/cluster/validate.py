"""Check a Ray cluster launcher file or a KubeRay manifest before it is used.

Launcher files are checked against the schema Ray ships in its wheel, KubeRay manifests
against the openAPIV3Schema of KubeRay's CRDs. Every problem is one line that starts
with its path in the file, e.g. `available_node_types.gpu8.min_workers: 'x' is not of
type 'integer'`.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from resplat import paths
from resplat.errors import InputError

KUBERAY_API_VERSION = "ray.io/v1"
KUBERAY_CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
CRDS_ENV = "RESPLAT_KUBERAY_CRDS"
# The fake_multinode provider tags its head with this node type name.
FAKE_MULTINODE_HEAD = "ray.head.default"
# The keys the API server accepts in a top-level `metadata` (ObjectMeta a user may set).
OBJECT_META_KEYS = ("name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences")


def validate_cluster_file(path: str | Path) -> list[str]:
    """The problems of a launcher file or KubeRay manifest, one line each; [] when it is fine."""
    doc, problems = _load(Path(path))
    if problems:
        return problems
    if is_kuberay(doc):
        return kuberay_problems(doc)
    return launcher_problems(doc)


def load_cluster_file(path: str | Path) -> dict[str, Any]:
    """The parsed file, or an InputError listing its problems (nothing else is done with it)."""
    problems = validate_cluster_file(path)
    if problems:
        raise InputError(describe_problems(path, problems))
    return _load(Path(path))[0]


def describe_problems(path: str | Path, problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    return f"{path}: {count}\n{lines}"


def is_kuberay(doc: dict[str, Any]) -> bool:
    return "kind" in doc or "apiVersion" in doc


def _load(path: Path) -> tuple[Any, list[str]]:
    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(f"{path}: cannot read the cluster file ({error.strerror})") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        return None, [f"{where}: not valid YAML: {getattr(error, 'problem', None) or error}"]
    if len(docs) != 1:
        return None, [f"(file): {len(docs)} YAML documents; a cluster file holds exactly one"]
    if not isinstance(docs[0], dict):
        return None, ["(file): expected a mapping (a Ray cluster launcher file or a KubeRay manifest)"]
    return docs[0], []


# --- Ray cluster launcher files ---------------------------------------------------------

@functools.cache
def ray_launcher_schema() -> dict[str, Any]:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def launcher_problems(doc: dict[str, Any]) -> list[str]:
    """Ray's schema (which refuses unknown keys itself), then what `ray up` would refuse later."""
    import jsonschema

    problems = schema_problems(doc, ray_launcher_schema(), jsonschema.Draft7Validator)
    if problems:
        return problems
    types = doc.get("available_node_types")
    if not types:
        return ["available_node_types: missing: name the head and worker node types"]
    head = doc.get("head_node_type")
    if head is None:
        problems.append(f"head_node_type: missing: name the head among the node types ({', '.join(types)})")
    elif head not in types:
        problems.append(f"head_node_type: {head!r} is not one of available_node_types ({', '.join(types)})")
    elif doc["provider"]["type"] == "fake_multinode" and head != FAKE_MULTINODE_HEAD:
        problems.append(f"head_node_type: the fake_multinode provider names its head {FAKE_MULTINODE_HEAD!r}")
    for name, node_type in types.items():
        low, high = node_type.get("min_workers", 0), node_type.get("max_workers")
        if high is not None and low > high:
            problems.append(f"{format_path(['available_node_types', name, 'min_workers'])}: {low} is more "
                            f"than max_workers {high}")
    total_min = sum(t.get("min_workers", 0) for t in types.values())
    if "max_workers" in doc and total_min > doc["max_workers"]:
        problems.append(f"max_workers: {doc['max_workers']} is less than the node types' min_workers "
                        f"together ({total_min})")
    return problems


# --- KubeRay manifests ------------------------------------------------------------------

def kuberay_crds_dir() -> Path:
    configured = os.environ.get(CRDS_ENV)
    if configured:
        return Path(configured).expanduser()
    root = paths.checkout_root()
    return (root.parent if root else Path.cwd().parent) / "shared" / "data" / "kuberay"


@functools.cache
def kuberay_schema(kind: str, crds_dir: Path) -> dict[str, Any]:
    crd_file = crds_dir / KUBERAY_CRD_FILES[kind]
    try:
        crd = yaml.load(crd_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError:
        raise InputError(f"{crd_file}: KubeRay's {kind} CRD is not there; set {CRDS_ENV} to the folder "
                         f"holding {', '.join(KUBERAY_CRD_FILES.values())}") from None
    for version in crd["spec"]["versions"]:
        if version["name"] == KUBERAY_API_VERSION.split("/")[1]:
            return version["schema"]["openAPIV3Schema"]
    raise InputError(f"{crd_file}: has no {KUBERAY_API_VERSION} schema")


def kuberay_problems(doc: dict[str, Any]) -> list[str]:
    import jsonschema

    if doc.get("apiVersion") != KUBERAY_API_VERSION:
        return [f"apiVersion: {doc.get('apiVersion')!r} is not supported; use {KUBERAY_API_VERSION}"]
    kind = doc.get("kind")
    if kind not in KUBERAY_CRD_FILES:
        return [f"kind: {kind!r} is not a KubeRay kind ({', '.join(KUBERAY_CRD_FILES)})"]
    schema = kuberay_schema(kind, kuberay_crds_dir())
    # Kubernetes checks `metadata` as ObjectMeta, not through the CRD's schema.
    body = {k: v for k, v in doc.items() if k != "metadata"}
    problems = metadata_problems(doc.get("metadata"))
    problems += sorted(schema_problems(body, schema, jsonschema.Draft4Validator)
                       + unknown_key_problems(body, schema, []))
    if problems:
        return problems
    spec = doc.get("spec") or {}
    if kind == "RayJob":
        if "rayClusterSpec" not in spec and "clusterSelector" not in spec:
            return ["spec.rayClusterSpec: missing: a RayJob needs rayClusterSpec (or clusterSelector)"]
        if "rayClusterSpec" not in spec:
            return []
        return worker_group_problems(spec["rayClusterSpec"], ["spec", "rayClusterSpec"])
    return worker_group_problems(spec, ["spec"])


def metadata_problems(metadata: Any) -> list[str]:
    if not isinstance(metadata, dict):
        return ["metadata: missing: a manifest needs metadata.name"]
    problems = [f"metadata.{key}: unknown key{_suggestion(key, OBJECT_META_KEYS)}"
                for key in metadata if key not in OBJECT_META_KEYS]
    if "name" not in metadata and "generateName" not in metadata:
        problems.append("metadata.name: missing")
    return problems


def unknown_key_problems(instance: Any, schema: dict[str, Any], path: list) -> list[str]:
    """Keys the schema does not declare: kubectl's strict field validation refuses them.

    The CRDs never say `additionalProperties: false`, so jsonschema alone would accept a
    misspelt key that the API server refuses.
    """
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    problems = []
    if isinstance(instance, dict):
        declared = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if declared is not None and key in declared:
                problems += unknown_key_problems(value, declared[key], [*path, key])
            elif isinstance(extra, dict):
                problems += unknown_key_problems(value, extra, [*path, key])
            elif extra is not True:
                problems.append(f"{format_path([*path, key])}: unknown key{_suggestion(key, declared or ())}")
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(instance):
            problems += unknown_key_problems(item, schema["items"], [*path, index])
    return problems


def worker_group_problems(cluster_spec: dict[str, Any], path: list) -> list[str]:
    """Replica bounds, and rayStartParams that agree with the container limits Kubernetes enforces."""
    problems = []
    for index, group in enumerate(cluster_spec.get("workerGroupSpecs") or []):
        where = [*path, "workerGroupSpecs", index]
        low, high = group.get("minReplicas", 0), group.get("maxReplicas")
        if high is not None and low > high:
            problems.append(f"{format_path([*where, 'minReplicas'])}: {low} is more than maxReplicas {high}")
        containers = group["template"].get("spec", {}).get("containers") or [{}]
        limits = (containers[0].get("resources") or {}).get("limits") or {}
        params = group.get("rayStartParams") or {}
        for param, limit in (("num-cpus", "cpu"), ("num-gpus", "nvidia.com/gpu")):
            if param in params and quantity(params[param]) != quantity(limits.get(limit, 0)):
                problems.append(f"{format_path([*where, 'rayStartParams', param])}: {params[param]!r} does not "
                                f"match the container's limits.{limit} ({limits.get(limit, 'none')})")
    return problems


def quantity(value: Any) -> float | None:
    """A Kubernetes CPU/GPU quantity as a number: 8, "8", "500m"."""
    text = str(value)
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return None


# --- shared: jsonschema errors as one line each -----------------------------------------

def schema_problems(doc: Any, schema: dict[str, Any], validator_class) -> list[str]:
    validator = validator_class(schema)
    problems = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        problems += _describe(error)
    return problems


def _describe(error) -> list[str]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        declared = error.schema.get("properties", {})
        patterns = error.schema.get("patternProperties", {})
        return [f"{format_path([*path, key])}: unknown key{_suggestion(key, declared)}"
                for key in error.instance
                if key not in declared and not any(re.search(p, key) for p in patterns)]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [f"{format_path([*path, missing])}: missing (required)"]
    if error.validator == "anyOf":
        types = [s.get("type") for s in error.validator_value if set(s) == {"type"}]
        if len(types) == len(error.validator_value):
            return [f"{format_path(path)}: {error.instance!r} is not of type {' or '.join(map(repr, types))}"]
    return [f"{format_path(path)}: {error.message}"]


def format_path(parts: list) -> str:
    """`spec.workerGroupSpecs[0].template`; keys holding dots are quoted: `available_node_types["ray.head.default"]`."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "." in str(part) or " " in str(part):
            text += f'["{part}"]'
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _suggestion(key: str, allowed) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""

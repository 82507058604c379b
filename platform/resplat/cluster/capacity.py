"""Which worker node type, and how many nodes of it, a job's Ray Train workers need.

Read from a cluster file's node types (a Ray launcher file's available_node_types or a
KubeRay manifest's worker groups), before anything is launched: a worker that no node
type can hold is an input error, not a job that waits for capacity forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resplat.cluster.validate import is_kuberay, load_cluster_file, quantity
from resplat.errors import InputError
from resplat.spec import ScalingSpec


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_nodes: int | None  # None: only the cluster's max_workers limits it


def plan_nodes(scaling: ScalingSpec, cluster_file: str | Path) -> str:
    """The node plan for `scaling` on `cluster_file`, e.g. "2 x gpu8 for 16 workers (8 per node; ...)".
    An elastic job must be able to start (its fewest workers fit); it grows as far as the file lets it."""
    doc = load_cluster_file(cluster_file)
    types, max_total = node_types(doc)
    need = worker_demand(scaling)
    fits = {t.name: workers_per_node(t, need, scaling.placement) for t in types}
    usable = [t for t in types if fits[t.name] > 0]
    if not usable:
        offered = "; ".join(f"{t.name} ({describe(t.resources)})" for t in types) or "none"
        raise InputError(f"--cluster {cluster_file}: no node type can hold one worker of ({describe(need)}) "
                         f"(scaling.use_gpu, scaling.cpus_per_worker); worker node types: {offered}")
    if not scaling.use_gpu and any("GPU" not in t.resources for t in usable):
        usable = [t for t in usable if "GPU" not in t.resources]  # as Ray's autoscaler keeps GPUs free

    def nodes_for(workers: int) -> list[tuple[NodeType, int]]:
        return _one_type(usable, fits, workers, max_total) or _mixed(usable, fits, workers, max_total)

    low, high = scaling.min_workers, scaling.max_workers
    if not nodes_for(low):
        limits = ", ".join(f"{t.name} max {t.max_nodes} x {fits[t.name]}" for t in usable)
        cap = f"; max_workers {max_total}" if max_total is not None else ""
        asked = f"at least {low}" if scaling.elastic else str(low)
        raise InputError(f"--cluster {cluster_file}: {asked} workers of ({describe(need)}) need more "
                         f"nodes than the file allows (nodes x workers per node: {limits}{cap}); "
                         "lower scaling.num_workers or raise the max_workers")
    if not scaling.elastic:
        return _describe_plan(nodes_for(low), low, fits)
    most = next(n for n in range(high, low - 1, -1) if nodes_for(n))
    capped = f" (the file's node limits stop it at {most} of the {high})" if most < high else ""
    return (f"starts with {_describe_plan(nodes_for(low), low, fits)}; grows to "
            f"{_describe_plan(nodes_for(most), most, fits)}{capped}")


def _describe_plan(chosen: list[tuple[NodeType, int]], workers: int, fits: dict[str, int]) -> str:
    left, parts = workers, []
    for node_type, count in chosen:
        placed = min(left, count * fits[node_type.name])
        left -= placed
        parts.append(f"{count} x {node_type.name} for {placed} worker{'s' if placed > 1 else ''} "
                     f"({fits[node_type.name]} per node; a node has {describe(node_type.resources)})")
    return " + ".join(parts)


def _one_type(usable: list[NodeType], fits: dict[str, int], workers: int,
              max_total: int | None) -> list[tuple[NodeType, int]]:
    """The type that holds every worker in the fewest nodes, then with the fewest idle worker slots."""
    options = []
    for node_type in usable:
        count = -(-workers // fits[node_type.name])
        if all(cap is None or count <= cap for cap in (node_type.max_nodes, max_total)):
            options.append((count, count * fits[node_type.name] - workers, node_type))
    if not options:
        return []
    count, _, node_type = min(options, key=lambda option: option[:2])
    return [(node_type, count)]


def _mixed(usable: list[NodeType], fits: dict[str, int], workers: int,
           max_total: int | None) -> list[tuple[NodeType, int]]:
    """Fill the largest nodes up to their limits, then the next type; [] when all of them fall short."""
    chosen, left, nodes_left = [], workers, max_total
    for node_type in sorted(usable, key=lambda t: -fits[t.name]):
        caps = [n for n in (node_type.max_nodes, nodes_left) if n is not None]
        count = min([-(-left // fits[node_type.name]), *caps])
        if count > 0:
            chosen.append((node_type, count))
            left -= min(left, count * fits[node_type.name])
            nodes_left = None if nodes_left is None else nodes_left - count
        if left == 0:
            return chosen
    return []


def worker_demand(scaling: ScalingSpec) -> dict[str, float]:
    need = {"CPU": float(scaling.cpus_per_worker)}
    if scaling.use_gpu:
        need["GPU"] = 1.0
    return need


def workers_per_node(node_type: NodeType, need: dict[str, float], placement: str) -> int:
    per_node = min(int(node_type.resources.get(name, 0) // amount) for name, amount in need.items())
    return min(per_node, 1) if placement == "STRICT_SPREAD" else per_node


def node_types(doc: dict[str, Any]) -> tuple[list[NodeType], int | None]:
    """The worker node types of a (valid) cluster file and the cap on worker nodes in all."""
    if is_kuberay(doc):
        spec = doc["spec"].get("rayClusterSpec", doc["spec"]) if doc["kind"] == "RayJob" else doc["spec"]
        return [_worker_group(g) for g in spec.get("workerGroupSpecs") or []], None
    types = [NodeType(name, {k: float(v) for k, v in t["resources"].items()}, t.get("max_workers"))
             for name, t in doc["available_node_types"].items() if name != doc["head_node_type"]]
    return types, doc.get("max_workers")


def _worker_group(group: dict[str, Any]) -> NodeType:
    containers = group["template"].get("spec", {}).get("containers") or [{}]
    limits = (containers[0].get("resources") or {}).get("limits") or {}
    params = group.get("rayStartParams") or {}
    resources = {"CPU": quantity(params.get("num-cpus", limits.get("cpu", 0))) or 0.0}
    gpus = quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0))) or 0.0
    if gpus:
        resources["GPU"] = gpus
    resources.update({k: quantity(v) or 0.0 for k, v in (group.get("resources") or {}).items()})
    return NodeType(group["groupName"], resources, group.get("maxReplicas"))


def describe(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in resources.items())

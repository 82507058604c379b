"""Helpers for tests that take nodes away from a real multi-node Ray (ray.cluster_utils.Cluster)."""

from __future__ import annotations


def connect(cluster) -> None:
    """Connect this process to `cluster` as a resplat driver would to a Ray it started: its workers
    ask their own cluster, whatever other Ray runs on the machine (other tests run beside this one)."""
    import ray

    from resplat.orchestrate.runtime import job_runtime_env

    ray.init(address=cluster.address, log_to_driver=False, runtime_env=job_runtime_env())


def training_node_id() -> str | None:
    """The node of the one training worker's placement group, asked of the GCS (not the dashboard,
    which may be slow to start), or None before the worker group is placed."""
    import ray

    for group in ray.util.placement_group_table().values():
        if group["state"] == "CREATED":
            return next(iter(group["bundles_to_node_id"].values()))
    return None

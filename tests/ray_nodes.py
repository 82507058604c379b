"""Helpers for tests that take nodes away from a real multi-node Ray (ray.cluster_utils.Cluster)."""

from __future__ import annotations


def training_node_id() -> str | None:
    """The node of the one training worker's placement group, asked of the GCS (not the dashboard,
    which may be slow to start), or None before the worker group is placed."""
    import ray

    for group in ray.util.placement_group_table().values():
        if group["state"] == "CREATED":
            return next(iter(group["bundles_to_node_id"].values()))
    return None

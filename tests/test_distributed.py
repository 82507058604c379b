"""Multi-worker and multi-node training on real Ray nodes (ray.cluster_utils.Cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray_nodes import connect

from resplat.spec import JobSpec

pytestmark = pytest.mark.slow


def job(subset: Path, **scaling) -> JobSpec:
    return JobSpec.model_validate({
        "name": "ddp",
        "seed": 3,
        "model": {"family": "cifar", "depth": 8},
        "data": {"train": subset / "train", "val": subset / "test", "loader_workers": 1},
        "optim": {"lr": 0.1, "global_batch_size": 40},
        "schedule": {"kind": "constant", "epochs": 3},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1, **scaling},
    })


@pytest.fixture(scope="module")
def three_node_cluster():
    """A head with no CPUs and two worker nodes: real raylets, one machine."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    connect(cluster)
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def prepared(cifar_subset, tmp_path_factory):
    import os

    from resplat.orchestrate.submit import prepare_data

    # A fresh home: Ray Train restores a run whose name it finds in the storage folder.
    os.environ["RESPLAT_HOME"] = str(tmp_path_factory.mktemp("home"))
    yield prepare_data(job(cifar_subset).data, num_classes=10)
    del os.environ["RESPLAT_HOME"]


def train_on_cluster(spec: JobSpec, prepared, name: str, tracking_uri: str | None = None):
    """Trained on the module's cluster; with `tracking_uri`, tracked in MLflow as a submit does."""
    from resplat.orchestrate.trainer import run_training
    from resplat.spec import flatten, to_yaml
    from resplat.tracking import TrackedRun
    from resplat.tracking.names import RESOLVED_SPEC

    spec = spec.model_copy(update={"data": prepared.data})
    run = TrackedRun.create(tracking_uri, "ddp", run_name=name, params=flatten(spec),
                            texts={RESOLVED_SPEC: to_yaml(spec)}) if tracking_uri else None
    return run_training(spec, run=run, run_name=name)


def test_two_workers_on_two_nodes_match_two_workers_on_one(three_node_cluster, prepared, cifar_subset, tmp_path):
    import ray

    packed = train_on_cluster(job(cifar_subset, placement="PACK"), prepared, "packed")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spread = train_on_cluster(job(cifar_subset, placement="STRICT_SPREAD"), prepared, "spread", tracking_uri)

    assert len(packed.epochs) == len(spread.epochs) == 3
    assert len(set(packed.nodes)) == 1, packed.nodes
    assert len(set(spread.nodes)) == 2, spread.nodes
    train_images = prepared.train.num_images // 40 * 40  # drop_last over the 40-image global batch
    for outcome in (packed, spread):
        # Each worker read its own shard: together one pass over the set, not one pass each.
        assert [e["train_images"] for e in outcome.epochs] == [train_images] * 3
        # Validation covered every image exactly once across both workers' shards.
        assert [e["val_images"] for e in outcome.epochs] == [prepared.val.num_images] * 3
        assert outcome.epochs[-1]["train_loss"] < outcome.epochs[0]["train_loss"]
    # Same seed, same data order: the runs agree up to FFCV's augmentation randomness,
    # which numba draws per loader thread and is not seeded per sample.
    for a, b in zip(packed.epochs, spread.epochs):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05)
    assert len(ray.nodes()) == 3

    # Two workers, one MLflow run, each metric once per step: only rank 0 logs.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert {"train_loss", "val_top1", "val_top5"} <= set(run.data.metrics)
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), key
    for key in ("train_loss", "val_top1", "val_top5"):  # the per-epoch metrics: once at each epoch
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2, 3], key
    # And one model per checkpointed epoch, at its step.
    assert sorted(o.step for o in run.outputs.model_outputs) == [1, 2, 3]

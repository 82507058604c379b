"""Elastic workers on real local raylets: a job with scaling.num_workers [1, 2] starts on the one
node there is, grows to two workers when a second node joins, and ends with one model; the global
batch, the lr and each worker's share of the data follow the world size, and MLflow records it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resplat.spec import JobSpec

pytestmark = pytest.mark.slow

EPOCHS = 30
CHECKPOINT_EVERY = 3
IMAGES = 400  # cifar_subset: 40 training images per class
BATCH = 20


@pytest.fixture(scope="module")
def one_worker_node(tmp_path_factory):
    """A head that trains nothing and one one-CPU raylet: room for one worker, until a node joins."""
    import ray
    from ray.cluster_utils import Cluster

    saved = os.environ.get("RESPLAT_HOME")
    os.environ["RESPLAT_HOME"] = str(tmp_path_factory.mktemp("home"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    if saved is None:
        os.environ.pop("RESPLAT_HOME", None)
    else:
        os.environ["RESPLAT_HOME"] = saved


def history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of each point of `key`, in the order logged."""
    from mlflow.tracking import MlflowClient

    points = MlflowClient(tracking_uri).get_metric_history(run_id, key)
    return [(p.step, p.value) for p in sorted(points, key=lambda p: (p.timestamp, p.step))]


def test_a_job_grows_when_a_node_joins(one_worker_node, cifar_subset):
    import mlflow
    from mlflow.tracking import MlflowClient

    from resplat.orchestrate.submit import prepare_data, submit
    from resplat.tracking import TrackedRun
    from resplat.tracking.names import (
        EPOCH_MODEL_TAG,
        MODEL_ARTIFACT,
        MODEL_URI_TAG,
        RESIZES_TAG,
        RESTORED_FROM_EPOCH_METRIC,
        WORLD_SIZE_METRIC,
    )

    cluster = one_worker_node
    spec = JobSpec.model_validate({
        "name": "elastic", "seed": 4, "model": {"family": "cifar", "depth": 8},
        "data": {"train": cifar_subset / "train", "val": cifar_subset / "test", "loader_workers": 1},
        # lr 0.05 for a global batch of 20: linear scaling makes it 0.1 with two workers.
        "optim": {"lr": 0.05, "batch_size": BATCH, "lr_scaling": "linear", "base_batch_size": BATCH},
        "schedule": {"kind": "constant", "epochs": EPOCHS},
        "checkpoint": {"every_epochs": CHECKPOINT_EVERY, "keep": 2},
        "scaling": {"num_workers": [1, 2], "cpus_per_worker": 1, "resize_check_seconds": 2},
        # A resize charged to max_failures would end the run.
        "failure": {"max_failures": 0},
        "tracking": {"experiment": "elastic"},
    })
    prepared = prepare_data(spec.data, num_classes=10)
    tracking_uri = f"sqlite:///{Path(os.environ['RESPLAT_HOME']) / 'mlflow.db'}"
    joined: list = []

    def add_a_node_once_checkpointed(progress, epochs) -> None:
        # After the first checkpoint, so the bigger group resumes from one saved by the smaller.
        if not joined and len(epochs) >= CHECKPOINT_EVERY:
            joined.append(cluster.add_node(num_cpus=1))

    result = submit(spec, prepared=prepared, spec_text="", address="auto", on_update=add_a_node_once_checkpointed)
    assert joined, "the job ended before its first checkpoint"

    sizes = history(tracking_uri, result.run_id, WORLD_SIZE_METRIC)
    assert [size for _, size in sizes] == [1, 2], f"the job should have grown from 1 to 2 workers: {sizes}"
    [(_, resumed_epoch)] = history(tracking_uri, result.run_id, RESTORED_FROM_EPOCH_METRIC)
    resumed_epoch = int(resumed_epoch)
    assert resumed_epoch >= CHECKPOINT_EVERY and resumed_epoch % CHECKPOINT_EVERY == 0
    # One worker: 20 steps of 20 images an epoch; two: 10 steps each of 20 (their halves of the set).
    assert sizes[1][0] == resumed_epoch * IMAGES // BATCH  # the global step the bigger group started at
    assert result.metrics["epoch"] == EPOCHS
    assert result.metrics["global_step"] == resumed_epoch * 20 + (EPOCHS - resumed_epoch) * 10
    assert result.metrics["train_images"] == IMAGES  # both shards together: one pass over the set
    assert result.metrics["val_images"] == 100  # each validation image once over both workers

    lr = dict(history(tracking_uri, result.run_id, "lr"))  # by epoch; the last value of a redone epoch
    assert lr[1] == pytest.approx(0.05) and lr[resumed_epoch] == pytest.approx(0.05)
    assert lr[resumed_epoch + 1] == pytest.approx(0.1) and lr[EPOCHS] == pytest.approx(0.1)

    run = TrackedRun.open(tracking_uri, result.run_id)
    assert run.status == "FINISHED"
    assert run.tags[RESIZES_TAG] == "1"
    logged = MlflowClient(tracking_uri).search_logged_models(
        [run.experiment_id], filter_string=f"source_run_id = '{result.run_id}'")
    finals = [m for m in logged if EPOCH_MODEL_TAG not in m.tags]
    assert [m.name for m in finals] == [MODEL_ARTIFACT]
    assert run.tags[MODEL_URI_TAG] == result.model_uri
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pytorch.load_model(result.model_uri)
    assert sum(p.numel() for p in model.parameters()) > 0

"""Elastic workers on real local raylets: a job with scaling.num_workers [1, 2] starts on the one
node there is, grows to two workers when a second node joins, and ends with one model; the global
batch, the lr and each worker's share of the data follow the world size, and MLflow records it."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from ray_nodes import connect

from resplat.spec import JobSpec
from resplat.train import PrintReporter, train
from resplat.train.loop import resumed_batch

EPOCHS = 40
CHECKPOINT_EVERY = 3
IMAGES = 400  # cifar_subset: 40 training images per class
BATCH = 20


def test_a_mid_epoch_position_keeps_its_share_of_the_epoch():
    assert resumed_batch(6, 20, 20) == 6  # same world size: the very next batch
    assert resumed_batch(6, 20, 10) == 3  # twice the workers: half the steps per epoch
    assert resumed_batch(3, 10, 20) == 6
    assert resumed_batch(19, 20, 10) == 9  # rounded down: never past the epoch's end


@pytest.fixture(scope="module")
def step_schedule_spec(cifar_subset, tmp_path_factory):
    """400 images, batch 50: 8 steps an epoch for one worker; lr 0.05 x 0.1 from epoch 2 on."""
    from resplat.orchestrate.submit import prepare_data

    saved = os.environ.get("RESPLAT_HOME")
    os.environ["RESPLAT_HOME"] = str(tmp_path_factory.mktemp("home"))
    try:
        spec = JobSpec.model_validate({
            "name": "elastic-loop", "seed": 5, "model": {"family": "cifar", "depth": 8},
            "data": {"train": cifar_subset / "train", "val": cifar_subset / "test", "loader_workers": 1},
            "optim": {"lr": 0.05, "batch_size": 50, "lr_scaling": "linear", "base_batch_size": 50},
            "schedule": {"kind": "step", "milestones": [2], "epochs": 3},
            "scaling": {"num_workers": [1, 2]},
        })
        prepared = prepare_data(spec.data, num_classes=10)
    finally:
        if saved is None:
            os.environ.pop("RESPLAT_HOME", None)
        else:
            os.environ["RESPLAT_HOME"] = saved
    return spec.model_copy(update={"data": prepared.data})


def as_if_saved_by_two_workers(state: dict, *, epoch_step: int) -> dict:
    """An epoch-1 state rewritten as two workers would have saved it: 4 steps an epoch, lr 0.1."""
    state = copy.deepcopy(state)
    state.update(steps_per_epoch=4, world_size=2, epoch_step=epoch_step, global_step=4 + epoch_step)
    state["scheduler"].update(last_epoch=4 + epoch_step, base_lrs=[0.1])
    for group in state["optimizer"]["param_groups"]:
        group.update(lr=0.1, initial_lr=0.1)
    return state


@pytest.mark.slow
def test_one_worker_resumes_a_two_worker_checkpoint_at_the_same_point_of_the_schedule(step_schedule_spec):
    whole = PrintReporter()
    train(step_schedule_spec, whole)  # one worker (a plain process) all along
    assert [r.global_step for r in whole.epochs] == [8, 16, 24]
    epoch_one = whole.epochs[0].state

    at_epoch_end = PrintReporter()
    train(step_schedule_spec, at_epoch_end, resume=as_if_saved_by_two_workers(epoch_one, epoch_step=0))
    assert [r.epoch for r in at_epoch_end.epochs] == [2, 3]
    # The steps taken go on counting (4, then 8 an epoch); the schedule is where epoch 1's end is.
    assert [r.global_step for r in at_epoch_end.epochs] == [12, 20]
    assert [r.metrics["lr"] for r in at_epoch_end.epochs] == pytest.approx([r.metrics["lr"] for r in whole.epochs[1:]])
    assert at_epoch_end.epochs[-1].metrics["lr"] == pytest.approx(0.005)  # one worker's peak 0.05, x 0.1

    mid_epoch = PrintReporter()
    train(step_schedule_spec, mid_epoch, resume=as_if_saved_by_two_workers(epoch_one, epoch_step=2))
    # 2 of 4 steps done: the other half of epoch 2 is 4 of one worker's 8.
    assert [r.epoch for r in mid_epoch.epochs] == [2, 3]
    assert [r.global_step for r in mid_epoch.epochs] == [10, 18]
    assert mid_epoch.epochs[0].metrics["train_images"] == 4 * 50
    assert mid_epoch.epochs[-1].state["steps_per_epoch"] == 8 and mid_epoch.epochs[-1].state["world_size"] == 1


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
    connect(cluster)
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


@pytest.mark.slow
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

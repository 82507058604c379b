"""Spot preemption on real local raylets: the notice (a drain with reason PREEMPTION and a deadline)
makes the worker save a just-in-time checkpoint mid-epoch; the node then goes, and the restart,
charged to failure.max_preemption_failures, resumes from the step of the notice."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest
import torch
from ray_nodes import connect, training_node_id

from resplat.spec import JobSpec

pytestmark = pytest.mark.slow

DRAIN_DEADLINE_S = 90


@pytest.fixture(scope="module")
def two_worker_nodes(tmp_path_factory):
    """A head that trains nothing and two one-CPU worker raylets. Ray Train's preemption watcher
    polls the drain state every 0.5 s here (5 s by default); raylets' workers inherit the setting."""
    import ray
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "RESPLAT_HOME")}
    os.environ.update(RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S="0.5", RESPLAT_HOME=str(tmp_path_factory.mktemp("home")))
    # A reclaimed node vanishes (no graceful shutdown): the GCS finds it by health checks, here within ~5 s.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 5}})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    connect(cluster)
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def drain_for_preemption(gcs_address: str, node_id: str, deadline_s: int) -> None:
    """What `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION --deadline-remaining-seconds N` asks the GCS."""
    import ray
    from ray.core.generated import autoscaler_pb2

    accepted, why = ray._raylet.GcsClient(address=gcs_address).drain_node(
        node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"), "spot reclaim",
        time.time_ns() // 1_000_000 + deadline_s * 1000,
    )
    assert accepted, why


def registered_steps(home: Path) -> set[int]:
    """Global steps of the checkpoints Ray Train's controller has registered (its snapshot file)."""
    steps: set[int] = set()
    for path in (home / "ray_results").rglob("checkpoint_manager_snapshot.json"):
        try:
            steps.update(int(n) for n in re.findall(r'global_step\\?"\s*:\s*(\d+)', path.read_text()))
        except OSError:
            pass
    return steps


def metric_steps(tracking_uri: str, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return [int(point.value) for point in MlflowClient(tracking_uri).get_metric_history(run_id, key)]


def test_a_preempted_node_costs_only_the_steps_since_the_notice(two_worker_nodes, cifar_subset):
    from resplat.orchestrate.submit import prepare_data, submit
    from resplat.tracking import TrackedRun
    from resplat.tracking.names import (
        PREEMPTION_CHECKPOINT_STEP_METRIC,
        PREEMPTIONS_TAG,
        RESTORED_FROM_STEP_METRIC,
    )

    cluster, nodes = two_worker_nodes
    spec = JobSpec.model_validate({
        "name": "spot", "seed": 2, "model": {"family": "cifar", "depth": 8},
        "data": {"train": cifar_subset / "train", "val": cifar_subset / "test", "loader_workers": 1},
        "optim": {"lr": 0.05, "batch_size": 20}, "schedule": {"kind": "cosine", "epochs": 10},
        # No epoch checkpoint but the last: the only one to resume from is the notice's.
        "checkpoint": {"every_epochs": 10, "keep": 3},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        # A restart charged to max_failures would end the run: the preemption budget must pay.
        "failure": {"max_failures": 0, "max_preemption_failures": 1},
        "tracking": {"experiment": "spot"},
    })
    prepared = prepare_data(spec.data, num_classes=10)
    tracking_uri = f"sqlite:///{Path(os.environ['RESPLAT_HOME']) / 'mlflow.db'}"
    run_ids: list[str] = []
    preempted: dict = {}

    def reclaim(victim) -> None:
        """The cloud's side: the node goes once the just-in-time checkpoint is in (or at the deadline).
        On a real notice the node lives on for 30 s to 2 min; here it goes as soon as Ray Train has
        registered the checkpoint, which it does at its next poll of the workers."""
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        while time.monotonic() < deadline:
            noted = metric_steps(tracking_uri, run_ids[0], PREEMPTION_CHECKPOINT_STEP_METRIC)
            if noted and noted[0] in registered_steps(Path(os.environ["RESPLAT_HOME"])):
                break
            time.sleep(0.1)
        # Killed, not shut down: the GCS then records the drained node as preempted, as a cloud reclaim does.
        cluster.remove_node(victim, allow_graceful=False)
        preempted["removed"] = True

    def preempt_the_training_node(progress, epochs) -> None:
        if preempted or progress is None or progress.global_step < 3:
            return
        node_id = training_node_id()
        victim = next((node for node in nodes if node.node_id == node_id), None)
        if victim is None:
            return
        drain_for_preemption(cluster.gcs_address, node_id, DRAIN_DEADLINE_S)
        preempted.update(node=node_id, at_step=progress.global_step)
        threading.Thread(target=reclaim, args=(victim,), daemon=True).start()

    result = submit(spec, prepared=prepared, spec_text="", address="auto",
                    on_update=preempt_the_training_node, on_run=run_ids.append)
    assert preempted.get("removed"), "the training node should have been drained and removed mid-run"

    [notice_step] = metric_steps(tracking_uri, run_ids[0], PREEMPTION_CHECKPOINT_STEP_METRIC)
    assert preempted["at_step"] <= notice_step < 200  # 20 steps an epoch, 10 epochs
    assert metric_steps(tracking_uri, run_ids[0], RESTORED_FROM_STEP_METRIC) == [notice_step]
    run = TrackedRun.open(tracking_uri, result.run_id)
    assert run.status == "FINISHED"
    assert run.tags[PREEMPTIONS_TAG] == "1"
    assert result.metrics["global_step"] == 200 and result.metrics["epoch"] == 10

    states = [torch.load(path, map_location="cpu", weights_only=True)
              for path in (Path(os.environ["RESPLAT_HOME"]) / "ray_results").rglob("state.pt")]
    [just_in_time] = [s for s in states if s["global_step"] == notice_step]  # mid-epoch, or at an epoch's end
    assert just_in_time["epoch"] * 20 + just_in_time["epoch_step"] == notice_step

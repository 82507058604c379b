"""Run one job's training loop under Ray Train's TorchTrainer and stream its progress."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from resplat.errors import RunError
from resplat.orchestrate.progress_board import ProgressBoard
from resplat.orchestrate.runtime import ctrl_c_as_flag
from resplat.orchestrate.worker import load_state, train_loop_per_worker
from resplat.spec import JobSpec
from resplat.storage import ray_storage_path
from resplat.tracking import TrackedRun

POLL_S = 0.25


@dataclass
class TrainOutcome:
    metrics: dict[str, float]
    final_state: dict
    epochs: list[dict]
    restarts: int
    nodes: list[str]  # node id of each worker, by rank


def build_trainer(spec: JobSpec, *, config: dict, run_name: str, callbacks: list | None = None) -> TorchTrainer:
    scaling = spec.scaling
    keep_best = spec.checkpoint.keep_by == "best"
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,  # (MIN, MAX): Ray Train V2's elastic worker group
            elastic_resize_monitor_interval_s=scaling.resize_check_seconds,
            use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker, **({"GPU": 1} if scaling.use_gpu else {})},
            placement_strategy=scaling.placement,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=ray_storage_path(spec.storage.uri),
            checkpoint_config=CheckpointConfig(
                num_to_keep=spec.checkpoint.keep,
                checkpoint_score_attribute="val_top1" if keep_best else None,
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(
                max_failures=spec.failure.max_failures,
                max_preemption_failures=spec.failure.max_preemption_failures,
            ),
            callbacks=callbacks,
        ),
    )


def run_training(
    spec: JobSpec,
    *,
    run: TrackedRun | None,
    run_name: str,
    on_update: Callable[[object, list[dict]], None] = lambda progress, epochs: None,
    callbacks: list | None = None,
    data_sources: dict[str, tuple[str, str]] | None = None,
    trial_id: str | None = None,
) -> TrainOutcome:
    """Fit `spec` on the connected Ray cluster; call `on_update` while it trains.
    `data_sources`: {"train"/"val": (object store URI, sha256)} that workers copy to their node."""
    # On the driver's node, like Ray Train's controller: a worker node may go (preemption, scale-down).
    board = ProgressBoard.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node_id=ray.get_runtime_context().get_node_id(), soft=False)).remote()
    config = {
        "spec": spec.model_dump(mode="json"),
        "run_id": run.run_id if run else None,
        "tracking_uri": run.tracking_uri if run else None,
        "board": board,
        "data_sources": data_sources,
        "trial_id": trial_id,  # the Tune trial, for the workers' metric labels
    }
    trainer = build_trainer(spec, config=config, run_name=run_name, callbacks=callbacks)
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = e

    thread = threading.Thread(target=fit, name="resplat-fit", daemon=True)
    thread.start()
    epochs: list[dict] = []
    restarts = 0
    with ctrl_c_as_flag() as interrupted:
        while thread.is_alive():
            thread.join(POLL_S)
            if interrupted.is_set():
                raise KeyboardInterrupt
            latest, epochs, restarts = ray.get(board.snapshot.remote())
            on_update(latest, epochs)
    latest, epochs, restarts = ray.get(board.snapshot.remote())
    on_update(latest, epochs)
    nodes = ray.get(board.worker_nodes.remote())
    ray.kill(board)

    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, KeyboardInterrupt):
            raise error
        raise RunError(f"training failed: {_root_cause(error)}") from error
    result = outcome["result"]
    if result.error is not None:
        raise RunError(f"training failed: {_root_cause(result.error)}") from result.error
    if result.checkpoint is None:
        raise RunError("training finished without a checkpoint")
    return TrainOutcome(
        metrics=dict(result.metrics or {}),
        final_state=load_state(result.checkpoint),
        epochs=epochs,
        restarts=restarts,
        nodes=nodes,
    )


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"

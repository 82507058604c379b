"""What each Ray Train worker runs: the plain training loop with a Ray-aware reporter."""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray
import ray.train
import torch

from resplat.spec import JobSpec
from resplat.tracking import TrackedRun
from resplat.train import EpochReport, Progress, train

STATE_FILE = "state.pt"


def load_state(checkpoint: ray.train.Checkpoint) -> dict:
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


class RayReporter:
    """Reports to Ray Train (metrics + checkpoints), the driver's progress board and MLflow (rank 0)."""

    def __init__(self, rank: int, board, run: TrackedRun | None):
        self.rank = rank
        self.board = board
        self.run = run

    def progress(self, update: Progress) -> None:
        self.board.post.remote(update)

    def epoch_end(self, report: EpochReport) -> None:
        metrics = {**report.metrics, "epoch": report.epoch, "global_step": report.global_step,
                   "final": report.final}
        # Log before reporting: at the report, Tune may stop the trial (ASHA) and end this process.
        if self.rank == 0:
            # Waited for: a fire-and-forget call may be lost when the worker exits after the last epoch.
            ray.get(self.board.post_epoch.remote(report.epoch, report.metrics))
            if self.run is not None:
                self.run.log_metrics(report.metrics, step=report.epoch)
        if report.state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            torch.save(report.state, Path(directory) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def train_loop_per_worker(config: dict) -> None:
    context = ray.train.get_context()
    rank = context.get_world_rank()
    spec = JobSpec.model_validate(config["spec"])
    run = TrackedRun(config["tracking_uri"], config["run_id"]) if rank == 0 and config.get("run_id") else None
    ray.get(config["board"].join.remote(rank, ray.get_runtime_context().get_node_id()))
    checkpoint = ray.train.get_checkpoint()
    resume = load_state(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and rank == 0:
        config["board"].note_restart.remote()
        if run is not None:
            run.set_tags({"resplat.restored_from_epoch": str(resume["epoch"])})
            run.log_metrics({"restored_from_epoch": resume["epoch"]}, step=resume["epoch"])
    reporter = RayReporter(rank, config["board"], run)
    train(spec, reporter, resume=resume, local_rank=context.get_local_rank())

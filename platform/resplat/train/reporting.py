"""What the training loop tells the outside world, and the interface it tells it through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Progress:
    """A snapshot of where training is; sent by every worker a few times a second."""

    epoch: int  # 1-based
    epochs: int
    step: int  # steps done in this epoch
    steps_per_epoch: int
    global_step: int
    total_steps: int
    loss: float
    images_per_sec: float  # summed over workers (estimated from rank 0)
    phase: str = "train"  # "train" or "val"
    worker_images_per_sec: float = 0.0  # this worker alone, over the epoch so far
    step_seconds: float = 0.0  # mean time per step since the previous snapshot
    data_wait_fraction: float = 0.0  # share of that time spent waiting for the loader
    lr: float = 0.0


@dataclass(frozen=True)
class EpochReport:
    """End of one epoch: metrics reduced over all workers, and state when a checkpoint is due."""

    epoch: int
    global_step: int
    metrics: dict[str, float]
    state: dict[str, Any] | None  # only on rank 0, only when a checkpoint is due
    final: bool
    preemption: bool = False  # the checkpoint answers a preemption notice (received in the last step)


@dataclass(frozen=True)
class StepCheckpoint:
    """Training state saved part-way through an epoch: every checkpoint.every_steps, or on a
    preemption notice. Every worker sends one at the same step; only rank 0's carries state."""

    epoch: int  # 1-based, the epoch in progress
    step: int  # steps done in that epoch
    global_step: int
    state: dict[str, Any] | None
    preemption: bool  # saved because the reporter asked for it (a preemption notice)
    metrics: dict[str, float]  # the last finished epoch's, if any (a checkpoint's score needs them)


class Reporter(Protocol):
    rank: int

    def progress(self, update: Progress) -> None: ...

    def epoch_end(self, report: EpochReport) -> None: ...

    def checkpoint_requested(self, global_step: int) -> bool:
        """Asked after every step, on every worker at the same steps: save state now?
        Must be cheap; True when a preemption notice has arrived that no checkpoint answered yet."""
        ...

    def step_checkpoint(self, saved: StepCheckpoint) -> None: ...


class PrintReporter:
    """A reporter for plain runs (torchrun, notebooks, tests): prints one line per epoch."""

    def __init__(self, rank: int = 0):
        self.rank = rank
        self.epochs: list[EpochReport] = []
        self.checkpoints: list[StepCheckpoint] = []

    def progress(self, update: Progress) -> None:
        pass

    def epoch_end(self, report: EpochReport) -> None:
        self.epochs.append(report)
        if self.rank == 0:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in report.metrics.items())
            print(f"epoch {report.epoch}: {shown}", flush=True)

    def checkpoint_requested(self, global_step: int) -> bool:
        return False

    def step_checkpoint(self, saved: StepCheckpoint) -> None:
        self.checkpoints.append(saved)

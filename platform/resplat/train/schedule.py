"""Learning-rate schedules: a pure function of the step, and the plateau rule's epoch-end state."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class StepPlan:
    """Schedule settings converted to steps."""

    kind: str
    total_steps: int
    milestones: tuple[int, ...]
    gamma: float
    warmup_steps: int
    warmup_start: float
    warmup_shape: str
    peak_at: float


def plan_steps(schedule, steps_per_epoch: int) -> StepPlan:
    """Turn a ScheduleSpec (epochs or steps) into a StepPlan."""
    total = schedule.epochs * steps_per_epoch
    if schedule.max_steps is not None:
        total = min(total, schedule.max_steps)
    per_unit = steps_per_epoch if schedule.unit == "epochs" else 1
    return StepPlan(
        kind=schedule.kind,
        total_steps=max(total, 1),
        milestones=tuple(round(m * per_unit) for m in schedule.milestones),
        gamma=schedule.gamma,
        warmup_steps=round(schedule.warmup * per_unit),
        warmup_start=schedule.warmup_start,
        warmup_shape=schedule.warmup_shape,
        peak_at=schedule.peak_at,
    )


def lr_factor(plan: StepPlan, step: int) -> float:
    """Multiplier of the peak lr at `step` (0-based)."""
    if plan.kind == "onecycle":
        peak = max(1, round(plan.peak_at * plan.total_steps))
        if step < peak:
            return plan.warmup_start + (1 - plan.warmup_start) * step / peak
        return max(0.0, (plan.total_steps - step) / max(1, plan.total_steps - peak))
    if step < plan.warmup_steps:
        if plan.warmup_shape == "constant":
            return plan.warmup_start
        return plan.warmup_start + (1 - plan.warmup_start) * step / plan.warmup_steps
    if plan.kind == "step":
        return plan.gamma ** sum(step >= m for m in plan.milestones)
    if plan.kind == "cosine":
        span = max(1, plan.total_steps - plan.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - plan.warmup_steps) / span)))
    return 1.0


@dataclass
class Plateau:
    """The paper's ImageNet rule: lr x gamma after `patience` epochs without `monitor` improving.

    Fed one validation value per epoch (the same on every worker: metrics are reduced over all
    of them); `factor` multiplies the step schedule. Saved and restored with the checkpoint.
    """

    monitor: str
    gamma: float
    patience: int
    min_delta: float
    best: float | None = None
    epochs_without_improvement: int = 0
    reductions: int = 0

    @classmethod
    def of(cls, schedule) -> Plateau:
        return cls(schedule.monitor, schedule.gamma, schedule.patience, schedule.min_delta)

    @property
    def factor(self) -> float:
        return self.gamma ** self.reductions

    def update(self, metrics: dict[str, float]) -> bool:
        """Record an epoch's metrics; True when this epoch reduces the lr."""
        value = metrics[self.monitor]
        if self.monitor == "val_loss":
            value = -value  # higher is better from here on
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.epochs_without_improvement = value, 0
            return False
        self.epochs_without_improvement += 1
        if self.epochs_without_improvement < self.patience:
            return False
        self.reductions += 1
        self.epochs_without_improvement = 0
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)

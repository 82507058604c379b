"""The training loop: plain PyTorch, runs the same under Ray, torchrun or pytest.

Names load on first use, so that `resplat.train.schedule` (pure arithmetic, used to plan
a job) can be imported without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resplat.lazy import lazy_attributes

if TYPE_CHECKING:
    from resplat.train.loop import train
    from resplat.train.reporting import (
        EpochReport,
        PrintReporter,
        Progress,
        Reporter,
        StepCheckpoint,
    )

__all__ = ["EpochReport", "PrintReporter", "Progress", "Reporter", "StepCheckpoint", "train"]

__getattr__ = lazy_attributes(__name__, globals(), {
    "train": "resplat.train.loop", "EpochReport": "resplat.train.reporting",
    "PrintReporter": "resplat.train.reporting", "Progress": "resplat.train.reporting",
    "Reporter": "resplat.train.reporting", "StepCheckpoint": "resplat.train.reporting",
})

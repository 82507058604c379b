"""The training loop: plain PyTorch, runs the same under Ray, torchrun or pytest."""

from resplat.train.loop import train
from resplat.train.reporting import EpochReport, PrintReporter, Progress, Reporter

__all__ = ["EpochReport", "PrintReporter", "Progress", "Reporter", "train"]

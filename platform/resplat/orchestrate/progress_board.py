"""A tiny Ray actor that rank 0 posts progress to and the driver reads from."""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self):
        self.latest = None
        self.epochs: list[dict] = []
        self.restarts = 0

    def post(self, update) -> None:
        self.latest = update

    def post_epoch(self, epoch: int, metrics: dict) -> None:
        self.epochs.append({"epoch": epoch, **metrics})

    def note_restart(self) -> None:
        self.restarts += 1

    def snapshot(self) -> tuple:
        return self.latest, list(self.epochs), self.restarts

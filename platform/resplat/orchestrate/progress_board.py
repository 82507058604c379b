"""A tiny Ray actor that rank 0 posts progress to and the driver reads from."""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self):
        self.latest = None
        self.epochs: list[dict] = []
        self.restarts = 0
        self.nodes: dict[int, str] = {}

    def post(self, update) -> None:
        self.latest = update

    def post_epoch(self, epoch: int, metrics: dict) -> None:
        self.epochs.append({"epoch": epoch, **metrics})

    def join(self, rank: int, node_id: str) -> None:
        self.nodes[rank] = node_id

    def note_restart(self) -> None:
        self.restarts += 1

    def snapshot(self) -> tuple:
        return self.latest, list(self.epochs), self.restarts

    def worker_nodes(self) -> list[str]:
        return [self.nodes[rank] for rank in sorted(self.nodes)]

"""A tiny Ray actor that rank 0 posts progress to and the driver reads from."""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self):
        self.latest = None
        self.epochs: list[dict] = []
        self.restarts = 0
        self.preemptions = 0
        self.lost_steps = 0
        self.lost_epochs = 0
        self.nodes: dict[int, str] = {}
        self.reached_step = 0  # the furthest rank 0 got, across worker groups
        self.reached_epoch = 0  # the last epoch rank 0 finished

    def post(self, update) -> None:
        self.latest = update
        self.reached_step = max(self.reached_step, update.global_step)

    def post_epoch(self, epoch: int, metrics: dict) -> None:
        self.epochs.append({"epoch": epoch, **metrics})
        self.reached_epoch = max(self.reached_epoch, epoch)

    def join(self, rank: int, node_id: str, *, start_epoch: int = 0, start_step: int = 0) -> dict:
        """A worker starts at (start_epoch, start_step). A second start of rank 0 is a worker-group
        restart, whether or not there was a checkpoint to restore: count it and the work it loses."""
        restart = rank == 0 and rank in self.nodes
        self.nodes[rank] = node_id
        if restart:
            self.restarts += 1
            self.lost_steps += max(0, self.reached_step - start_step)
            self.lost_epochs += max(0, self.reached_epoch - start_epoch)
        return {"restart": restart, "restarts": self.restarts, "preemptions": self.preemptions,
                "lost_steps": self.lost_steps, "lost_epochs": self.lost_epochs}

    def note_preemption(self) -> int:
        self.preemptions += 1
        return self.preemptions

    def snapshot(self) -> tuple:
        return self.latest, list(self.epochs), self.restarts

    def worker_nodes(self) -> list[str]:
        return [self.nodes[rank] for rank in sorted(self.nodes)]

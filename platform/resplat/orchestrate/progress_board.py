"""A tiny Ray actor that rank 0 posts progress to and the driver reads from."""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self):
        self.latest = None
        self.epochs: list[dict] = []
        self.restarts = 0
        self.resizes = 0
        self.world_size = 0  # of the latest worker group
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

    def join(self, rank: int, node_id: str, *, start_epoch: int = 0, start_step: int = 0,
             world_size: int = 1) -> dict:
        """A worker of a group of `world_size` starts at (start_epoch, start_step). A second start of
        rank 0 is a worker-group restart, whether or not there was a checkpoint to restore: count it
        and the work it loses. A start with another world size is an elastic resize (nodes came or
        went), counted apart from restarts: Ray Train does not charge it to max_failures."""
        again = rank == 0 and rank in self.nodes
        resize = again and world_size != self.world_size
        if rank == 0:
            self.world_size = world_size
        if world_size < len(self.nodes):  # the ranks a smaller group no longer has
            self.nodes = {r: n for r, n in self.nodes.items() if r < world_size}
        self.nodes[rank] = node_id
        if again:
            if resize:
                self.resizes += 1
            else:
                self.restarts += 1
            self.lost_steps += max(0, self.reached_step - start_step)
            self.lost_epochs += max(0, self.reached_epoch - start_epoch)
        return {"restart": again and not resize, "resize": resize, "restarts": self.restarts,
                "resizes": self.resizes, "preemptions": self.preemptions,
                "lost_steps": self.lost_steps, "lost_epochs": self.lost_epochs}

    def note_preemption(self) -> int:
        self.preemptions += 1
        return self.preemptions

    def snapshot(self) -> tuple:
        return self.latest, list(self.epochs), self.restarts

    def worker_nodes(self) -> list[str]:
        return [self.nodes[rank] for rank in sorted(self.nodes)]

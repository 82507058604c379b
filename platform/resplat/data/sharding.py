"""How a data set splits over training workers: batches per epoch, validation shards (no torch)."""

from __future__ import annotations

import numpy as np


def train_batches_per_epoch(num_images: int, num_workers: int, batch_size: int) -> int:
    """Batches each worker's train loader yields per epoch: ceil(N / world) samples (the
    distributed order pads), full batches only (train loaders drop the last partial batch)."""
    return -(-num_images // num_workers) // batch_size


def validation_shard(num_samples: int, rank: int, world_size: int) -> np.ndarray:
    """Sample indices rank ``rank`` reads in distributed sequential order.

    Rank r gets samples r, r + world_size, r + 2 * world_size, ... (the same
    interleaving as torch's DistributedSampler) but without its padding: the
    shards are disjoint and their union is the whole set, so shard sizes differ
    by at most one.
    """
    return np.arange(rank, num_samples, world_size, dtype=np.uint64)

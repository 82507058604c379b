"""FFCV loaders for training and validation on .beton files written by resplat."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from resplat.data.compile_cache import cache_compiled_stages
from resplat.data.pipelines import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PipelineName,
    image_pipeline,
    label_pipeline,
)
from resplat.data.sharding import validation_shard
from resplat.errors import DataError

if TYPE_CHECKING:
    from ffcv.loader import Loader

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_loader",
    "validation_shard",
]

Order = Literal["random", "quasi_random", "sequential"]

_PIPELINES = ("cifar", "imagenet")
_ORDERS = ("random", "quasi_random", "sequential")
_OS_CACHE_SHARE_OF_AVAILABLE_MEMORY = 0.5


def _available_memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _fits_in_page_cache(path: Path) -> bool:
    return path.stat().st_size < _OS_CACHE_SHARE_OF_AVAILABLE_MEMORY * _available_memory_bytes()


def _distributed_rank_and_world() -> tuple[int, int] | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


@functools.cache
def _resumable_loader_class():
    from ffcv.loader import Loader

    class ResumableLoader(Loader):
        """FFCV's Loader that can start its next epoch part-way through.

        Set ``skip_batches`` before iterating: the next epoch keeps its full sample order (seed and
        epoch decide it) but begins after that many batches, which are neither read nor decoded.
        """

        skip_batches = 0

        def next_traversal_order(self):
            order = super().next_traversal_order()
            skip, self.skip_batches = self.skip_batches, 0
            if not skip:
                return order
            # Cut at the full epoch's end first: a dropped last partial batch must stay dropped.
            return order[: len(self) * self.batch_size][skip * self.batch_size :]

    return ResumableLoader


def _check_arguments(
    path: Path, pipeline: str, order: str, batch_size: int, resolution: int, num_workers: int
) -> None:
    if pipeline not in _PIPELINES:
        raise DataError(f"{path}: pipeline must be one of {list(_PIPELINES)}, not {pipeline!r}")
    if order not in _ORDERS:
        raise DataError(f"{path}: order must be one of {list(_ORDERS)} or None, not {order!r}")
    for name, value in (
        ("batch_size", batch_size),
        ("resolution", resolution),
        ("num_workers", num_workers),
    ):
        if not isinstance(value, int) or value < 1:
            raise DataError(f"{path}: {name} must be a positive integer, not {value!r}")


def _read_beton(path: Path):
    from ffcv.reader import Reader

    if not path.is_file():
        raise DataError(f"{path}: no such .beton file")
    try:
        return Reader(str(path))
    except Exception as error:  # noqa: BLE001 - FFCV raises assorted types for foreign files
        raise DataError(f"{path}: not a readable FFCV .beton file ({error})") from None


def _check_fields(path: Path, reader, pipeline: str, resolution: int) -> None:
    if list(reader.handlers) != ["image", "label"]:
        raise DataError(
            f"{path}: expected the fields ['image', 'label'], found {list(reader.handlers)}"
        )
    if reader.num_samples == 0:
        raise DataError(f"{path}: the file holds no samples")
    if pipeline == "cifar":
        image = reader.metadata[reader.metadata.dtype.names[0]]
        heights, widths = image["height"], image["width"]
        if {heights.min(), heights.max(), widths.min(), widths.max()} != {resolution}:
            raise DataError(
                f"{path}: the cifar pipeline needs every image at {resolution}x{resolution}, found "
                f"heights {heights.min()}..{heights.max()} and widths {widths.min()}..{widths.max()}; "
                "pass the images' resolution or use pipeline='imagenet', which crops and resizes"
            )


def build_loader(
    path: Path,
    *,
    pipeline: PipelineName,
    train: bool,
    batch_size: int,
    resolution: int,
    num_workers: int = 2,
    distributed: bool = False,
    seed: int = 0,
    order: Order | None = None,
    os_cache: bool | None = None,
    device: torch.device | str = "cpu",
    channels_last: bool = True,
    drop_last: bool | None = None,
) -> Loader:
    """An FFCV Loader yielding ``(images, labels)`` batches from a resplat .beton.

    images: float32 NCHW, normalised with the pipeline's mean/std, in
    channels_last memory format when asked, on ``device``; labels: int64, 1-D.
    ``len(loader)`` is the number of batches per epoch. Setting ``loader.skip_batches = k``
    makes the next epoch start at its batch k (resuming a mid-epoch checkpoint).

    Pipelines:
      - "cifar": every image must be ``resolution`` square (32 for CIFAR-10).
        train: 4-pixel zero padding + random crop (FFCV RandomTranslate) and a
        horizontal flip, as in He et al. 2016; val: none.
      - "imagenet": train: random-resized crop decoded straight to
        ``resolution`` (scale (0.08, 1), ratio (3/4, 4/3), the torchvision/FFCV
        standard rather than the paper's shorter-side jitter) and a flip; val:
        center crop of 224/256 of the shorter side, resized to ``resolution``.
      Normalisation runs inside FFCV's compiled pipeline on CPU; on another
      device the uint8 batch is copied (non-blocking) and normalised there.

    Defaults: ``order`` random for train, sequential otherwise; ``drop_last``
    True for train, False otherwise; ``os_cache`` True when the file is smaller
    than half the available memory (page cache, shared between processes), else
    FFCV's per-process page cache (then prefer ``order="quasi_random"``).

    Note that FFCV sets numba's and torch's thread counts to ``num_workers``.

    Distributed (``distributed=True``; rank and world size come from the
    initialised torch.distributed process group):
      - "random": FFCV's distributed mode (torch DistributedSampler, shuffled by
        ``seed`` and the epoch, identical on every rank). It pads the order by
        repeating a few samples so every rank gets ceil(N / world) samples and
        the same number of batches; fine for training.
      - "sequential" (validation): FFCV 1.0.2 would use DistributedSampler
        without shuffling, which interleaves (rank r gets r, r + world, ...) and
        pads by repeating samples 0, 1, ... on the last ranks, so up to
        world - 1 images would be counted twice. Instead each rank reads
        ``validation_shard(N, rank, world)``: the same interleaving without
        padding, so every image is seen exactly once across ranks. Shards (and
        so batch counts) may differ by one: sum correct/seen counts over ranks
        once at the end (all_reduce) and run no collective per batch (evaluate
        the bare module, not a DDP wrapper).
      - "quasi_random" is not supported by FFCV in distributed mode (DataError).
    """
    path = Path(path)
    order = order or ("random" if train else "sequential")
    _check_arguments(path, pipeline, order, batch_size, resolution, num_workers)
    device = torch.device(device)
    drop_last = train if drop_last is None else drop_last

    cache_compiled_stages()  # before FFCV's first import
    from ffcv.loader import OrderOption

    reader = _read_beton(path)
    _check_fields(path, reader, pipeline, resolution)

    indices = None
    ffcv_distributed = False
    if distributed:
        rank_and_world = _distributed_rank_and_world()
        if rank_and_world is None:
            raise DataError(
                f"{path}: distributed=True needs an initialised torch.distributed process group "
                "(Ray Train's TorchTrainer sets one up); call init_process_group first"
            )
        if order == "quasi_random":
            raise DataError(
                f"{path}: FFCV 1.0.2 does not support order='quasi_random' with distributed=True; "
                "use order='random' (with os_cache=True if the file fits in memory)"
            )
        if order == "sequential":
            indices = validation_shard(int(reader.num_samples), *rank_and_world)
        else:
            ffcv_distributed = True

    if os_cache is None:
        os_cache = _fits_in_page_cache(path)

    order_option = {
        "random": OrderOption.RANDOM,
        "quasi_random": OrderOption.QUASI_RANDOM,
        "sequential": OrderOption.SEQUENTIAL,
    }[order]
    return _resumable_loader_class()(
        str(path),
        batch_size=batch_size,
        num_workers=num_workers,
        os_cache=os_cache,
        order=order_option,
        distributed=ffcv_distributed,
        seed=seed,
        indices=indices,
        drop_last=drop_last,
        pipelines={
            "image": image_pipeline(
                pipeline,
                train=train,
                resolution=resolution,
                device=device,
                channels_last=channels_last,
            ),
            "label": label_pipeline(device),
        },
    )

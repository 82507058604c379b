"""Data preparation (.beton files) and FFCV loaders for resplat.

FFCV itself is imported only when a file is written or a loader built: importing
it costs several seconds (numba compilation).
"""

from resplat.data.beton import (
    BetonInfo,
    WriteOptions,
    cached_beton,
    count_images,
    list_image_folder,
    read_beton_info,
    sidecar_path,
    write_beton,
)
from resplat.data.cifar10 import CIFAR10_CLASSES, ensure_cifar10
from resplat.data.loaders import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_loader,
    train_batches_per_epoch,
    validation_shard,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BetonInfo",
    "WriteOptions",
    "build_loader",
    "cached_beton",
    "count_images",
    "ensure_cifar10",
    "list_image_folder",
    "read_beton_info",
    "sidecar_path",
    "train_batches_per_epoch",
    "validation_shard",
    "write_beton",
]

"""Data preparation (.beton files) and FFCV loaders for resplat.

Names load on first use: the loaders import torch and FFCV (seconds, numba
compilation), the .beton writer imports OpenCV, and a command must be able to
reject a missing folder before paying for any of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resplat.lazy import lazy_attributes

if TYPE_CHECKING:
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
    )
    from resplat.data.sharding import train_batches_per_epoch, validation_shard

_HOME = {
    "resplat.data.beton": ("BetonInfo", "WriteOptions", "cached_beton", "count_images", "list_image_folder",
                           "read_beton_info", "sidecar_path", "write_beton"),
    "resplat.data.cifar10": ("CIFAR10_CLASSES", "ensure_cifar10"),
    "resplat.data.loaders": ("CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "build_loader"),
    "resplat.data.sharding": ("train_batches_per_epoch", "validation_shard"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}

__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "BetonInfo",
    "WriteOptions", "build_loader", "cached_beton", "count_images", "ensure_cifar10", "list_image_folder",
    "read_beton_info", "sidecar_path", "train_batches_per_epoch", "validation_shard", "write_beton",
]


__getattr__ = lazy_attributes(__name__, globals(), _MODULE_OF)

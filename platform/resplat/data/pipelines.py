"""FFCV operation lists for the "cifar" and "imagenet" pipelines.

Per-pixel work (decode, crop, flip, uint8 -> normalised float32) stays in FFCV's
numba-compiled stages on CPU: done in torch on the CPU it costs 1.4-3x the
throughput. On an accelerator the uint8 batch is copied over first and
normalised there (FFCV's own GPU normaliser needs cupy, so a thin torch
operation does it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import torch

PipelineName = Literal["cifar", "imagenet"]

# Per-channel RGB statistics on the 0-255 scale.
CIFAR10_MEAN = (125.307, 122.961, 113.8575)  # (0.4914, 0.4822, 0.4465) * 255
CIFAR10_STD = (62.9932, 62.0887, 66.7048)  # (0.2470, 0.2435, 0.2616) * 255, per-pixel std
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # (0.485, 0.456, 0.406) * 255
IMAGENET_STD = (58.395, 57.12, 57.375)  # (0.229, 0.224, 0.225) * 255

CIFAR_PADDING = 4
# Inception-style random-resized-crop ranges, as torchvision and FFCV default to.
# (He et al. 2016 used shorter-side scale jitter in [256, 480] + 224 crops instead;
# random-resized crops are the modern standard and train better at equal epochs.)
IMAGENET_CROP_SCALE = (0.08, 1.0)
IMAGENET_CROP_RATIO = (3 / 4, 4 / 3)
IMAGENET_CENTER_CROP_RATIO = 224 / 256

_STATISTICS = {"cifar": (CIFAR10_MEAN, CIFAR10_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


@functools.cache
def normalize_on_device_class():
    """The FFCV operation class (built on first use: importing ffcv is slow)."""
    from ffcv.pipeline.operation import Operation

    class NormalizeOnDevice(Operation):
        """uint8 NCHW (channels_last view) on an accelerator -> normalised float32."""

        def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool):
            super().__init__()
            self.mean = mean
            self.std = std
            self.channels_last = channels_last

        def generate_code(self):
            mean_std: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
            channels_last = self.channels_last

            def normalize(images: torch.Tensor, _):
                if images.device not in mean_std:
                    shape = (1, 3, 1, 1)
                    mean_std[images.device] = (
                        torch.tensor(self.mean, device=images.device).view(shape),
                        torch.tensor(self.std, device=images.device).view(shape),
                    )
                mean, std = mean_std[images.device]
                result = (images.float() - mean) / std
                memory_format = torch.channels_last if channels_last else torch.contiguous_format
                return result.contiguous(memory_format=memory_format)

            return normalize

        def declare_state_and_memory(self, previous_state):
            return replace(previous_state, dtype=torch.float32), None

    return NormalizeOnDevice


def image_pipeline(
    pipeline: PipelineName,
    *,
    train: bool,
    resolution: int,
    device: torch.device,
    channels_last: bool,
) -> list:
    from ffcv.fields.rgb_image import (
        CenterCropRGBImageDecoder,
        RandomResizedCropRGBImageDecoder,
        SimpleRGBImageDecoder,
    )
    from ffcv.transforms import (
        NormalizeImage,
        RandomHorizontalFlip,
        RandomTranslate,
        ToDevice,
        ToTensor,
        ToTorchImage,
    )

    size = (resolution, resolution)
    if pipeline == "cifar":
        # Pad 4 + random 32x32 crop == translate by up to 4 px filling with black.
        augment = [RandomTranslate(padding=CIFAR_PADDING, fill=(0, 0, 0)), RandomHorizontalFlip()]
        ops: list = [SimpleRGBImageDecoder(), *(augment if train else [])]
    elif train:
        ops = [
            RandomResizedCropRGBImageDecoder(
                size, scale=IMAGENET_CROP_SCALE, ratio=IMAGENET_CROP_RATIO
            ),
            RandomHorizontalFlip(),
        ]
    else:
        ops = [CenterCropRGBImageDecoder(size, ratio=IMAGENET_CENTER_CROP_RATIO)]

    mean, std = _STATISTICS[pipeline]
    if device.type == "cpu":
        normalize = NormalizeImage(np.array(mean), np.array(std), np.float32)
        return [*ops, normalize, ToTensor(), ToTorchImage(channels_last=channels_last)]
    normalize_on_device = normalize_on_device_class()(mean, std, channels_last)
    return [
        *ops,
        ToTensor(),
        ToDevice(device, non_blocking=True),
        ToTorchImage(channels_last=True),  # a view; the layout is settled by the normaliser
        normalize_on_device,
    ]


def label_pipeline(device: torch.device) -> list:
    from ffcv.fields.basics import IntDecoder
    from ffcv.transforms import Squeeze, ToDevice, ToTensor

    ops = [IntDecoder(), ToTensor(), Squeeze(1)]
    if device.type != "cpu":
        ops.append(ToDevice(device, non_blocking=True))
    return ops

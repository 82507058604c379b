"""The ResNet family of He et al. 2015 ("Deep Residual Learning for Image Recognition").

    from resplat.models import resnet, check_architecture
    model = resnet("cifar", 56)                      # option A, 10 classes
    model = resnet("imagenet", 50, num_classes=1000)  # option B, torchvision-compatible

`check_architecture` and the constants import without torch; `resnet` and the model
classes load torch on first use, so spec validation stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resplat.lazy import lazy_attributes
from resplat.models.architecture import (
    BOTTLENECK_STRIDES,
    CIFAR_DEPTHS,
    DEFAULT_SHORTCUT,
    FAMILIES,
    IMAGENET_DEPTHS,
    SHORTCUTS,
    check_architecture,
)

if TYPE_CHECKING:
    from resplat.models.networks import CifarResNet, ImageNetResNet, resnet
    from resplat.models.summary import ArchitectureSummary, StageRow, summarize

_LAZY = {
    "resnet": "resplat.models.networks",
    "CifarResNet": "resplat.models.networks",
    "ImageNetResNet": "resplat.models.networks",
    "summarize": "resplat.models.summary",
    "ArchitectureSummary": "resplat.models.summary",
    "StageRow": "resplat.models.summary",
}

__all__ = [
    "BOTTLENECK_STRIDES",
    "CIFAR_DEPTHS",
    "DEFAULT_SHORTCUT",
    "FAMILIES",
    "IMAGENET_DEPTHS",
    "SHORTCUTS",
    "ArchitectureSummary",
    "CifarResNet",
    "ImageNetResNet",
    "StageRow",
    "check_architecture",
    "resnet",
    "summarize",
]


__getattr__ = lazy_attributes(__name__, globals(), _LAZY)

"""The shortcut connections of paper sec. 3.3 / 4.1: options A, B, C and none (plain)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resplat.models.architecture import ShortcutKind


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: an identity that subsamples by `stride` and appends zero channels.

    It has no parameters, so option-A nets have exactly the parameters of the plain net.
    Subsampling x[..., ::2, ::2] yields ceil(H/2) like the stride-2 convs of the branch,
    so the shapes agree for odd sizes too.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("a zero-padding shortcut cannot reduce the number of channels")
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            # Pad spec runs from the last dim backwards: (W, W, H, H, C_before, C_after).
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Options B/C: 1x1 conv + BN. Indices 0/1 match torchvision's `downsample.0/1` keys."""
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


def make_shortcut(
    kind: ShortcutKind, in_channels: int, out_channels: int, stride: int
) -> nn.Module | None:
    """The shortcut of one block; None means the block has none (a plain net)."""
    if kind == "none":
        return None
    shape_changes = stride != 1 or in_channels != out_channels
    if kind == "C" or (kind == "B" and shape_changes):
        return projection(in_channels, out_channels, stride)
    if kind == "A" and shape_changes:
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return nn.Identity()

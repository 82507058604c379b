"""Residual building blocks (paper Fig. 5): basic (two 3x3) and bottleneck (1x1-3x3-1x1).

Module names (conv1, bn1, ..., downsample) follow torchvision so state dicts line up.
`downsample` holds the shortcut whatever it is (identity, zero padding or projection);
it is None only in plain nets, whose blocks output relu(bn(F(x))) with no addition.
"""

from __future__ import annotations

import torch
from torch import nn

from resplat.models.architecture import BottleneckStride, ShortcutKind
from resplat.models.shortcuts import conv1x1, conv3x3, make_shortcut


class BasicBlock(nn.Module):
    """Two 3x3 convs; the downsampling block strides its first conv."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, shortcut: ShortcutKind) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = conv3x3(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride)

    @property
    def residual_bn(self) -> nn.BatchNorm2d:
        """The last BN of the residual branch (zeroed by zero_init_residual)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            out = out + self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4).

    `stride_on` picks which conv downsamples: "1x1" is the paper's original (the first
    1x1 conv strides, which gives Table 1's FLOPs); "3x3" is the torchvision/NVIDIA
    "ResNet v1.5" placement, which does not discard 3/4 of the input before any 3x3
    conv sees it.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        shortcut: ShortcutKind,
        stride_on: BottleneckStride = "3x3",
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        self.conv1 = conv1x1(in_channels, width, stride_1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride_3x3)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride)

    @property
    def residual_bn(self) -> nn.BatchNorm2d:
        """The last BN of the residual branch (zeroed by zero_init_residual)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            out = out + self.downsample(x)
        return self.relu(out)

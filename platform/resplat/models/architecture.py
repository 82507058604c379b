"""Which ResNet architectures exist: the depths, shortcut options and stride placements
of He et al. 2015, "Deep Residual Learning for Image Recognition".

This module imports no torch on purpose: job specs call `check_architecture` from a
pydantic validator, and validating a spec must stay cheap.
"""

from __future__ import annotations

from typing import Literal

Family = Literal["cifar", "imagenet"]
ShortcutKind = Literal["A", "B", "C", "none"]
BottleneckStride = Literal["1x1", "3x3"]
BlockKind = Literal["basic", "bottleneck"]

FAMILIES: tuple[str, ...] = ("cifar", "imagenet")
CIFAR_DEPTHS: tuple[int, ...] = (20, 32, 44, 56, 110, 1202)
IMAGENET_DEPTHS: tuple[int, ...] = (18, 34, 50, 101, 152)
SHORTCUTS: tuple[str, ...] = ("A", "B", "C", "none")
BOTTLENECK_STRIDES: tuple[str, ...] = ("1x1", "3x3")

# The paper uses option A on CIFAR (sec. 4.2) and option B for its ImageNet results.
DEFAULT_SHORTCUT: dict[str, ShortcutKind] = {"cifar": "A", "imagenet": "B"}

# Paper Table 1: residual block type and number of blocks in conv2_x .. conv5_x.
IMAGENET_LAYOUTS: dict[int, tuple[BlockKind, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _quoted_choices(choices: tuple[str, ...]) -> str:
    quoted = [repr(choice) for choice in choices]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def is_cifar_depth(depth: int) -> bool:
    """CIFAR nets have 6n+2 layers with n >= 1 basic blocks per stage."""
    return depth >= 8 and (depth - 2) % 6 == 0


def cifar_blocks_per_stage(depth: int) -> int:
    """The paper's n for a 6n+2-layer CIFAR net."""
    return (depth - 2) // 6


def resolve_shortcut(family: str, shortcut: str | None) -> ShortcutKind:
    """The shortcut option to build: `shortcut` itself, or the family's paper default."""
    return DEFAULT_SHORTCUT[family] if shortcut is None else shortcut  # type: ignore[return-value]


def check_architecture(
    family: str,
    depth: int,
    shortcut: str | None = None,
    bottleneck_stride: str = "3x3",
) -> None:
    """Raise ValueError, saying what is allowed, unless the arguments name a ResNet.

    `shortcut=None` stands for the family's default (A for CIFAR, B for ImageNet).
    `bottleneck_stride` is checked for every family even though only bottleneck
    models (ImageNet 50/101/152) use it, so a typo never passes silently.
    """
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is unknown: use {_quoted_choices(FAMILIES)}")
    if shortcut is not None and shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut {shortcut!r} is unknown: use {_quoted_choices(SHORTCUTS)}")
    if bottleneck_stride not in BOTTLENECK_STRIDES:
        raise ValueError(
            f"bottleneck_stride {bottleneck_stride!r} is unknown: "
            f"use {_quoted_choices(BOTTLENECK_STRIDES)}"
        )
    if isinstance(depth, bool) or not isinstance(depth, int):
        # ValueError, not TypeError: pydantic validators only turn ValueError into a message.
        raise ValueError(  # noqa: TRY004
            f"depth must be an integer, got {depth!r}"
        )
    if family == "cifar" and not is_cifar_depth(depth):
        examples = ", ".join(str(d) for d in CIFAR_DEPTHS)
        raise ValueError(f"depth {depth} is not a CIFAR depth: use 6n+2 ({examples}, ...)")
    if family == "imagenet" and depth not in IMAGENET_LAYOUTS:
        allowed = ", ".join(str(d) for d in IMAGENET_DEPTHS)
        raise ValueError(f"depth {depth} is not an ImageNet depth: allowed {allowed}")

"""The paper's test-time views: 10-crop (4 corners + centre, and their flips) and several scales.

Scores (softmax probabilities) are averaged over every view of an image, as in
He et al. 2015, section 3.4.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def ten_crop(images: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Four corners and the centre of NCHW `images`, then the same five flipped horizontally."""
    height, width = images.shape[-2:]
    if size > min(height, width):
        raise ValueError(f"crop {size} is larger than the {height}x{width} images")
    top, left = (height - size) // 2, (width - size) // 2
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size), (top, left)]
    crops = [images[..., y:y + size, x:x + size] for y, x in corners]
    return crops + [crop.flip(-1) for crop in crops]


def evaluate_views(
    model: nn.Module, batches: Iterable[tuple[list[torch.Tensor], torch.Tensor]], *, crop: int | None
) -> dict[str, float]:
    """Top-1/top-5 accuracy over batches of (one image tensor per scale, labels).

    crop=None runs each scale's whole image (the network is fully convolutional up to
    its adaptive pooling); crop=N takes the 10 crops of N pixels from each scale.
    """
    model.eval()
    correct1 = correct5 = seen = 0
    with torch.no_grad():
        for per_scale, labels in batches:
            scores = 0
            for images in per_scale:
                views = ten_crop(images, crop) if crop else [images]
                for view in views:
                    scores = scores + model(view.contiguous(memory_format=torch.channels_last)).softmax(dim=1)
            top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
            hits = top5 == labels[:, None]
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
            seen += labels.numel()
    return {"eval_top1": correct1 / max(seen, 1), "eval_top5": correct5 / max(seen, 1), "eval_images": seen}

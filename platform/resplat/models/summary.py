"""Per-stage architecture summary: layers, output shape, parameters and multiply-adds.

Counts come from one forward pass with hooks, run on the meta device so that no
arithmetic is done and even ResNet-1202 or ResNet-152 at 224x224 is instant. As in
the paper, FLOPs are multiply-adds of conv and fully connected layers only (BN, ReLU,
pooling and additions are not counted), for one image.

Stages are the model's top-level children: everything before `layer1` is the "stem",
each `layerN` is a stage, everything after the last stage is the "head". This works for
resplat models and torchvision ResNets alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

_STAGE_NAME = re.compile(r"layer\d+")
_COUNTED = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class StageRow:
    name: str
    layers: int  # weighted conv/fc layers on the main path (what the paper's depth counts)
    output_shape: tuple[int, ...]  # per image, e.g. (64, 56, 56) or (num_classes,)
    params: int
    macs: int  # multiply-adds for one image


@dataclass(frozen=True)
class ArchitectureSummary:
    input_shape: tuple[int, ...]  # per image, (C, H, W)
    rows: tuple[StageRow, ...]
    total_params: int

    @property
    def total_layers(self) -> int:
        return sum(row.layers for row in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(row.macs for row in self.rows)


def _group_children(model: nn.Module) -> dict[str, str]:
    """Map each top-level child name to its stage name (stem / layerN / head)."""
    groups: dict[str, str] = {}
    seen_stage = False
    for name, _ in model.named_children():
        if _STAGE_NAME.fullmatch(name):
            groups[name] = name
            seen_stage = True
        else:
            groups[name] = "head" if seen_stage else "stem"
    return groups


def _is_shortcut(qualified_name: str) -> bool:
    # Projection shortcuts are not layers in the paper's depth count (but their FLOPs are).
    return "downsample" in qualified_name.split(".")


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    per_output = output[0].numel()  # one image of the batch
    if isinstance(module, nn.Conv2d):
        kernel_h, kernel_w = module.kernel_size
        return per_output * (module.in_channels // module.groups) * kernel_h * kernel_w
    assert isinstance(module, nn.Linear)
    return per_output * module.in_features


def summarize(
    model: nn.Module, resolution: int | tuple[int, int], in_channels: int = 3
) -> ArchitectureSummary:
    """Summarise `model` for one `in_channels` x H x W image (`resolution` = H or (H, W))."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    if height < 1 or width < 1:
        raise ValueError(f"resolution must be positive, got {height}x{width}")
    groups = _group_children(model)
    stage_names = list(dict.fromkeys(groups.values()))
    macs = dict.fromkeys(stage_names, 0)
    layers = dict.fromkeys(stage_names, 0)
    params = dict.fromkeys(stage_names, 0)
    shapes: dict[str, tuple[int, ...]] = {}

    def record_macs(stage: str):
        def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            macs[stage] += _macs(module, output)

        return hook

    def record_shape(stage: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            # Children run in order, so the stage's last call leaves its output shape.
            shapes[stage] = tuple(output.shape[1:])

        return hook

    handles = []
    for child_name, child in model.named_children():
        stage = groups[child_name]
        params[stage] += sum(p.numel() for p in child.parameters())
        handles.append(child.register_forward_hook(record_shape(stage)))
        for name, module in child.named_modules(prefix=child_name):
            if isinstance(module, _COUNTED):
                handles.append(module.register_forward_hook(record_macs(stage)))
                if not _is_shortcut(name):
                    layers[stage] += 1

    meta_state = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    }
    image = torch.empty(1, in_channels, height, width, device="meta")
    was_training = model.training
    model.eval()  # batch-1 BN in train mode would refuse 1x1 feature maps
    try:
        with torch.no_grad():
            functional_call(model, meta_state, (image,))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    rows = tuple(
        StageRow(name, layers[name], shapes.get(name, ()), params[name], macs[name])
        for name in stage_names
    )
    total_params = sum(p.numel() for p in model.parameters())
    return ArchitectureSummary((in_channels, height, width), rows, total_params)

"""A rough estimate of a worker's accelerator memory for training, for `submit --dry-run`.

weights + gradients + SGD momentum (fp32), plus the outputs of every leaf module kept
for backward (in the autocast dtype), plus 20% for workspaces and the allocator.
Measured with one forward pass on the meta device: nothing is allocated.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

ACTIVATION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
OVERHEAD = 1.2


def activation_elements(model: nn.Module, resolution: int) -> int:
    """Elements of all leaf-module outputs for one image."""
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        total += output[0].numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    state = {n: torch.empty_like(t, device="meta") for n, t in [*model.named_parameters(), *model.named_buffers()]}
    try:
        with torch.no_grad():
            functional_call(model, state, (torch.empty(1, 3, resolution, resolution, device="meta"),))
    finally:
        for handle in handles:
            handle.remove()
    return total


def estimate_training_bytes(model: nn.Module, *, batch_size: int, resolution: int, precision: str) -> int:
    params = sum(p.numel() for p in model.parameters())
    activations = activation_elements(model, resolution) * batch_size * ACTIVATION_BYTES[precision]
    return int(OVERHEAD * (3 * 4 * params + activations))

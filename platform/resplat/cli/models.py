"""`resplat models ...`: inspect the ResNet architectures resplat can build."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from resplat.cli.errors import reports_errors
from resplat.errors import InputError
from resplat.models.architecture import check_architecture, resolve_shortcut

app = typer.Typer(
    help="Inspect the ResNet architectures of He et al. 2015 that resplat can train.",
    no_args_is_help=True,
)

DEFAULT_RESOLUTION = {"cifar": 32, "imagenet": 224}
DEFAULT_NUM_CLASSES = {"cifar": 10, "imagenet": 1000}


@app.callback()
def models() -> None:
    """Inspect the ResNet architectures of He et al. 2015 that resplat can train."""
    # A callback keeps `arch` a named subcommand even while it is the only one.


def _human(count: int) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.2f}{suffix}"
    return str(count)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(size) for size in shape)


@app.command()
@reports_errors
def arch(
    depth: Annotated[int, typer.Option(help="Number of layers, e.g. 20/56/110 (cifar) or 50.")],
    family: Annotated[str, typer.Option(help="cifar (6n+2 layers) or imagenet.")] = "cifar",
    shortcut: Annotated[
        str | None,
        typer.Option(help="A, B, C or none (plain net). Default: A for cifar, B for imagenet."),
    ] = None,
    bottleneck_stride: Annotated[
        str, typer.Option(help="Where bottlenecks downsample: 3x3 (v1.5) or 1x1 (paper).")
    ] = "3x3",
    num_classes: Annotated[
        int | None, typer.Option(help="Output classes. Default: 10 cifar, 1000 imagenet.")
    ] = None,
    resolution: Annotated[
        int | None, typer.Option(help="Input height = width. Default: 32 cifar, 224 imagenet.")
    ] = None,
) -> None:
    """Print the per-stage layers, output shapes, parameters and multiply-adds of a ResNet."""
    try:
        check_architecture(family, depth, shortcut, bottleneck_stride)
    except ValueError as error:
        raise InputError(str(error)) from error
    num_classes = DEFAULT_NUM_CLASSES[family] if num_classes is None else num_classes
    resolution = DEFAULT_RESOLUTION[family] if resolution is None else resolution
    if num_classes < 1:
        raise InputError(f"--num-classes must be at least 1, got {num_classes}")
    if resolution < 1:
        raise InputError(f"--resolution must be at least 1, got {resolution}")

    # Torch loads only once the input is known to be good.
    import torch

    from resplat.models.networks import resnet
    from resplat.models.summary import summarize

    with torch.device("meta"):  # shapes only: no memory for weights, no init cost
        model = resnet(family, depth, shortcut, num_classes, bottleneck_stride)
    summary = summarize(model, resolution)

    kind = resolve_shortcut(family, shortcut)
    default_note = " (default)" if shortcut is None else ""
    stride_note = f", bottleneck stride {bottleneck_stride}" if family == "imagenet" else ""
    table = Table(
        title=f"ResNet-{depth} {family}, shortcut {kind}{default_note}{stride_note}, "
        f"{resolution}x{resolution} input, {num_classes} classes"
    )
    table.add_column("Stage")
    table.add_column("Layers", justify="right")
    table.add_column("Output", justify="right")
    table.add_column("Params", justify="right")
    table.add_column("Mult-adds", justify="right")
    for row in summary.rows:
        table.add_row(
            row.name, str(row.layers), _shape(row.output_shape), f"{row.params:,}", _human(row.macs)
        )
    table.add_section()
    table.add_row(
        "total",
        str(summary.total_layers),
        "",
        f"{summary.total_params:,}",
        _human(summary.total_macs),
        style="bold",
    )
    Console().print(table)

"""`resplat models ...`: the ResNet architectures resplat can build, and the MLflow model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from resplat.cli.errors import reports_errors
from resplat.errors import InputError
from resplat.models.architecture import check_architecture, resolve_shortcut

app = typer.Typer(
    help="ResNet architectures resplat can train, and the registered models it trained.",
    no_args_is_help=True,
)

DEFAULT_RESOLUTION = {"cifar": 32, "imagenet": 224}
DEFAULT_NUM_CLASSES = {"cifar": 10, "imagenet": 1000}


@app.callback()
def models() -> None:
    """ResNet architectures resplat can train, and the registered models it trained."""


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


# ---------------------------------------------------------------- the model registry

TrackingUri = Annotated[str | None, typer.Option(help="Default: the embedded store under .resplat/.")]


def _uri(tracking_uri: str | None) -> str:
    from resplat import paths

    return tracking_uri or paths.default_tracking_uri()


def _when(ms: int | None) -> str:
    from datetime import datetime, timezone

    return "" if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


@app.command("list")
@reports_errors
def list_command(tracking_uri: TrackingUri = None) -> None:
    """List the registered models: newest version, aliases, number of versions."""
    from resplat.tracking.registry import list_models

    table = Table(title="registered models")
    for column in ("Model", "Latest", "Aliases", "Versions", "Updated (UTC)"):
        table.add_column(column)
    for model in list_models(_uri(tracking_uri)):
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(model.aliases.items()))
        table.add_row(model.name, model.latest_version or "", aliases, str(model.versions), _when(model.updated_ms))
    Console().print(table)


@app.command()
@reports_errors
def show(
    name: Annotated[str, typer.Argument(help="A registered model's name.")],
    tracking_uri: TrackingUri = None,
) -> None:
    """Show a registered model's versions with their aliases, runs and final accuracy."""
    from resplat.tracking.registry import show_model

    table = Table(title=f"model {name}")
    for column in ("Version", "Aliases", "val top-1", "val top-5", "Run", "Created (UTC)"):
        table.add_column(column, overflow="fold")  # run ids whole, if on two lines
    for v in show_model(_uri(tracking_uri), name):
        table.add_row(v.version, ", ".join(v.aliases), *(f"{v.metrics[m]:.2%}" if m in v.metrics else ""
                                                         for m in ("val_top1", "val_top5")),
                      v.run_id or "", _when(v.created_ms))
    Console().print(table)


@app.command()
@reports_errors
def promote(
    name: Annotated[str, typer.Argument(help="A registered model's name.")],
    version: Annotated[str, typer.Argument(help="The version to point the alias at.")],
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    tracking_uri: TrackingUri = None,
) -> None:
    """Point an alias (default: champion) of a registered model at one of its versions."""
    from resplat.tracking.registry import promote as move_alias

    previous = move_alias(_uri(tracking_uri), name, version, alias)
    before = f" (was version {previous})" if previous else ""
    Console().print(f"{name}@{alias} -> version {int(version)}{before}")


@app.command()
@reports_errors
def predict(
    model: Annotated[str, typer.Argument(help="NAME (newest version), NAME@alias or NAME/version.")],
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, ...).")],
    top: Annotated[int, typer.Option(help="How many classes to show per image.")] = 5,
    tracking_uri: TrackingUri = None,
) -> None:
    """Classify images with a registered model: its eval transform, then the top classes by name."""
    from resplat.tracking.predict import predict as classify

    if top < 1:
        raise InputError(f"--top must be at least 1, got {top}")
    model_uri, predictions = classify(_uri(tracking_uri), model, images, top=top)
    console = Console()
    console.print(f"model {model_uri}")
    for prediction in predictions:
        ranked = "  ".join(f"{name} {p:.1%}" for name, p in prediction.top)
        console.print(f"{prediction.image}: {ranked}", soft_wrap=True, highlight=False)


# ---------------------------------------------------------------- a run's epoch models


@app.command()
@reports_errors
def epochs(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="An MLflow run id.")],
    tracking_uri: TrackingUri = None,
) -> None:
    """List a run's epoch models (one per checkpointed epoch) with their accuracy; register one with
    `resplat models register RUN --best --name NAME`."""
    from resplat.tracking.registry import epoch_models

    table = Table(title=f"epoch models of run {run_id}")
    for column in ("Epoch", "val top-1", "val top-5", "Model URI", "Registered as"):
        table.add_column(column, overflow="fold")
    for view in epoch_models(_uri(tracking_uri), run_id):
        table.add_row(str(view.epoch), *(f"{view.metrics[m]:.2%}" if m in view.metrics else ""
                                         for m in ("val_top1", "val_top5")),
                      view.model_uri, ", ".join(view.registered))
    Console().print(table)


@app.command()
@reports_errors
def register(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="An MLflow run id.")],
    name: Annotated[str, typer.Option(help="The registered model to add a version to (created if new).")],
    best: Annotated[bool, typer.Option("--best", help="The epoch whose --metric is best.")] = False,
    epoch: Annotated[int | None, typer.Option(help="This epoch's model instead.")] = None,
    metric: Annotated[str, typer.Option(help="What --best compares.")] = "val_top1",
    mode: Annotated[str, typer.Option(help="max (accuracy) or min (a loss).")] = "max",
    tracking_uri: TrackingUri = None,
) -> None:
    """Register one of a run's epoch models: the best by a metric, or a given epoch."""
    from resplat.tracking.registry import register_epoch_model

    if best == (epoch is not None):
        raise InputError("give --best or --epoch N (one of them)")
    chosen, version = register_epoch_model(_uri(tracking_uri), run_id, name, epoch=epoch, metric=metric, mode=mode)
    score = f", {metric} {chosen.metrics[metric]:.4f}" if metric in chosen.metrics else ""
    Console().print(f"registered epoch {chosen.epoch} of run {run_id} ({chosen.model_uri}{score}) as "
                    f"{name} version {version}", soft_wrap=True, highlight=False)

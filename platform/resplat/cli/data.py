"""`resplat data ...`: turn image folders into .beton files; fetch CIFAR-10."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resplat import paths
from resplat.cli.display import DataProgress, console
from resplat.cli.errors import reports_errors
from resplat.errors import InputError

app = typer.Typer(help="Prepare data sets: image folders to FFCV .beton files.", no_args_is_help=True)


@app.command()
@reports_errors
def prepare(
    src: Annotated[Path, typer.Argument(help="Image folder: one sub-folder per class.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .beton file to write.")],
    storage: Annotated[str, typer.Option(help="auto (raw for <= 64 px, else jpeg), raw, jpeg, proportional.")] = "auto",
    max_resolution: Annotated[int | None, typer.Option(help="Cap on the longest side, in pixels.")] = None,
    jpeg_quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG quality.")] = 90,
    compress_probability: Annotated[float, typer.Option(min=0, max=1, help="JPEG share (proportional).")] = 0.5,
    workers: Annotated[int, typer.Option(min=1, help="Writer processes.")] = 2,
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable images (counted) instead of stopping.")] = False,
    classes_from: Annotated[
        Path | None, typer.Option(help="A .beton whose class index to reuse (e.g. train's, for val).")
    ] = None,
) -> None:
    """Write SRC (an image folder) to a .beton, atomically, with its class index beside it."""
    from resplat.data import WriteOptions, read_beton_info, write_beton

    if out.suffix != ".beton":
        raise InputError(f"--out {out}: the output must end in .beton")
    if storage not in ("auto", "raw", "jpeg", "proportional"):
        raise InputError(f"--storage {storage}: allowed auto, raw, jpeg, proportional")
    classes = read_beton_info(classes_from).classes if classes_from else None
    options = WriteOptions(
        max_resolution=max_resolution, storage=storage, jpeg_quality=jpeg_quality,
        compress_probability=compress_probability, num_workers=workers, skip_bad=skip_bad,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with DataProgress() as bars:
        info = write_beton(src, out, options, classes=classes, progress=bars.factory(f"writing {out.name}"))
    skipped = f", skipped {info.skipped} unreadable" if info.skipped else ""
    console.print(
        f"wrote {info.path}: {info.num_images} images, {len(info.classes)} classes, {info.storage} storage"
        f"{skipped}; sha256 {info.sha256[:16]}..."
    )


@app.command("cifar10")
@reports_errors
def cifar10(
    cache: Annotated[Path | None, typer.Option(help="Data cache folder (default .resplat/datasets).")] = None,
) -> None:
    """Make CIFAR-10 available as an image folder: from ../shared, else torchvision's download."""
    from resplat.data.cifar10 import ensure_cifar10

    root = ensure_cifar10(cache or paths.datasets_dir())
    console.print(f"CIFAR-10 ready at {root}")

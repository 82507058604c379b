"""`resplat data ...`: turn image folders into .beton files; fetch CIFAR-10."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from resplat import paths
from resplat.cli.display import DataProgress, console
from resplat.cli.errors import HELP_OPTIONS, examples, reports_errors, stderr
from resplat.data.image_folder import class_folders
from resplat.errors import InputError

app = typer.Typer(
    help="Prepare data sets: image folders to FFCV .beton files; fetch CIFAR-10.",
    no_args_is_help=True, context_settings=HELP_OPTIONS,
)


@app.command(epilog=examples(
    "resplat data prepare ~/data/cifar10/train --out train.beton",
    "resplat data prepare ~/data/imagenet/val --out val.beton --classes-from train.beton --max-resolution 256",
))
@reports_errors
def prepare(
    src: Annotated[Path, typer.Argument(metavar="IMAGE_FOLDER", help="Image folder: one sub-folder per class.",
                                        show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE.beton", help="The .beton file to write.")],
    storage: Annotated[str, typer.Option(metavar="KIND",
                                         help="auto (raw for <= 64 px, else jpeg), raw, jpeg, proportional.")
                       ] = "auto",
    max_resolution: Annotated[int | None, typer.Option(metavar="PIXELS", help="Cap on the longest side.")] = None,
    jpeg_quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG quality.")] = 90,
    compress_probability: Annotated[float, typer.Option(min=0, max=1, help="JPEG share (proportional).")] = 0.5,
    workers: Annotated[int, typer.Option(min=1, help="Writer processes.")] = 2,
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable images (counted) instead of stopping.")] = False,
    classes_from: Annotated[
        Path | None, typer.Option(metavar="FILE.beton", help="A .beton whose class index to reuse (e.g. train's, "
                                                             "for val).")
    ] = None,
) -> None:
    """Write an image folder to a .beton, atomically, with its class index beside it.

    --storage trades disk for loader speed. raw keeps decoded pixels: no decoding when training, but
    width x height x 3 bytes an image. jpeg keeps them compressed, and decoding then bounds the loader
    on few cores. Measured on this project's 2-core machine (bench/results/loader.md), 224 px random-
    resized crops from images stored at most 256 px: raw 4,242 img/s (6.9x torchvision) from 168 KB
    an image, jpeg about 2,500 img/s (3.6x) from 7 KB an image (upscaled CIFAR photos; real photos
    compress less). auto picks raw up to 64 px (CIFAR), else jpeg; proportional stores a share as jpeg.
    """
    if out.suffix != ".beton":
        raise InputError(f"--out {out}: the output must end in .beton")
    if storage not in ("auto", "raw", "jpeg", "proportional"):
        raise InputError(f"--storage {storage}: allowed auto, raw, jpeg, proportional")
    folders = class_folders(src)
    from resplat.data import WriteOptions, read_beton_info, write_beton

    classes = read_beton_info(classes_from).classes if classes_from else None
    if len(folders) == 1 and classes is None:
        stderr.print(f"[yellow]warning:[/] {escape(str(src))} holds one class folder ({escape(folders[0])}): "
                     "a classifier needs two or more; expected IMAGE_FOLDER/<class>/<image>", soft_wrap=True)
    options = WriteOptions(
        max_resolution=max_resolution, storage=storage, jpeg_quality=jpeg_quality,
        compress_probability=compress_probability, num_workers=workers, skip_bad=skip_bad,
    )
    with created_folders(out.parent), DataProgress() as bars:
        info = write_beton(src, out, options, classes=classes, progress=bars.factory(f"writing {out.name}"))
    skipped = f", skipped {info.skipped} unreadable" if info.skipped else ""
    console.print(
        f"wrote {escape(str(info.path))}: {info.num_images} images, {len(info.classes)} classes, {info.storage} "
        f"storage{skipped}; sha256 {info.sha256[:16]}...", soft_wrap=True,
    )


@contextlib.contextmanager
def created_folders(folder: Path) -> Iterator[None]:
    """Create `folder` (and missing parents); remove what was created if the block fails."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out: cannot create the folder {folder} ({error.strerror})") from None
    try:
        yield
    except BaseException:
        for created in missing:  # deepest first; a folder something else wrote into stays
            with contextlib.suppress(OSError):
                created.rmdir()
        raise


@app.command("cifar10", epilog=examples("resplat data cifar10", "RESPLAT_DATA=/data resplat data cifar10"))
@reports_errors
def cifar10(
    cache: Annotated[Path | None, typer.Option(metavar="FOLDER", help="Data set folder (default: $RESPLAT_DATA, "
                                                                      "else $RESPLAT_HOME/datasets).")] = None,
) -> None:
    """Make CIFAR-10 available as an image folder: from ../shared, else torchvision's download."""
    from resplat.data.cifar10 import ensure_cifar10

    root = ensure_cifar10(cache or paths.datasets_dir())
    console.print(f"CIFAR-10 ready at {escape(str(root))}", soft_wrap=True)

"""Images/s of resplat's FFCV loaders vs torchvision ImageFolder + DataLoader.

Both sides: same augmentations, worker count, batch size, float32 normalised
output; one warm-up epoch (FFCV compiles its pipeline then, DataLoader starts
its persistent workers), then --epochs timed epochs.

  cifar:    CIFAR-10 train (50,000 real 32 px JPEGs): pad-4 random crop + flip.
  imagenet: CIFAR-10 photos upscaled to 256..500 px per side and re-encoded as
            JPEG (cached under .resplat/bench/), random-resized crops at 224 + flip.

Run from the repository root:
  .venv/bin/python bench/loader.py                      # both cases, 3 timed epochs
  .venv/bin/python bench/loader.py --which cifar --epochs 5
  .venv/bin/python bench/loader.py --which imagenet --train-dir /data/imagenet/train --epochs 1
    (real ImageNet: prepared once into .resplat/bench/ at --max-resolution 256;
    preparing 1.28M images takes hours on 2 cores, and the cache key hashes every file)
Results are appended to bench/results/loader.md (--no-record to skip).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import busy_cpu_seconds, cpu_model
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

from resplat.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    WriteOptions,
    build_loader,
    cached_beton,
    ensure_cifar10,
)

RESULTS = REPO / "bench" / "results" / "loader.md"
GOALS = {"cifar": 10.0, "imagenet": 5.0}  # issue 14: >= 5x at 224 px
DEFAULT_BATCH_SIZES = {"cifar": 256, "imagenet": 128}


@dataclass
class Measurement:
    warmup_seconds: float
    images_per_second: float


def _time_epochs(loader: Iterable, epochs: int) -> Measurement:
    """One untimed warm-up epoch, then images/s over ``epochs`` epochs."""
    start = time.perf_counter()
    for _ in loader:
        pass
    warmup = time.perf_counter() - start
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch, _labels in loader:
            images += batch.shape[0]
    return Measurement(warmup, images / (time.perf_counter() - start))


def _torchvision_loader(folder: Path, case: str, batch_size: int, workers: int):
    from torchvision import datasets, transforms

    if case == "cifar":
        augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        augment = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    transform = transforms.Compose(
        [
            *augment,
            transforms.ToTensor(),
            transforms.Normalize([m / 255 for m in mean], [s / 255 for s in std]),
        ]
    )
    return torch.utils.data.DataLoader(
        datasets.ImageFolder(str(folder), transform=transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=True,
    )


def _synthetic_photos(cifar_train: Path, cache: Path, per_class: int) -> Path:
    """CIFAR photos upscaled to 256..500 px per side, JPEG quality 90, made once."""
    target = cache / f"photos-{per_class}"
    if (target / ".complete").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".photos-", dir=cache))
    rng = np.random.default_rng(0)
    try:
        for class_dir in sorted(cifar_train.iterdir()):
            (staging / class_dir.name).mkdir()
            for source in sorted(class_dir.iterdir())[:per_class]:
                size = tuple(int(s) for s in rng.integers(256, 501, size=2))
                with Image.open(source) as image:
                    photo = image.convert("RGB").resize(size, Image.BICUBIC)
                photo.save(staging / class_dir.name / source.name, quality=90)
        (staging / ".complete").touch()
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _progress_printer(label: str):
    def show(done: int, total: int) -> None:
        print(
            f"\r  preparing {label}: {done}/{total}", end="" if done < total else "\n", flush=True
        )

    return show


def run_case(case: str, args: argparse.Namespace) -> dict:
    cache = REPO / ".resplat" / "bench"
    if case == "cifar":
        folder = ensure_cifar10(REPO / ".resplat" / "datasets") / "train"
        options = WriteOptions(num_workers=args.workers)  # auto: raw for 32 px
        pipeline, resolution = "cifar", 32
    else:
        if args.train_dir:
            folder = Path(args.train_dir)
        else:
            cifar_train = ensure_cifar10(REPO / ".resplat" / "datasets") / "train"
            folder = _synthetic_photos(cifar_train, cache, args.photos_per_class)
        options = WriteOptions(
            max_resolution=args.max_resolution, storage=args.storage, num_workers=args.workers
        )
        pipeline, resolution = "imagenet", 224

    batch_size = args.batch_size or DEFAULT_BATCH_SIZES[case]
    print(f"[{case}] {folder}, batch {batch_size}")
    start = time.perf_counter()
    info = cached_beton(folder, cache / "betons", options, progress=_progress_printer(case))
    prepare_seconds = time.perf_counter() - start
    print(
        f"  .beton: {info.path.name} ({info.num_images} images, {info.storage}) in {prepare_seconds:.1f} s"
    )

    vision = _time_epochs(_torchvision_loader(folder, case, batch_size, args.workers), args.epochs)
    print(
        f"  torchvision: {vision.images_per_second:,.0f} img/s (warm-up {vision.warmup_seconds:.1f} s)"
    )
    ffcv_loader = build_loader(
        info.path,
        pipeline=pipeline,
        train=True,
        batch_size=batch_size,
        resolution=resolution,
        num_workers=args.workers,
    )
    ffcv = _time_epochs(ffcv_loader, args.epochs)
    print(
        f"  resplat/FFCV: {ffcv.images_per_second:,.0f} img/s (warm-up incl. compile {ffcv.warmup_seconds:.1f} s)"
    )
    ratio = ffcv.images_per_second / vision.images_per_second
    print(f"  ratio: {ratio:.1f}x (goal >= {GOALS[case]:.0f}x)")
    return {
        "case": case,
        "folder": folder,
        "images": info.num_images,
        "batch_size": batch_size,
        "storage": f"{info.storage}, max side {info.max_resolution or 'source'}",
        "vision": vision,
        "ffcv": ffcv,
        "ratio": ratio,
    }


def _other_load(before, after, seconds: float) -> str:
    if before is None or after is None:
        return "other load: unknown"
    others = max(0.0, (after[0] - before[0]) - (after[1] - before[1]))
    cores = os.cpu_count() or 1
    return (
        f"other processes used {others:.0f} CPU-s of {cores * seconds:.0f} available "
        f"({100 * others / (cores * seconds):.0f}% of the machine) during the run"
    )


def _machine() -> str:
    arch = subprocess.run(
        ["uname", "-m"], check=False, capture_output=True, text=True
    ).stdout.strip()
    return f"{arch}, {os.cpu_count()} CPUs, {cpu_model()}"


def record(results: list[dict], args: argparse.Namespace, load: str) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = ".venv/bin/python bench/loader.py " + shlex.join(sys.argv[1:])
    lines = [
        f"## {now}",
        "",
        f"- command: `{command.strip()}`",
        f"- machine: {_machine()}",
        f"- machine load: {load}" + (f"; {args.note}" if args.note else ""),
        (
            f"- {args.workers} loader workers, 1 warm-up epoch + {args.epochs} timed, "
            "same batch size on both sides, float32 normalised output on both sides"
        ),
        "",
        "| case | images | batch | .beton storage | torchvision img/s | resplat img/s | ratio | goal |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['images']:,} | {r['batch_size']} | {r['storage']} "
            f"| {r['vision'].images_per_second:,.0f} "
            f"| {r['ffcv'].images_per_second:,.0f} | {r['ratio']:.1f}x | >= {GOALS[r['case']]:.0f}x |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    header = "" if RESULTS.exists() else "# Loader throughput: resplat (FFCV) vs torchvision\n\n"
    with open(RESULTS, "a", encoding="utf-8") as file:
        file.write(header + "\n".join(lines) + "\n\n")
    print(f"recorded in {RESULTS.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--which", choices=["cifar", "imagenet", "both"], default="both")
    parser.add_argument(
        "--epochs", type=int, default=3, help="timed epochs after one warm-up epoch"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="both sides' batch size (default: 256 for cifar, 128 for imagenet, where "
        "FFCV's stage-by-stage batches of 224 px float32 images then stay closer to cache)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--train-dir", help="ImageFolder train set for the imagenet case (e.g. real ImageNet)"
    )
    parser.add_argument(
        "--photos-per-class", type=int, default=300, help="synthetic 256..500 px set size / 10"
    )
    parser.add_argument(
        "--max-resolution", type=int, default=256, help="imagenet case: longest side stored"
    )
    parser.add_argument(
        "--storage", choices=["auto", "raw", "jpeg", "proportional"], default="jpeg"
    )
    parser.add_argument(
        "--note", default="", help="free text for the record (e.g. other load on the machine)"
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    os.chdir(REPO)

    cases = ["cifar", "imagenet"] if args.which == "both" else [args.which]
    cpu_before, start = busy_cpu_seconds(), time.perf_counter()
    results = [run_case(case, args) for case in cases]
    load = _other_load(cpu_before, busy_cpu_seconds(), time.perf_counter() - start)
    print(load)
    if not args.no_record:
        record(results, args, load)


if __name__ == "__main__":
    main()

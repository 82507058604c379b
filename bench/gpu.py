"""ResNet-50 training img/s per device with FFCV, channels_last and bf16 on 224 px images, and the share
of the time spent in the model (vs waiting for the next batch).

Images are synthetic (smooth random colour fields with noise, 256..320 px per side, JPEG), written
to a temporary image folder and .beton by resplat's own writer: nothing is downloaded. Each timed
step is split in two by the wall clock: waiting for the loader's next batch, and the model's
forward, backward and optimiser step (on CUDA followed by a synchronize, so the GPU's work is
counted where it is done). --warmup-steps are not timed (numba compile, cuDNN autotuning).

The anchor: FFCV's published ResNet-50 run, 8 x A100, 16 epochs in 14.9 min, about 2,900 img/s per
GPU, evaluation included.

On CUDA this uses GPU 0; without CUDA it runs on the CPU (a figure for the record, not a GPU one).
--submit (CUDA only) also trains a short job end to end through `resplat submit` with
scaling.use_gpu=true, bf16 and channels_last, so the platform's CUDA path runs at least once.

    .venv/bin/python bench/gpu.py                        # GPU: 4,096 images, batch 256, 50 timed steps
    .venv/bin/python bench/gpu.py --submit               # and the end-to-end job
    .venv/bin/python bench/gpu.py --quick --results-dir /tmp/r   # CPU-sized: 16 images, batch 4, 2 steps
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common
import numpy as np

NAME = "gpu"
ANCHOR_IMAGES_PER_SEC = 2900
CLASSES = 10


def synthetic_photos(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` JPEGs in CLASSES class folders: upscaled 8x8 random colour fields plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        target = folder / f"class{i % CLASSES}"
        target.mkdir(parents=True, exist_ok=True)
        width, height = (int(s) for s in rng.integers(256, 321, size=2))
        field = Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).resize(
            (width, height), Image.BICUBIC)
        noisy = np.asarray(field, dtype=np.int16) + rng.integers(-12, 13, size=(height, width, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(target / f"{i:06d}.jpg", quality=90)
    return folder


def measure(beton: Path, *, device, batch_size: int, loader_workers: int, warmup_steps: int, steps: int,
            precision: str) -> dict:
    import contextlib

    import torch
    from torch import nn

    from resplat.data import build_loader
    from resplat.models import resnet

    loader = build_loader(beton, pipeline="imagenet", train=True, batch_size=batch_size, resolution=224,
                          num_workers=loader_workers, device=device, channels_last=True)
    if device.type == "cpu":
        torch.set_num_threads(loader_workers)  # FFCV set it; keep it explicit
    model = resnet(family="imagenet", depth=50, num_classes=CLASSES).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    waits, computes, images = [], [], 0
    batches = iter(())
    for i in range(warmup_steps + steps):
        started = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)  # a new epoch; its first batch wait is counted as it would be in training
            batch = next(batches)
        inputs, labels = batch
        got = time.perf_counter()
        with autocast:
            loss = criterion(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        done = time.perf_counter()
        if i >= warmup_steps:
            waits.append(got - started)
            computes.append(done - got)
            images += labels.numel()
    total = sum(waits) + sum(computes)
    return {
        "images_per_sec": round(images / total, 1),
        "model_time_fraction": round(sum(computes) / total, 4),
        "data_wait_fraction": round(sum(waits) / total, 4),
        "median_step_s": round(float(np.median(np.add(waits, computes))), 4),
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
    }


def submit_on_gpu(folder: Path, home: Path, steps: int) -> dict:
    """`resplat submit` of jobs/resnet50.yaml, one GPU worker, on the synthetic folder, to the end."""
    import os

    overrides = [f"data.train={folder}", f"data.val={folder}", f"model.num_classes={CLASSES}",
                 "scaling.num_workers=1", "scaling.use_gpu=true", "scaling.precision=bf16",
                 "scaling.channels_last=true", f"scaling.cpus_per_worker={min(8, os.cpu_count() or 1)}",
                 "optim.global_batch_size=256", "schedule.epochs=1", f"schedule.max_steps={steps}",
                 "failure.max_failures=0", "tracking.experiment=resplat-bench", "tracking.register_as=null"]
    run = common.run_resplat(["submit", str(common.REPO / "jobs" / "resnet50.yaml"),
                              *common.set_options(overrides)], env=common.resplat_env(home, folder.parent))
    epochs = run.all("epoch")
    return {"exit_code": run.returncode, "overrides": overrides, "seconds": round(run.ended - run.launched, 1),
            "epochs": epochs[-1:] if epochs else [], "output_tail": run.output_tail[-1500:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_options(parser)
    parser.add_argument("--images", type=int, help="synthetic images (default 4,096 on GPU, 256 on CPU; quick: 16)")
    parser.add_argument("--batch-size", type=int, help="default 256 on GPU, 16 on CPU; quick: 4")
    parser.add_argument("--steps", type=int, help="timed steps (default 50 on GPU, 5 on CPU; quick: 2)")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps (default 10 on GPU, 2 on CPU; quick: 1)")
    parser.add_argument("--loader-workers", type=int, help="FFCV threads (default: all CPUs, at most 16)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--submit", action="store_true", help="CUDA only: also run a short resplat submit job")
    args = parser.parse_args()

    import os

    import torch

    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    size = "quick" if args.quick else ("gpu" if cuda else "cpu")
    defaults = {"quick": (16, 4, 2, 1), "gpu": (4096, 256, 50, 10), "cpu": (256, 16, 5, 2)}[size]
    images = args.images or defaults[0]
    batch_size = args.batch_size or defaults[1]
    steps = args.steps or defaults[2]
    warmup = args.warmup_steps or defaults[3]
    workers = args.loader_workers or min(16, os.cpu_count() or 1)
    if args.submit and not cuda:
        parser.error("--submit trains on a GPU; this machine has no CUDA device")

    load = common.LoadMeter()
    with tempfile.TemporaryDirectory(prefix="resplat-bench-gpu-") as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        folder = synthetic_photos(scratch / "photos" / "train", images)
        from resplat.data import WriteOptions, write_beton

        info = write_beton(folder, scratch / "train.beton",
                           WriteOptions(max_resolution=256, storage="jpeg", num_workers=min(workers, 8)))
        prepare_s = time.perf_counter() - started
        print(f"{images} synthetic images -> {info.path.name} in {prepare_s:.1f} s; training on {device}")
        result = measure(info.path, device=device, batch_size=batch_size, loader_workers=workers,
                         warmup_steps=warmup, steps=steps, precision=args.precision)
        print(f"  {result['images_per_sec']:,.0f} img/s, {result['model_time_fraction']:.0%} of the time in "
              f"the model, {result['data_wait_fraction']:.0%} waiting for data")
        submitted = submit_on_gpu(folder, scratch / "home", steps=20) if args.submit else None

    figures = {
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({common.cpu_model()})",
        "torch": torch.__version__,
        "images": images, "batch_size": batch_size, "warmup_steps": warmup, "timed_steps": steps,
        "loader_workers": workers, "precision": args.precision, "channels_last": True,
        "beton": "jpeg, max side 256", "prepare_s": round(prepare_s, 1),
        **result,
        "ratio_to_ffcv_anchor": round(result["images_per_sec"] / ANCHOR_IMAGES_PER_SEC, 3),
        "anchor": f"FFCV ResNet-50, 8xA100: ~{ANCHOR_IMAGES_PER_SEC} img/s per GPU",
        "submit": submitted,
        "quick": args.quick,
    }
    reading = (f"ResNet-50 {args.precision} channels_last on {figures['device']}: {result['images_per_sec']:,.0f} "
               f"img/s, {result['model_time_fraction']:.0%} of the time in the model "
               f"({figures['ratio_to_ffcv_anchor']:.2f}x FFCV's A100 figure)"
               + (f"; resplat submit on the GPU exited {submitted['exit_code']}" if submitted else "")
               + (" [quick mode: not a measurement]" if args.quick else ""))
    common.record(NAME, figures, reading=reading, load=load, results_dir=args.results_dir, note=args.note)
    if submitted and submitted["exit_code"] != 0:
        raise SystemExit(f"resplat submit on the GPU failed:\n{submitted['output_tail']}")


if __name__ == "__main__":
    main()

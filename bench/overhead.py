"""Platform overhead: training img/s of `resplat submit` against a bare PyTorch loop, same run.

resplat side: `resplat submit` of the quickstart job (CIFAR ResNet-20, one Ray worker, its
CIFAR-10 data) for --epochs epochs; its steady state is the mean train img/s of every epoch but
the first (which pays FFCV's numba compile), as the worker measured it, data loading included.

bare side: one process, the same model, batch size, optimiser, loss, torch threads, memory format
and precision, on batches FFCV decoded once into memory beforehand; --warmup-steps untimed, then
--steps timed. Measured before and after the submit; the baseline is their mean, so a change in
the machine's load during the run shows as the gap between the two.

Where a gap goes: the same bare loop fed by the FFCV loader as it decodes (its threads share the
CPUs with the model) separates data loading from what Ray and the platform add.

Goal: resplat >= 97% of the bare loop.

    .venv/bin/python bench/overhead.py                 # full CIFAR-10, 3 epochs (~5 minutes here)
    .venv/bin/python bench/overhead.py --quick --results-dir /tmp/r   # 400 images, tiny batches
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path

import common

GOAL = 0.97
NAME = "overhead"


def train_loader(spec, beton: Path):
    from resplat.data import build_loader

    return build_loader(beton, pipeline=spec.data.pipeline, train=True, batch_size=spec.optim.batch_size,
                        resolution=spec.data.resolution, num_workers=spec.data.loader_workers,
                        channels_last=spec.scaling.channels_last)


def live_batches(loader) -> Iterator[tuple]:
    """Batches straight from the loader, epoch after epoch."""
    while True:
        yield from loader


def decoded_batches(loader, count: int) -> list[tuple]:
    """`count` training batches decoded by resplat's FFCV pipeline, held in memory."""
    batches = []
    for images, labels in live_batches(loader):
        batches.append((images.clone(), labels.clone()))
        if len(batches) == count:
            return batches
    raise AssertionError("unreachable")


def bare_loop(spec, batches: Iterator[tuple], *, warmup_steps: int, steps: int) -> float:
    """img/s of plain forward/backward/SGD steps on `batches`, after warm-up steps."""
    import contextlib

    import torch
    from torch import nn

    from resplat.models import resnet

    torch.set_num_threads(spec.scaling.cpus_per_worker)  # the worker's thread count
    torch.manual_seed(spec.seed)
    model = resnet(**spec.model.model_dump())
    model = model.to(memory_format=torch.channels_last if spec.scaling.channels_last else torch.contiguous_format)
    model.train()
    o = spec.optim
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.effective_lr, momentum=o.momentum,
                                nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)
    precision = (contextlib.nullcontext() if spec.scaling.precision == "fp32"
                 else torch.autocast("cpu", dtype=torch.bfloat16))

    def step() -> int:
        images, labels = next(batches)
        with precision:
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return labels.numel()

    for _ in range(warmup_steps):
        step()
    images, started = 0, time.perf_counter()
    for _ in range(steps):
        images += step()
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_options(parser)
    parser.add_argument("--job", type=Path, default=common.QUICKSTART_JOB)
    parser.add_argument("--epochs", type=int, help="resplat epochs (default 3; quick: 2)")
    parser.add_argument("--steps", type=int, help="bare loop timed steps (default 60; quick: 4)")
    parser.add_argument("--warmup-steps", type=int, help="bare loop untimed steps (default 5; quick: 2)")
    args = parser.parse_args()
    epochs = args.epochs or (2 if args.quick else 3)
    steps = args.steps or (4 if args.quick else 60)
    warmup = args.warmup_steps or (2 if args.quick else 5)
    if epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch (numba compile) is not steady state")

    load = common.LoadMeter()
    with tempfile.TemporaryDirectory(prefix="resplat-bench-overhead-") as scratch:
        scratch = Path(scratch)
        home = scratch / "home" if args.quick else common.BENCH_HOME
        data = common.datasets_dir(args.quick, scratch)
        overrides = [f"schedule.epochs={epochs}", "tracking.experiment=resplat-bench"]
        if args.quick:
            overrides.append("optim.batch_size=32")
        spec, prepared = common.prepare_in_process(args.job, overrides, home=home, data=data)
        loader = train_loader(spec, prepared.train.path)
        batches = decoded_batches(loader, count=min(steps + warmup, 20))

        print(f"bare loop: batch {spec.optim.batch_size}, {spec.scaling.cpus_per_worker} threads, "
              f"{spec.scaling.precision}, channels_last {spec.scaling.channels_last}")
        bare_before = bare_loop(spec, cycle(batches), warmup_steps=warmup, steps=steps)
        print(f"  before: {bare_before:,.0f} img/s")
        # The same loop fed by the FFCV loader as it decodes: what data loading alone costs.
        with_loader = bare_loop(spec, live_batches(loader), warmup_steps=warmup, steps=steps)
        print(f"  fed by the FFCV loader: {with_loader:,.0f} img/s")

        print(f"resplat submit {args.job.name} " + " ".join(f"--set {o}" for o in overrides))
        run = common.run_resplat(["submit", str(args.job), *common.set_options(overrides)],
                                 env=common.resplat_env(home, data)).check()
        per_epoch = [e["train_images_per_sec"] for e in run.all("epoch")]
        if len(per_epoch) != epochs:
            raise SystemExit(f"expected {epochs} epoch events from resplat, got {len(per_epoch)}:\n{run.output_tail}")
        steady = statistics.mean(per_epoch[1:])
        print(f"  per epoch: {', '.join(f'{v:,.0f}' for v in per_epoch)} img/s; steady {steady:,.0f}")

        bare_after = bare_loop(spec, cycle(batches), warmup_steps=warmup, steps=steps)
        print(f"  bare after: {bare_after:,.0f} img/s")

    baseline = (bare_before + bare_after) / 2
    ratio = steady / baseline
    figures = {
        "job": str(args.job.relative_to(common.REPO)) if args.job.is_relative_to(common.REPO) else str(args.job),
        "overrides": overrides,
        "train_images": prepared.train.num_images,
        "batch_size": spec.optim.batch_size,
        "threads": spec.scaling.cpus_per_worker,
        "loader_workers": spec.data.loader_workers,
        "precision": spec.scaling.precision,
        "channels_last": spec.scaling.channels_last,
        "bare_steps": {"warmup": warmup, "timed": steps, "distinct_batches": len(batches)},
        "bare_images_per_sec_before_after": [round(bare_before, 1), round(bare_after, 1)],
        "bare_fed_by_ffcv_loader_images_per_sec": round(with_loader, 1),
        "where_the_gap_goes": {"data loading (bare+loader / bare)": round(with_loader / baseline, 4),
                               "Ray, reporting, epoch ends (resplat / bare+loader)": round(steady / with_loader, 4)},
        "resplat_images_per_sec_per_epoch": [round(v, 1) for v in per_epoch],
        "resplat_steady_images_per_sec": round(steady, 1),
        "ratio": round(ratio, 4),
        "goal": f">= {GOAL:.0%}",
        "quick": args.quick,
    }
    reading = (f"resplat submit trains at {ratio:.1%} of the bare loop ({steady:,.0f} vs {baseline:,.0f} img/s, "
               f"goal >= {GOAL:.0%}){' [quick mode: not a measurement]' if args.quick else ''}")
    common.record(NAME, figures, reading=reading, load=load, results_dir=args.results_dir, note=args.note)


if __name__ == "__main__":
    main()

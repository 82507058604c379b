"""Time to accuracy on CIFAR-10: `resplat submit jobs/cifar10-fast.yaml`, and the training time until
the first epoch whose test top-1 reaches 80%, 85% and 90%.

Training time runs from the start of the first epoch (the first step's report, less that step) to
the end of an epoch's validation as the driver hears of it: evaluation counts, start-up does not.
Beside it, in the same command, the quickstart's training throughput (jobs/cifar10-resnet20.yaml for
--reference-steps steps, img/s as its worker measured), so that each time also reads as
"quickstart epochs": how many epochs the quickstart would have trained in that time. That figure
carries over to a faster or slower machine.

Goal: 90% within 30 minutes of training on this machine.

    .venv/bin/python bench/time_to_accuracy.py           # the recipe as shipped (~35 minutes here)
    .venv/bin/python bench/time_to_accuracy.py --quick --results-dir /tmp/r   # 400 images, 2 epochs
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common

FAST_JOB = common.REPO / "jobs" / "cifar10-fast.yaml"
THRESHOLDS = (0.80, 0.85, 0.90)
GOAL_MINUTES = 30.0
NAME = "time_to_accuracy"


def training_start(run: common.TimedRun) -> float:
    first = run.first("first_step")
    if first is None:
        raise SystemExit(f"no first step reported:\n{run.output_tail}")
    return first["t"] - first["step_seconds"]


def epoch_curve(run: common.TimedRun) -> list[dict]:
    """(epoch, minutes of training at its end, val top-1, train img/s) for every epoch reported."""
    start = training_start(run)
    return [{"epoch": event["epoch"], "minutes": round((event["t"] - start) / 60, 2),
             "val_top1": round(event["val_top1"], 4),
             "train_images_per_sec": round(event["train_images_per_sec"], 1)}
            for event in run.all("epoch")]


def minutes_to(curve: list[dict], threshold: float) -> float | None:
    return next((epoch["minutes"] for epoch in curve if epoch["val_top1"] >= threshold), None)


def quickstart_images_per_sec(steps: int, extra: list[str], *, home: Path, data: Path) -> float:
    """The quickstart job's train img/s over `steps` steps (one epoch cut short), as its worker measured."""
    overrides = ["schedule.epochs=1", f"schedule.max_steps={steps}", "tracking.experiment=resplat-bench", *extra]
    run = common.run_resplat(["submit", str(common.QUICKSTART_JOB), *common.set_options(overrides)],
                             env=common.resplat_env(home, data)).check()
    epochs = run.all("epoch")
    if not epochs:
        raise SystemExit(f"the quickstart reference reported no epoch:\n{run.output_tail}")
    return float(epochs[-1]["train_images_per_sec"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_options(parser)
    parser.add_argument("--job", type=Path, default=FAST_JOB)
    parser.add_argument("--reference-steps", type=int, help="quickstart steps timed for the reference (default 100)")
    args = parser.parse_args()

    quick_batch = ["optim.batch_size=32"] if args.quick else []
    overrides = ["tracking.experiment=resplat-bench", *(["schedule.epochs=2"] if args.quick else []), *quick_batch]
    load = common.LoadMeter()
    with tempfile.TemporaryDirectory(prefix="resplat-bench-accuracy-") as scratch:
        scratch = Path(scratch)
        home = scratch / "home" if args.quick else common.BENCH_HOME
        data = common.datasets_dir(args.quick, scratch)
        spec, prepared = common.prepare_in_process(args.job, overrides, home=home, data=data)
        run = common.run_resplat(["submit", str(args.job), *common.set_options(overrides)],
                                 env=common.resplat_env(home, data), timeout=3 * 3600).check()
        curve = epoch_curve(run)
        reference = quickstart_images_per_sec(args.reference_steps or (3 if args.quick else 100), quick_batch,
                                              home=home, data=data)

    train_images = prepared.train.num_images
    to_reach = {f"{threshold:.0%}": minutes_to(curve, threshold) for threshold in THRESHOLDS}
    figures = {
        "job": str(args.job), "overrides": overrides, "model": spec.model.model_dump(),
        "precision": spec.scaling.precision, "batch_size": spec.optim.batch_size,
        "epochs": spec.schedule.epochs, "train_images": train_images,
        "minutes_to": to_reach,
        "final_val_top1": curve[-1]["val_top1"] if curve else None,
        "training_minutes": curve[-1]["minutes"] if curve else None,
        "quickstart_train_images_per_sec": round(reference, 1),
        # How many quickstart epochs of the same data fit in each time: machine-independent.
        "in_quickstart_epochs": {name: (round(minutes * 60 * reference / train_images, 1)
                                        if minutes is not None else None) for name, minutes in to_reach.items()},
        "goal": f"90% within {GOAL_MINUTES:.0f} minutes of training "
                f"({GOAL_MINUTES * 60 * reference / train_images:.1f} quickstart epochs here)",
        "curve": curve,
        "quick": args.quick,
    }
    reached = ", ".join(f"{name} in {minutes:.1f} min" if minutes is not None else f"{name} not reached"
                        for name, minutes in to_reach.items())
    reading = (f"{args.job.name}: {reached}; final {figures['final_val_top1']:.2%} after "
               f"{figures['training_minutes']:.1f} min of training (goal 90% within {GOAL_MINUTES:.0f} min); "
               f"quickstart {reference:.0f} img/s" + (" [quick mode: not a measurement]" if args.quick else ""))
    common.record(NAME, figures, reading=reading, load=load, results_dir=args.results_dir, note=args.note)


if __name__ == "__main__":
    main()

"""Submit to first step: wall time from launching `resplat submit` to its first training step.

The submit runs with RESPLAT_TIMING=1, which makes it print a timestamp as each start-up phase
begins (orchestrate/submit.py); the first progress report of the worker carries how long its
epoch's first batch took to arrive (FFCV's numba compile and the decode) and the first step's
compute. The driver sees that report within its 0.25 s poll, so that lag is in "worker group".

  python + CLI + spec    launch -> input checks begin (interpreter, typer, imports, YAML)
  input checks           MLflow store reachable, capacity, classes vs model
  data                   .beton files found in the cache (warm) or converted (cold)
  MLflow run             the run created, params and spec logged
  Ray start              ray.init of a local Ray
  worker group           Ray Train controller, worker process, torch.distributed, model, loaders
  first batch (FFCV)     the loader's first batch: numba compiles the pipeline, decodes
  first step            forward, backward, optimiser step

warm: the .beton files are cached and the MLflow store exists (any submit after the first); cold
(full mode only): a fresh RESPLAT_HOME, so the data are converted and the store created first.
Goal: warm under 10 s.

    .venv/bin/python bench/first_step.py            # quickstart job on CIFAR-10: cold, then warm
    .venv/bin/python bench/first_step.py --quick --results-dir /tmp/r   # 400 images, warm only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common

GOAL_WARM_S = 10.0
NAME = "first_step"
# A few steps: the run then validates and logs its model as any run does. After its first step the
# loop posts progress again only 0.5 s later, so the driver's 0.25 s poll sees step 1's report.
OVERRIDES = ["schedule.max_steps=10", "tracking.experiment=resplat-bench"]
QUICK_OVERRIDES = ["optim.batch_size=32"]  # 400 images: 12 steps per epoch


def phases(run: common.TimedRun) -> dict[str, float]:
    """Seconds per start-up phase, in order, from one submit's timing events."""
    at = {name: run.first(name) for name in ("checks", "data", "data_ready", "mlflow_run", "ray", "ray_ready",
                                             "first_step")}
    missing = [name for name, event in at.items() if event is None]
    if missing:
        raise SystemExit(f"resplat printed no timing event for {missing}; output:\n{run.output_tail}")
    first = at["first_step"]
    loop_started = first["t"] - first["step_seconds"]
    first_batch = first["step_seconds"] * first["data_wait_fraction"]
    return {
        "python + CLI + spec": at["checks"]["t"] - run.launched,
        "input checks": at["data"]["t"] - at["checks"]["t"],
        "data": at["data_ready"]["t"] - at["data"]["t"],
        "MLflow run": at["ray"]["t"] - at["data_ready"]["t"],
        "Ray start": at["ray_ready"]["t"] - at["ray"]["t"],
        "worker group": loop_started - at["ray_ready"]["t"],
        "first batch (FFCV)": first_batch,
        "first step": first["step_seconds"] - first_batch,
    }


def model_build_seconds(spec) -> float:
    """Building the job's model in this process (torch imported already): part of "worker group"."""
    import torch

    from resplat.models import resnet

    started = time.perf_counter()
    resnet(**spec.model.model_dump()).to(memory_format=torch.channels_last)
    return time.perf_counter() - started


def timed_submit(job: Path, overrides: list[str], *, home: Path, data: Path, label: str) -> dict:
    run = common.run_resplat(["submit", str(job), *common.set_options(overrides)],
                             env=common.resplat_env(home, data)).check()
    split = phases(run)
    total = sum(split.values())
    print(f"{label}: {total:.1f} s to the first step")
    for name, seconds in split.items():
        print(f"  {name:<20} {seconds:6.2f} s")
    return {"seconds_to_first_step": round(total, 2), "phases_s": {k: round(v, 2) for k, v in split.items()},
            "first_progress_seen": {k: run.first("first_step").get(k) for k in ("step", "phase")},
            "seconds_whole_run": round(run.ended - run.launched, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_options(parser)
    parser.add_argument("--job", type=Path, default=common.QUICKSTART_JOB)
    parser.add_argument("--no-cold", action="store_true", help="full mode: skip the cold run")
    args = parser.parse_args()

    load = common.LoadMeter()
    overrides = OVERRIDES + (QUICK_OVERRIDES if args.quick else [])
    figures: dict = {"job": str(args.job), "overrides": overrides, "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="resplat-bench-first-step-") as scratch:
        scratch = Path(scratch)
        home = scratch / "home"  # fresh: a cold run converts the data
        data = common.datasets_dir(args.quick, scratch)
        if args.quick or args.no_cold:
            spec, _ = common.prepare_in_process(args.job, overrides, home=home, data=data)
        else:  # nothing cached yet: the submit converts the data and creates its MLflow store
            spec = common.load_spec(args.job, overrides, home=home, data=data)
            figures["cold"] = timed_submit(args.job, overrides, home=home, data=data, label="cold (new .beton)")
        figures["warm"] = timed_submit(args.job, overrides, home=home, data=data, label="warm (.beton cached)")
    figures["model_build_s_in_bench_process"] = round(model_build_seconds(spec), 3)
    figures["goal_warm_s"] = GOAL_WARM_S
    warm = figures["warm"]["seconds_to_first_step"]
    slowest = max(figures["warm"]["phases_s"].items(), key=lambda item: item[1])
    reading = (f"warm submit reaches its first training step in {warm:.1f} s (goal < {GOAL_WARM_S:.0f} s); "
               f"the largest phase is {slowest[0]} ({slowest[1]:.1f} s)"
               + (f"; cold {figures['cold']['seconds_to_first_step']:.1f} s" if "cold" in figures else "")
               + (" [quick mode: not a measurement]" if args.quick else ""))
    common.record(NAME, figures, reading=reading, load=load, results_dir=args.results_dir, note=args.note)


if __name__ == "__main__":
    main()

"""Sweep start-up cost: a `resplat tune` sweep of N short trials against N times one trial's training.

sweep: `resplat tune` of a FIFO space of N trials, one at a time (lr takes N values that cost
the same), on the quickstart job cut to --epochs / --trial-steps; timed from launch to exit.
training alone: the same job's training loop, `resplat.train.train`, in a fresh process without
Ray or MLflow (model, loaders with their numba compile, steps, validation); timed around the call.

fixed cost per trial = (sweep wall time - N x training alone) / N: interpreter and CLI, Ray start
and the sweep's MLflow bookkeeping shared out over N, plus each trial's Tune/Train controller,
worker group, MLflow run, checkpoints and model logging. Goal: at most 10 s per trial, which is
under 10% overhead on two-minute trials.

    .venv/bin/python bench/sweep_startup.py              # N=4, one CIFAR-10 epoch per trial
    .venv/bin/python bench/sweep_startup.py --trials 4 --trial-steps 60
    .venv/bin/python bench/sweep_startup.py --quick --results-dir /tmp/r   # N=1, 3 steps on 400 images
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

GOAL_S_PER_TRIAL = 10.0
NAME = "sweep_startup"


class QuietReporter:
    """The loop's Reporter protocol, doing nothing: training alone."""

    def progress(self, update) -> None:
        pass

    def epoch_end(self, report) -> None:
        pass

    def checkpoint_requested(self, global_step: int) -> bool:
        return False

    def step_checkpoint(self, saved) -> None:
        pass


def train_alone(spec_file: Path) -> None:
    """In a fresh process: time resplat's training loop on an already prepared spec; print the seconds."""
    from resplat.spec import JobSpec
    from resplat.train import train

    spec = JobSpec.model_validate_json(spec_file.read_text())
    started = time.perf_counter()
    train(spec, QuietReporter())
    print(json.dumps({"train_seconds": time.perf_counter() - started}))


def space_yaml(name: str, job: Path, trials: int) -> str:
    lrs = [round(0.1 + 0.01 * i, 3) for i in range(trials)]  # same cost whatever the value
    return (f"name: {name}\nbase_job: {job}\nparams:\n  optim.lr: {{grid: {lrs}}}\n"
            "metric: val_top1\nmode: max\nscheduler: {kind: fifo}\nmax_concurrent: 1\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_options(parser)
    parser.add_argument("--job", type=Path, default=common.QUICKSTART_JOB)
    parser.add_argument("--trials", type=int, help="N (default 4; quick: 1)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    parser.add_argument("--trial-steps", type=int, help="cap on steps per trial (schedule.max_steps; quick: 3)")
    parser.add_argument("--alone", type=Path, help=argparse.SUPPRESS)  # internal: the training-alone process
    args = parser.parse_args()
    if args.alone:
        train_alone(args.alone)
        return
    trials = args.trials or (1 if args.quick else 4)
    steps = args.trial_steps or (3 if args.quick else None)

    load = common.LoadMeter()
    overrides = [f"schedule.epochs={args.epochs}", "tracking.experiment=resplat-bench",
                 *([f"schedule.max_steps={steps}"] if steps else []),
                 *(["optim.batch_size=32"] if args.quick else [])]
    with tempfile.TemporaryDirectory(prefix="resplat-bench-sweep-") as scratch:
        scratch = Path(scratch)
        home = scratch / "home" if args.quick else common.BENCH_HOME
        data = common.datasets_dir(args.quick, scratch)
        spec, prepared = common.prepare_in_process(args.job, overrides, home=home, data=data)
        spec_file = scratch / "spec.json"
        spec_file.write_text(spec.model_copy(update={"data": prepared.data}).model_dump_json())

        alone = subprocess.run([sys.executable, __file__, "--alone", str(spec_file)], cwd=common.REPO,
                               env=common.resplat_env(home, data), capture_output=True, text=True, check=False)
        if alone.returncode != 0:
            raise SystemExit(f"training alone failed:\n{alone.stderr[-3000:]}")
        alone_s = json.loads(alone.stdout.strip().splitlines()[-1])["train_seconds"]
        print(f"training alone: {alone_s:.1f} s")

        name = f"bench-startup-{time.strftime('%Y%m%d-%H%M%S')}"
        space = scratch / f"{name}.yaml"
        space.write_text(space_yaml(name, args.job.resolve(), trials))
        run = common.run_resplat(["tune", "--space", str(space), *common.set_options(overrides)],
                                 env=common.resplat_env(home, data)).check()
        sweep_s = run.ended - run.launched
        print(f"sweep of {trials}: {sweep_s:.1f} s")

    fixed = (sweep_s - trials * alone_s) / trials
    figures = {
        "job": str(args.job), "overrides": overrides, "trials": trials,
        "train_images": prepared.train.num_images, "batch_size": spec.optim.batch_size,
        "sweep_wall_s": round(sweep_s, 1),
        "training_alone_s": round(alone_s, 1),
        "fixed_cost_per_trial_s": round(fixed, 1),
        "overhead_vs_training": round(fixed / alone_s, 3),
        "overhead_on_two_minute_trials": round(fixed / 120, 3),
        "goal": f"<= {GOAL_S_PER_TRIAL:.0f} s per trial, < 10% on two-minute trials at N=4",
        "quick": args.quick,
    }
    reading = (f"each of {trials} trials costs {fixed:.1f} s beyond its {alone_s:.1f} s of training "
               f"({fixed / 120:.0%} of a two-minute trial; goal <= {GOAL_S_PER_TRIAL:.0f} s)"
               + (" [quick mode: not a measurement]" if args.quick else ""))
    common.record(NAME, figures, reading=reading, load=load, results_dir=args.results_dir, note=args.note)


if __name__ == "__main__":
    main()

"""What the Prometheus metrics cost a training worker: the per-step bookkeeping the loop adds
(one clock read and one float add), one reporter progress() call (the gauges it sets, a
few times a second) and the keeper's pass that sets all of the worker's gauges again (once a
second, from its own thread). Appends the result to bench/results/metrics_overhead.md.

    .venv/bin/python bench/metrics_overhead.py
"""

from __future__ import annotations

import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "metrics_overhead.md"
STEP_REPEATS = 1_000_000
PROGRESS_REPEATS = 2_000


def per_step_bookkeeping_ns() -> float:
    """The loop's added work per step: a perf_counter read and an add (data-wait accounting)."""
    step_end, wait = time.perf_counter(), 0.0
    started = time.perf_counter()
    for _ in range(STEP_REPEATS):
        wait += time.perf_counter() - step_end
    return (time.perf_counter() - started) / STEP_REPEATS * 1e9


def progress_and_keeper_us() -> tuple[float, float]:
    """One RayReporter.progress() on a worker that is not rank 0 (no board post): the gauge sets;
    and one keeper pass over every gauge the worker has set."""
    import ray

    @ray.remote(num_cpus=1)
    def measure() -> tuple[float, float]:
        from resplat.orchestrate import metrics as m
        from resplat.orchestrate.metrics import TrainMetrics
        from resplat.orchestrate.worker import RayReporter
        from resplat.train import Progress

        gauges = TrainMetrics(job="bench", run="bench", trial="", worker=1)
        reporter = RayReporter(1, None, None, gauges, use_gpu=False)
        update = Progress(epoch=1, epochs=1, step=1, steps_per_epoch=1, global_step=1, total_steps=1, loss=1.0,
                          images_per_sec=1.0, worker_images_per_sec=1.0, step_seconds=0.2,
                          data_wait_fraction=0.1, lr=0.1)
        reporter.progress(update)
        started = time.perf_counter()
        for _ in range(PROGRESS_REPEATS):
            reporter.progress(update)
        progress_us = (time.perf_counter() - started) / PROGRESS_REPEATS * 1e6
        for metric in m.TRAIN_METRICS:  # every gauge a worker may set, GPU memory and checkpoints included
            if metric.kind == "gauge":
                gauges.set(metric, 1.0)
        started = time.perf_counter()
        for _ in range(PROGRESS_REPEATS):
            m.keeper.set_again()
        return progress_us, (time.perf_counter() - started) / PROGRESS_REPEATS * 1e6

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        return ray.get(measure.remote())
    finally:
        ray.shutdown()


def main() -> None:
    step_ns = per_step_bookkeeping_ns()
    progress_us, keeper_us = progress_and_keeper_us()
    # A ResNet-20 step at batch 128 on this CPU takes about 200 ms (650 img/s); progress() runs
    # at most twice a second, the keeper's pass once a second.
    line = (f"| {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | {platform.node()} ({os.cpu_count()} CPUs, "
            f"Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.0f}) | {step_ns:.0f} ns | {progress_us:.1f} us | "
            f"{keeper_us:.1f} us | {(2 * progress_us + keeper_us) * 1e-6 * 100:.4f}% |")
    if not RESULTS.exists():
        RESULTS.write_text("# Metrics overhead per worker\n\n`.venv/bin/python bench/metrics_overhead.py`\n\n"
                           "| date | machine | per step (clock + add) | per progress() (gauge sets) | "
                           "per keeper pass (all gauges set again) | share of a second (2 progress() + 1 pass) |\n"
                           "| --- | --- | --- | --- | --- | --- |\n")
    with RESULTS.open("a") as out:
        out.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()

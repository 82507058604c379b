"""What a resplat job runs on the cluster: `python -m resplat.cluster.driver`.

It calls the same service functions as a local `resplat submit` / `resplat tune`, joined to
the cluster it runs in, and prints plain lines (one per epoch at least) to the job's log,
which `resplat submit --follow` and `resplat jobs logs` show. Ray stops a job with SIGTERM:
that is handled like Ctrl-C, so the MLflow run ends KILLED with its checkpoints kept.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from resplat.cluster.jobs_api import DRIVER_ENV, RUN_LINE
from resplat.errors import Interrupted, ResplatError

PROGRESS_EVERY_S = 15.0


def say(text: str) -> None:
    print(text, flush=True)


class EpochLines:
    """The local display's content as log lines: a line per epoch, and a progress line now and then."""

    def __init__(self):
        self.epochs_shown = 0
        self.last_progress = 0.0

    def __call__(self, progress, epochs: list[dict]) -> None:
        for epoch in epochs[self.epochs_shown:]:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in epoch.items() if k != "epoch")
            say(f"epoch {epoch['epoch']}: {shown}")
        self.epochs_shown = len(epochs)
        now = time.monotonic()
        if progress is not None and now - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = now
            say(f"  epoch {progress.epoch}/{progress.epochs}  step {progress.global_step}/{progress.total_steps}  "
                f"loss {progress.loss:.3f}  {progress.images_per_sec:,.0f} img/s")


def data_progress(label: str):
    shown = {"tenth": -1}

    def update(done: int, total: int) -> None:
        tenth = (10 * done) // max(total, 1)
        if tenth != shown["tenth"]:
            shown["tenth"] = tenth
            say(f"{label}: {done}/{total} images")

    return update


def load_submitted(payload: dict):
    """The job spec as submitted, resolved here: variables and data paths are the cluster's."""
    from resplat.spec import load_job

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(payload["source"]).name
        path.write_text(payload["text"], encoding="utf-8")
        return load_job(path, payload["overrides"])


def warn_if_tracking_is_node_local(spec) -> None:
    """Rank 0 logs to MLflow from whichever node it lands on: a SQLite file must be on every node."""
    import ray

    from resplat.orchestrate.runtime import start_ray
    from resplat.tracking import tracking_uri_for

    uri = tracking_uri_for(spec.tracking)
    start_ray(address="auto")
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    needed = spec.scaling.max_workers * spec.scaling.cpus_per_worker
    elsewhere = nodes > 1 or ray.cluster_resources().get("CPU", 0) < needed  # or the autoscaler adds nodes
    if uri.startswith("sqlite:") and elsewhere:
        say(f"warning: tracking store {uri} is a file on this node, and workers may run on other nodes: "
            "they log there only through a shared filesystem. Give tracking.tracking_uri "
            "(or MLFLOW_TRACKING_URI) a server every node reaches: resplat tracking serve")


def run_submit(payload: dict) -> None:
    from resplat.orchestrate import submit as service

    if payload.get("resume"):
        say(f"{RUN_LINE}{payload['resume']}")
        result = service.resume(payload["resume"], expect_job=payload.get("name"), address="auto",
                                on_update=EpochLines())
    else:
        spec = load_submitted(payload)
        service.check_runnable(spec, address="auto")
        warn_if_tracking_is_node_local(spec)
        prepared = service.prepare_data(spec.data, num_classes=spec.model.num_classes, progress=data_progress)
        result = service.submit(spec, prepared=prepared, spec_text=payload["text"], address="auto",
                                on_update=EpochLines(), on_run=lambda run_id: on_new_run(spec, run_id, payload))
    metrics = result.metrics
    say(f"finished: val top-1 {metrics.get('val_top1', float('nan')):.2%}, top-5 "
        f"{metrics.get('val_top5', float('nan')):.2%}, {result.wall_seconds:,.0f} s; model {result.model_uri}"
        + (f" (registered v{result.registered_version})" if result.registered_version else ""))


def on_new_run(spec, run_id: str, payload: dict) -> None:
    """Say the run id (the client reads it from the log); tag a `--from-run` re-run with its source."""
    if payload.get("from_run"):
        from resplat.tracking.lineage import mark_from_run

        mark_from_run(spec.tracking.tracking_uri, run_id, payload["from_run"])
    say(f"{RUN_LINE}{run_id}")


def run_tune(payload: dict) -> None:
    from resplat.orchestrate.tune import run_sweep
    from resplat.sweep import load_space

    job = payload.get("job")
    sweep = load_space(payload["space"], job_override=Path(job) if job else None,
                       overrides=payload.get("overrides", []))
    if payload.get("samples"):
        sweep.space.samples = payload["samples"]
    shown: dict[str, tuple] = {}

    def show(views) -> None:
        for view in views:
            state = (view.status, view.epoch)
            if shown.get(view.trial_id) != state:
                shown[view.trial_id] = state
                value = "-" if view.metric is None else f"{view.metric:.4f}"
                say(f"trial {view.trial_id}: {view.status}, epoch {view.epoch}, {sweep.space.metric} {value}")

    result = run_sweep(sweep, address="auto", on_update=show, resume=payload.get("resume"),
                       on_parent=lambda run_id: say(f"{RUN_LINE}{run_id}"))
    best = result.best
    say(f"finished: sweep {result.name}, {len(result.trials)} trials; best "
        + (f"{best.trial_id} {result.metric} {best.metric:.4f}" if best and best.metric is not None else "none"))


def _sigterm_as_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    payload = json.loads(os.environ[DRIVER_ENV])
    signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
    try:
        (run_tune if payload["command"] == "tune" else run_submit)(payload)
    except Interrupted as error:
        say(f"stopped: {error}")
        return error.exit_code
    except ResplatError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        say("stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

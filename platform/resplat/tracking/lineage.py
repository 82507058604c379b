"""Where a run came from: code, data, machine, libraries, Ray ids. Tagged on every run at creation."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from resplat.errors import InputError
from resplat.tracking.names import (
    DEVICES_TAG,
    FROM_RUN_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    HOST_TAG,
    JOB_TAG,
    MODEL_URI_TAG,
    RAY_JOB_ID_TAG,
    TRAIN_SHA256_TAG,
    TRIAL_TAG,
    VAL_SHA256_TAG,
    VERSION_TAG_PREFIX,
)

LIBRARIES = ("resplat", "torch", "ray", "ffcv", "mlflow")
GIT_TIMEOUT_S = 5


def lineage_tags() -> dict[str, str]:
    """The tags describing this process: git state of resplat's source, host, devices, versions, Ray job."""
    tags = {HOST_TAG: socket.gethostname(), DEVICES_TAG: devices()}
    tags.update(_git_state(Path(__file__).resolve().parents[1]))
    tags.update({VERSION_TAG_PREFIX + name: v for name in LIBRARIES if (v := _version(name))})
    tags.update(_ray_ids())
    return tags


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _git(source: Path, *arguments: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(source), *arguments], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_state(source: Path) -> dict[str, str]:
    """The commit of the checkout resplat runs from and whether tracked files differ from it."""
    commit = _git(source, "rev-parse", "HEAD")
    if not commit:
        return {}  # installed from a wheel: no checkout to point at
    changes = _git(source, "status", "--porcelain", "--untracked-files=no")
    return {GIT_COMMIT_TAG: commit, GIT_DIRTY_TAG: "unknown" if changes is None else str(bool(changes)).lower()}


def devices() -> str:
    """The accelerators this process sees, e.g. `cuda: NVIDIA H200 x1`, else `cpu`."""
    import sys

    if "torch" not in sys.modules and not _version("torch"):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return ", ".join(f"cuda: {n} x{names.count(n)}" for n in dict.fromkeys(names))
    return "cpu"


def _ray_ids() -> dict[str, str]:
    """The Ray job this process belongs to, when it runs under Ray. (A Tune trial's id is the
    sweep's own `resplat.trial` tag.)"""
    import sys

    if os.environ.get("RAY_JOB_ID"):
        return {RAY_JOB_ID_TAG: os.environ["RAY_JOB_ID"]}
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    return {RAY_JOB_ID_TAG: ray.get_runtime_context().get_job_id()}


# ---------------------------------------------------------------- reading it back

SHOWN_TAGS = (JOB_TAG, GIT_COMMIT_TAG, GIT_DIRTY_TAG, TRAIN_SHA256_TAG, VAL_SHA256_TAG, RAY_JOB_ID_TAG,
              TRIAL_TAG, HOST_TAG, DEVICES_TAG, FROM_RUN_TAG, MODEL_URI_TAG)


def run_lineage(tracking_uri: str, run_id: str) -> dict[str, str]:
    """A run's status, experiment and lineage tags (library versions last), for `resplat runs show`."""
    from resplat.tracking.runs import TrackedRun

    run = TrackedRun.open(tracking_uri, run_id).client.get_run(run_id)
    tags = run.data.tags
    shown = {"run": run_id, "name": run.info.run_name or "", "status": run.info.status,
             "experiment": run.info.experiment_id}
    shown.update({name: tags[name] for name in SHOWN_TAGS if name in tags})
    shown.update({name: value for name, value in sorted(tags.items()) if name.startswith(VERSION_TAG_PREFIX)})
    return shown


def job_file_from_run(run_id: str, tracking_uri: str | None = None) -> Path:
    """`submit --from-run`: the resolved spec `run_id` recorded, checked and written to
    $RESPLAT_HOME/from-run/RUN_ID.yaml, to be submitted like any job file (a new run)."""
    import yaml

    from resplat import paths
    from resplat.spec import JobSpec, parse
    from resplat.tracking.names import RESOLVED_SPEC
    from resplat.tracking.runs import TrackedRun, tracking_uri_for

    uri = tracking_uri or tracking_uri_for(None)
    missing = paths.missing_sqlite_store(uri)
    if missing:
        raise InputError(f"--from-run {run_id}: there is no tracking store at {missing}")
    text = TrackedRun.open(uri, run_id).read_text(RESOLVED_SPEC)
    parse(JobSpec, yaml.safe_load(text), f"run {run_id} ({RESOLVED_SPEC})")
    job = paths.home() / "from-run" / f"{run_id}.yaml"
    job.parent.mkdir(parents=True, exist_ok=True)
    job.write_text(text, encoding="utf-8")
    return job


def mark_from_run(tracking_uri: str | None, new_run_id: str, source_run_id: str) -> None:
    """Tag the new run with the run whose spec it re-ran."""
    from resplat.tracking.runs import TrackedRun, tracking_uri_for

    TrackedRun(tracking_uri or tracking_uri_for(None), new_run_id).set_tags({FROM_RUN_TAG: source_run_id})

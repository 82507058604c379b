"""Killed workers and interrupted runs continue from their latest checkpoint, in the same MLflow run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 5

pytestmark = pytest.mark.slow


def write_job(tmp: Path, data: Path, name: str, max_failures: int, every_epochs: int = 1) -> Path:
    job = tmp / f"{name}.yaml"
    job.write_text(f"""
name: {name}
model: {{family: cifar, depth: 20}}
data: {{train: {data / 'train'}, val: {data / 'test'}, loader_workers: 1}}
optim: {{lr: 0.05, batch_size: 50}}
schedule: {{kind: cosine, epochs: {EPOCHS}}}
scaling: {{num_workers: 1, cpus_per_worker: 1}}
checkpoint: {{every_epochs: {every_epochs}}}
failure: {{max_failures: {max_failures}}}
tracking: {{experiment: faults}}
""")
    return job


def start(job: Path, home: Path, *extra: str) -> subprocess.Popen:
    # Create the store first, so the test's polling never races the job's schema migration.
    home.mkdir(exist_ok=True)
    client(home).search_experiments()
    return subprocess.Popen(
        [sys.executable, "-m", "resplat", "submit", str(job), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "RESPLAT_HOME": str(home), "RAY_ADDRESS": ""},
    )


def client(home: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def wait_for_epoch(home: Path, epoch: int, process: subprocess.Popen, timeout: float = 300) -> str:
    """Poll the MLflow store until the job's run has logged `epoch`; return the run id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if (home / "mlflow.db").exists():
            mlflow = client(home)
            experiment = mlflow.get_experiment_by_name("faults")
            runs = mlflow.search_runs([experiment.experiment_id]) if experiment else []
            if runs and any(m.step >= epoch for m in mlflow.get_metric_history(runs[0].info.run_id, "val_top1")):
                return runs[0].info.run_id
        time.sleep(0.2)
    raise AssertionError(f"epoch {epoch} was not logged within {timeout} s")


def training_workers(process: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(process.pid).children(recursive=True)
            if "RayTrainWorker" in " ".join(p.cmdline())]


def check_history(home: Path, run_id: str) -> int:
    """Every epoch logged; epochs up to the restored one logged once (no restart from scratch)."""
    mlflow = client(home)
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    restored = int(run.data.tags["resplat.restored_from_epoch"])
    assert 1 <= restored < EPOCHS
    steps = [m.step for m in mlflow.get_metric_history(run_id, "val_top1")]
    assert set(steps) == set(range(1, EPOCHS + 1))
    assert [s for s in steps if s <= restored] == list(range(1, restored + 1))
    assert [m.step for m in mlflow.get_metric_history(run_id, "restored_from_epoch")] == [restored]
    return restored


def test_a_killed_worker_is_replaced_and_training_continues(cifar_medium, tmp_path):
    home = tmp_path / "home"
    process = start(write_job(tmp_path, cifar_medium, "killed", max_failures=2), home)
    # Ray Train registers a reported checkpoint when its controller next polls the workers: by
    # epoch 2's report, epoch 1's checkpoint is registered for sure.
    run_id = wait_for_epoch(home, 2, process)
    workers = training_workers(process)
    assert len(workers) == 1
    workers[0].send_signal(signal.SIGKILL)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out[-2000:] + err[-2000:]
    assert "restarts" in out
    check_history(home, run_id)
    # Every worker-group restart is counted, also one Ray makes on its own at start-up on a loaded
    # machine (it loses nothing); the kill costs one restart that resumes from a checkpoint.
    run = client(home).get_run(run_id)
    assert int(run.data.tags["resplat.worker_group_restarts"]) >= 1
    assert int(run.data.tags["resplat.restored_from_epoch"]) >= 1


def test_a_worker_killed_before_the_first_checkpoint_restarts_from_scratch_and_is_counted(cifar_medium, tmp_path):
    home = tmp_path / "home"
    # Checkpoints only at the end: a kill in epoch 2 leaves nothing to restore.
    process = start(write_job(tmp_path, cifar_medium, "early", max_failures=2, every_epochs=EPOCHS), home)
    try:
        run_id = wait_for_epoch(home, 1, process)
        training_workers(process)[0].send_signal(signal.SIGKILL)
        out, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, out[-2000:] + err[-2000:]
    mlflow = client(home)
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    # At least the restart the kill caused; a loaded machine can add one of Ray's own (a worker
    # group torn down when its placement-group cleaner gives up), and each is counted.
    restarts = int(run.data.tags["resplat.worker_group_restarts"])
    assert restarts >= 1
    assert "resplat.restored_from_epoch" not in run.data.tags
    steps = [m.step for m in mlflow.get_metric_history(run_id, "val_top1")]
    assert set(steps) == set(range(1, EPOCHS + 1)) and steps.count(1) >= 2  # epoch 1 trained again
    lost_epochs = mlflow.get_metric_history(run_id, "lost_epochs")
    lost_steps = mlflow.get_metric_history(run_id, "lost_steps")
    assert sorted(m.step for m in lost_epochs) == list(range(1, restarts + 1))  # one entry per restart
    total_epochs = max(m.value for m in lost_epochs)  # cumulative
    assert total_epochs >= 1
    steps_per_epoch = 2000 // 50
    assert max(m.value for m in lost_steps) >= steps_per_epoch * total_epochs


def test_an_interrupted_run_resumes_with_submit_resume(cifar_medium, tmp_path):
    home = tmp_path / "home"
    job = write_job(tmp_path, cifar_medium, "interrupted", max_failures=0)
    process = start(job, home)
    run_id = wait_for_epoch(home, 2, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out[-2000:] + err[-2000:]
    assert client(home).get_run(run_id).info.status == "KILLED"

    resumed = start(job, home, "--resume", run_id)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-2000:] + err[-2000:]
    assert run_id in out
    check_history(home, run_id)
    assert client(home).get_run(run_id).data.tags["resplat.resumed"] == "true"


def test_resume_of_an_unknown_run_is_an_input_error(cifar_subset, tmp_path):
    job = write_job(tmp_path, cifar_subset, "unknown", max_failures=0)
    process = start(job, tmp_path / "home", "--resume", "0123456789abcdef")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "no MLflow run 0123456789abcdef" in err

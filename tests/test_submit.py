"""End to end: `resplat submit` on real CIFAR-10 images, through Ray Train, FFCV and MLflow."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def small_job(tmp_path: Path, subset: Path, name: str = "smoke", extra: str = "") -> Path:
    job = tmp_path / f"{name}.yaml"
    job.write_text(f"""
name: {name}
model: {{family: cifar, depth: 8, num_classes: 10}}
data: {{train: {subset / 'train'}, val: {subset / 'test'}, loader_workers: 1}}
optim: {{lr: 0.05, batch_size: 50}}
schedule: {{kind: cosine, epochs: 2}}
scaling: {{num_workers: 1, cpus_per_worker: 1}}
tracking: {{experiment: e2e, register_as: smoke-model}}
{extra}""")
    return job


@contextlib.contextmanager
def stale_ray_address_file():
    """What a killed `ray start` head leaves in Ray's temp folder: its address, where nothing answers.
    A local submit must start its own Ray, not try this one (restored afterwards)."""
    import socket

    address_file = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    saved = address_file.read_text() if address_file.exists() else None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    address_file.parent.mkdir(parents=True, exist_ok=True)
    address_file.write_text(dead)
    try:
        yield
    finally:
        if saved is None:
            address_file.unlink(missing_ok=True)
        else:
            address_file.write_text(saved)


@pytest.fixture(scope="module")
def submitted(cifar_subset: Path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("submit")
    home = tmp / "home"
    job = small_job(tmp, cifar_subset)
    with stale_ray_address_file():
        result = subprocess.run(
            [sys.executable, "-m", "resplat", "submit", str(job)],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "RESPLAT_HOME": str(home), "RAY_ADDRESS": ""},
        )
    return result, home, job


def test_submit_finishes_and_prints_a_summary(submitted):
    result, _, _ = submitted
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "val top-1 / top-5" in result.stdout and "MLflow run" in result.stdout
    assert "Traceback" not in result.stderr


def test_the_mlflow_run_holds_params_metrics_spec_and_model(submitted):
    result, home, _ = submitted
    assert result.returncode == 0, result.stderr[-3000:]
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.depth"] == "8" and run.data.params["optim.batch_size"] == "50"
    assert run.data.params["data.train"].endswith(".beton")
    for metric in ("train_loss", "val_top1", "val_top5", "lr", "train_images_per_sec"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert [m.step for m in history] == [1, 2], metric
    top1 = run.data.metrics["val_top1"]
    assert 0.0 <= top1 <= 1.0 and run.data.metrics["val_top5"] >= top1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "spec")}
    assert artifacts == {"spec/submitted.yaml", "spec/resolved.yaml"}
    assert run.data.tags["resplat.data.train_sha256"]

    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model("models:/smoke-model/1")
    assert isinstance(model, torch.nn.Module)
    with torch.no_grad():
        logits = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 10)


def test_a_second_submit_reuses_the_prepared_beton(submitted, cifar_subset):
    result, home, _ = submitted
    assert result.returncode == 0, result.stderr[-3000:]
    betons = sorted((home / "betons").glob("*.beton"))
    assert len(betons) == 2  # train and val, prepared once
    from resplat.orchestrate.submit import prepare_data
    from resplat.spec import load_job

    os.environ["RESPLAT_HOME"] = str(home)
    try:
        spec = load_job(submitted[2])
        before = {p: p.stat().st_mtime_ns for p in betons}
        prepare_data(spec.data, num_classes=10)
        assert {p: p.stat().st_mtime_ns for p in sorted((home / "betons").glob("*.beton"))} == before
    finally:
        del os.environ["RESPLAT_HOME"]

"""The committed job specs: each validates, plans, and trains for real here with CPU overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resplat.orchestrate import submit as service
from resplat.spec import load_job

ROOT = Path(__file__).resolve().parents[1]


def test_resnet152_dry_run_plans_a_gpu_cluster(monkeypatch, tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "n01440764").mkdir(parents=True)
    monkeypatch.setenv("IMAGENET_DIR", str(tmp_path))
    plan = service.plan(load_job(ROOT / "jobs" / "resnet152.yaml"))
    assert plan["workers"] == "16 x (8 CPU, 1 GPU), placement SPREAD"
    assert plan["batch"] == "16 per worker, 256 global"
    assert plan["model"] == "imagenet ResNet-152, shortcut B, 1000 classes"
    assert "GiB per worker GPU" in plan["memory"]


def cpu_overrides(subset: Path, imagenet: bool) -> list[str]:
    common = [
        f"data.train={subset / 'train'}", f"data.val={subset / 'test'}", "data.loader_workers=1",
        "scaling.use_gpu=false", "scaling.num_workers=1", "scaling.cpus_per_worker=1",
        "schedule.max_steps=2", "tracking.register_as=null",
    ]
    if imagenet:
        common += ["data.resolution=64", "model.num_classes=10", "optim.global_batch_size=8",
                   "scaling.precision=fp32", "scaling.sync_batchnorm=false", "tracking.experiment=jobs"]
    return common


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18.yaml", "resnet152.yaml", "cifar10-plain110.yaml"])
def test_committed_jobs_train_for_real_with_cpu_overrides(name, cifar_subset, tmp_path, monkeypatch):
    import ray

    monkeypatch.setenv("RESPLAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAY_ADDRESS", "")
    job = ROOT / "jobs" / name
    spec = load_job(job, cpu_overrides(cifar_subset, imagenet=name.startswith("resnet")))
    prepared = service.prepare_data(spec.data, num_classes=spec.model.num_classes)
    try:
        result = service.submit(spec, prepared=prepared, spec_text=job.read_text())
    finally:
        ray.shutdown()
    assert result.metrics["global_step"] == 2
    assert 0 <= result.metrics["val_top1"] <= 1 and result.metrics["val_images"] == 100

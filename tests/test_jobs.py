"""The committed job specs: each validates, plans, and trains for real here with CPU overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from resplat.orchestrate import submit as service
from resplat.spec import load_job

ROOT = Path(__file__).resolve().parents[1]


def test_resnet152_dry_run_plans_a_gpu_cluster(monkeypatch, tmp_path, cifar_subset):
    (tmp_path / "train").symlink_to(cifar_subset / "train")  # 400 real images in 10 class folders
    (tmp_path / "val").symlink_to(cifar_subset / "test")
    monkeypatch.setenv("IMAGENET_DIR", str(tmp_path))
    plan = service.plan(load_job(ROOT / "jobs" / "resnet152.yaml"))
    assert plan["workers"] == "16 x (8 CPU, 1 GPU), placement SPREAD"
    assert plan["batch"] == "16 per worker, 256 global"
    # 400 images over 16 workers: 25 each, one full batch of 16; 120 epochs.
    assert plan["steps"] == "1 per epoch (400 train images), 120 in all"
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
@pytest.mark.parametrize("name", ["resnet18.yaml", "cifar10-plain110.yaml"])
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
    if name == "resnet18.yaml":
        check_ten_crop_eval(result.run_id)


def check_ten_crop_eval(run_id: str) -> None:
    """The paper's 10-crop, multi-scale test runs on the logged model and is logged to its run."""
    from mlflow.tracking import MlflowClient

    from resplat import paths
    from resplat.errors import InputError
    from resplat.orchestrate.evaluate import evaluate_run

    metrics = evaluate_run(run_id, ten_crop=True, scales=[72, 96], batch_size=50)
    assert metrics["eval_images"] == 100 and metrics["views"] == "10-crop at 72, 96 px"
    assert 0 <= metrics["eval_top1"] <= metrics["eval_top5"] <= 1
    run = MlflowClient(paths.default_tracking_uri()).get_run(run_id)
    assert run.data.metrics["eval_top1"] == metrics["eval_top1"]
    with pytest.raises(InputError, match="at least the 64-pixel crop"):
        evaluate_run(run_id, ten_crop=True, scales=[48])


def test_ten_crop_takes_corners_centre_and_their_flips():
    import torch

    from resplat.train.evaluation import ten_crop

    images = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).reshape(2, 3, 6, 8)
    crops = ten_crop(images, 4)
    assert len(crops) == 10 and all(c.shape == (2, 3, 4, 4) for c in crops)
    assert torch.equal(crops[0], images[..., :4, :4]) and torch.equal(crops[3], images[..., 2:, 4:])
    assert torch.equal(crops[4], images[..., 1:5, 2:6])
    assert torch.equal(crops[5], images[..., :4, :4].flip(-1))

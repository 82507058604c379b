"""The benchmarks' reduced modes: each script runs for real on a little data and appends a well-formed
record to a results folder of the test's own. The figures themselves are not judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = {"date", "command", "commit", "machine", "load", "reading", "figures"}


def run_quick(script: str, results: Path, *extra: str) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", "--results-dir", str(results),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [written] = results.iterdir()
    [entry] = json.loads(written.read_text())
    assert EVIDENCE <= set(entry), entry
    assert entry["figures"]["quick"] is True
    assert "quick mode" in entry["reading"]
    assert len(entry["load"]["load_average_1min_before_after"]) == 2
    assert written.name == f"{Path(script).stem}.json"
    return entry


def test_a_second_run_appends_to_the_history(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import common
    finally:
        sys.path.remove(str(ROOT / "bench"))
    for figure in (1, 2):
        common.record("x", {"figure": figure}, reading=f"run {figure}", load=common.LoadMeter(),
                      results_dir=tmp_path)
    history = json.loads((tmp_path / "x.json").read_text())
    assert [entry["figures"]["figure"] for entry in history] == [1, 2]


def test_gpu_benchmark_reduced_mode_on_the_cpu(tmp_path):
    figures = run_quick("gpu.py", tmp_path)["figures"]
    import torch

    assert figures["device"].startswith("CPU") != torch.cuda.is_available()
    assert figures["images_per_sec"] > 0
    assert figures["model_time_fraction"] + figures["data_wait_fraction"] == pytest.approx(1, abs=1e-3)
    assert figures["submit"] is None


@pytest.mark.slow
def test_overhead_benchmark_reduced_mode(tmp_path):
    figures = run_quick("overhead.py", tmp_path)["figures"]
    assert len(figures["resplat_images_per_sec_per_epoch"]) == 2
    assert all(v > 0 for v in figures["bare_images_per_sec_before_after"])
    assert figures["ratio"] > 0


@pytest.mark.slow
def test_first_step_benchmark_reduced_mode(tmp_path):
    figures = run_quick("first_step.py", tmp_path)["figures"]
    assert "cold" not in figures
    warm = figures["warm"]
    assert list(warm["phases_s"]) == ["python + CLI + spec", "input checks", "data", "MLflow run", "Ray start",
                                      "worker group", "first batch (FFCV)", "first step"]
    assert warm["seconds_to_first_step"] == pytest.approx(sum(warm["phases_s"].values()), abs=0.1)
    assert warm["seconds_to_first_step"] < warm["seconds_whole_run"]


@pytest.mark.slow
def test_sweep_startup_benchmark_reduced_mode(tmp_path):
    figures = run_quick("sweep_startup.py", tmp_path)["figures"]
    assert figures["trials"] == 1
    assert figures["sweep_wall_s"] > 0 and figures["training_alone_s"] > 0
    assert figures["fixed_cost_per_trial_s"] == pytest.approx(
        figures["sweep_wall_s"] - figures["training_alone_s"], abs=0.2)


@pytest.mark.slow
def test_time_to_accuracy_benchmark_reduced_mode(tmp_path):
    figures = run_quick("time_to_accuracy.py", tmp_path)["figures"]
    curve = figures["curve"]
    assert [epoch["epoch"] for epoch in curve] == [1, 2]
    assert 0 < curve[0]["minutes"] < curve[1]["minutes"] == figures["training_minutes"]
    assert set(figures["minutes_to"]) == set(figures["in_quickstart_epochs"]) == {"80%", "85%", "90%"}
    for name, minutes in figures["minutes_to"].items():  # reached at the first epoch at or above it, if any
        reached = [epoch["minutes"] for epoch in curve if epoch["val_top1"] >= int(name[:-1]) / 100]
        assert minutes == (reached[0] if reached else None)
    assert figures["quickstart_train_images_per_sec"] > 0

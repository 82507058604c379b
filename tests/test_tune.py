"""`resplat tune`: sweep spaces are checked before anything starts; real sweeps on CIFAR-10 images."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resplat.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def tiny_job(tmp: Path, subset: Path, epochs: int = 1, register_as: str = "tune-model") -> Path:
    job = tmp / "tiny.yaml"
    job.write_text(f"""
name: tiny
model: {{family: cifar, depth: 8, num_classes: 10}}
data: {{train: {subset / 'train'}, val: {subset / 'test'}, loader_workers: 1}}
optim: {{lr: 0.05, batch_size: 50}}
schedule: {{kind: cosine, epochs: {epochs}}}
scaling: {{num_workers: 1, cpus_per_worker: 1}}
checkpoint: {{keep: 1}}
tracking: {{experiment: tune-e2e, register_as: {register_as}}}
""")
    return job


def write_space(tmp: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def run_cli(args: list[str], home: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "resplat", *args], cwd=ROOT, capture_output=True, text=True, timeout=400,
        env={**os.environ, "RESPLAT_HOME": str(home), "RAY_ADDRESS": "", "COLUMNS": "200"}, check=False, **kwargs,
    )


def client_for(home: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def sweep_runs(home: Path, sweep: str):
    client = client_for(home)
    experiment = client.get_experiment_by_name("tune-e2e")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("resplat.sweep") == sweep]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


# ---------------------------------------------------------------- bad spaces


@pytest.mark.parametrize("params, expected", [
    ("model.shortcutt: {grid: [A, B]}", "params.model.shortcutt: unknown field; did you mean 'shortcut'?"),
    ("optim.lr: {uniform: [low, 0.1]}", "params.optim.lr.uniform.0: Input should be a valid number"),
    ("model.depth: {grid: [8, 21]}", "params.model.depth: grid value 21 is rejected by the job"),
    ("optim.lr: {loguniform: [0, 0.1]}", "params.optim.lr: loguniform needs low > 0"),
])
def test_bad_spaces_fail_before_anything_starts(tmp_path, cifar_subset, params, expected):
    home = tmp_path / "home"
    job = tiny_job(tmp_path, cifar_subset)
    space = write_space(tmp_path, f"name: bad\nbase_job: {job}\nparams:\n  {params}\n")
    from resplat.sweep import load_space

    with pytest.raises(SpecError) as info:
        load_space(str(space))
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems

    result = run_cli(["tune", "--space", str(space)], home)
    assert result.returncode == 2, result.stderr
    assert expected.split(":")[0] in result.stderr and "Traceback" not in result.stderr
    assert not home.exists()


def test_committed_spaces_validate(monkeypatch, tmp_path):
    for split in ("train", "test"):
        (tmp_path / "cifar10" / split / "cat").mkdir(parents=True)
    monkeypatch.setenv("RESPLAT_DATA", str(tmp_path))
    monkeypatch.chdir(ROOT)
    from resplat.sweep import load_space

    assert load_space("shortcuts").space.params["model.shortcut"].grid == ["A", "B", "C", "none"]
    assert load_space("lr").space.scheduler.kind == "asha"
    assert load_space("depth").space.params["model.depth"].grid == [20, 32, 44, 56, 110]


# ---------------------------------------------------------------- a real comparison sweep


@pytest.fixture(scope="module")
def shortcut_sweep(cifar_subset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    home = tmp / "home"
    job = tiny_job(tmp, cifar_subset)
    space = write_space(tmp, f"""
name: tiny-shortcuts
base_job: {job}
params:
  model.shortcut: {{grid: [A, B, C, none]}}
scheduler: {{kind: fifo}}
max_concurrent: 2
""")
    return run_cli(["tune", "--space", str(space)], home), home, tmp


def test_sweep_of_shortcuts_tracks_four_nested_runs_and_a_champion(shortcut_sweep):
    result, home, _ = shortcut_sweep
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ranked by val_top1" in result.stdout and "Traceback" not in result.stderr
    client, parent, children = sweep_runs(home, "tiny-shortcuts")
    assert parent.info.status == "FINISHED" and parent.data.tags["resplat.kind"] == "sweep"
    assert sorted(c.data.params["model.shortcut"] for c in children) == ["A", "B", "C", "none"]
    assert {c.data.tags["resplat.trial.status"] for c in children} == {"finished"}
    assert all(c.info.status == "FINISHED" for c in children)
    # One worker each: trained in the Tune trial process, checkpointed in the sweep's Tune folder.
    assert all([m.value for m in client.get_metric_history(c.info.run_id, "world_size")] == [1] for c in children)
    assert len(list((home / "tune" / "tiny-shortcuts").rglob("state.pt"))) == 4
    assert not (home / "ray_results").exists()
    best = parent.data.tags["resplat.sweep.best_trial"]
    best_run = next(c for c in children if c.data.tags["resplat.trial"] == best)
    assert best_run.data.metrics["val_top1"] == max(c.data.metrics["val_top1"] for c in children)
    champion = client.get_model_version_by_alias("tune-model", "champion")
    assert champion.run_id == best_run.info.run_id
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/space.yaml", "sweep/results.csv", "sweep/results.txt"} <= artifacts


def test_the_report_renders_the_sweep(shortcut_sweep, tmp_path):
    result, home, _ = shortcut_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    from resplat.tracking.report import build_report

    index = build_report(f"sqlite:///{home / 'mlflow.db'}", "tiny-shortcuts", tmp_path / "report")
    html = index.read_text()
    _, _, children = sweep_runs(home, "tiny-shortcuts")
    assert all(c.data.tags["resplat.trial"] in html for c in children)
    assert (index.parent / "error_curves.png").stat().st_size > 0


def test_a_worse_sweep_does_not_take_the_champion(shortcut_sweep):
    """The champion moves only when the new best beats it: a sweep that cannot learn keeps it.
    Its trial has two workers, so it fits a TorchTrainer of its own (the one-worker trials above
    train in their Tune trial process)."""
    result, home, tmp = shortcut_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(home)
    before = client.get_model_version_by_alias("tune-model", "champion").version
    space = write_space(tmp, f"""
name: tiny-frozen
base_job: {tmp / 'tiny.yaml'}
params:
  optim.lr: {{grid: [1.0e-9]}}
scheduler: {{kind: fifo}}
overrides: [model.shortcut=none, scaling.num_workers=2]
""", "frozen.yaml")
    second = run_cli(["tune", "--space", str(space)], home)
    assert second.returncode == 0, second.stderr[-3000:]
    _, _, (trial,) = sweep_runs(home, "tiny-frozen")
    assert [m.value for m in client.get_metric_history(trial.info.run_id, "world_size")] == [2]
    versions = client.search_model_versions("name='tune-model'")
    assert len(versions) == 2
    after = client.get_model_version_by_alias("tune-model", "champion").version
    champion_value = client.get_run(client.get_model_version("tune-model", before).run_id).data.metrics["val_top1"]
    new_value = client.get_run(client.get_model_version("tune-model", "2").run_id).data.metrics["val_top1"]
    assert after == (before if new_value <= champion_value else "2")


# ---------------------------------------------------------------- interrupted and resumed


def wait_for_trial_epoch(home: Path, trials: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Poll the store until `trials` child runs exist and the newest has logged an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        client = client_for(home)
        experiment = client.get_experiment_by_name("tune-e2e")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        children = [r for r in runs if "resplat.trial" in r.data.tags]
        if len(children) >= trials and all(client.get_metric_history(c.info.run_id, "train_loss")
                                           for c in children):
            return
        time.sleep(0.5)
    raise AssertionError(f"trial {trials} logged no epoch within {timeout} s")


def test_an_interrupted_sweep_resumes_without_repeating_finished_trials(cifar_medium, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    client = client_for(home)
    client.search_experiments()  # the store exists before the sweep: polling never races its migration
    # Epochs of a few seconds: trial 2 is still training when the interrupt arrives after its epoch 1.
    job = tiny_job(tmp_path, cifar_medium, epochs=3, register_as="resume-model")
    space = write_space(tmp_path, f"""
name: tiny-resume
base_job: {job}
params:
  model.shortcut: {{grid: [A, none]}}
scheduler: {{kind: fifo}}
""")
    first = subprocess.Popen(
        [sys.executable, "-m", "resplat", "tune", "--space", str(space)], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "RESPLAT_HOME": str(home), "RAY_ADDRESS": "", "COLUMNS": "200"},
    )
    wait_for_trial_epoch(home, 2, first)  # trial 1 finished, trial 2 under way
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 130, out[-3000:] + err[-3000:]
    assert "--resume tiny-resume" in err and "Traceback" not in err
    _, parent, children = sweep_runs(home, "tiny-resume")
    assert parent.info.status == "KILLED"
    finished = {c.info.run_id: c for c in children if c.data.tags["resplat.trial.status"] == "finished"}
    assert len(finished) == 1 and len(children) == 2
    history = {run_id: [(m.step, m.timestamp) for m in client.get_metric_history(run_id, "train_loss")]
               for run_id in finished}
    assert {c.info.status for c in children if c.info.run_id not in finished} == {"KILLED"}

    second = run_cli(["tune", "--space", str(space), "--resume", "tiny-resume"], home)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "ranked by val_top1" in second.stdout
    _, parent, children = sweep_runs(home, "tiny-resume")
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert {c.data.tags["resplat.trial.status"] for c in children} == {"finished"}
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
        assert set(steps) == {1, 2, 3}
        if child.info.run_id in finished:  # not run again: the same epochs, logged at the same times
            assert [(m.step, m.timestamp) for m in client.get_metric_history(child.info.run_id, "train_loss")] \
                == history[child.info.run_id]
    assert client.get_model_version_by_alias("resume-model", "champion").run_id in {c.info.run_id for c in children}


# ---------------------------------------------------------------- ASHA stops weak trials


def test_asha_stops_weak_trials_early(cifar_medium, tmp_path):
    home = tmp_path / "home"
    job = tiny_job(tmp_path, cifar_medium, epochs=3, register_as="asha-model")
    # 40 steps per epoch at lr 0.1 bring the epoch's train loss clearly below an untouched net's (lr 1e-7,
    # about ln 10; 2.17 vs 2.34 here). Val loss after one epoch is no judge: the BN running statistics
    # lag weights that move this fast, and it was seen above the untouched net's.
    # Reduction factor 3 puts the rungs at epochs 1 and 3 (= max_t), so the only decision is after epoch 1:
    # a trial goes on when it is in the best third of those seen before it. The weak trial meets the first
    # good one; the second good one meets a good and a weak one, so ASHA must let it go on.
    space = write_space(tmp_path, f"""
name: tiny-asha
base_job: {job}
params:
  optim.lr: {{grid: [0.1, 1.0e-7, 0.1]}}
metric: train_loss
mode: min
scheduler: {{kind: asha, grace_period: 1, reduction_factor: 3}}
max_concurrent: 1
""")
    result = run_cli(["tune", "--space", str(space)], home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client, _parent, children = sweep_runs(home, "tiny-asha")
    statuses = {c.info.run_id: c.data.tags["resplat.trial.status"] for c in children}
    assert len(children) == 3 and list(statuses.values()).count("stopped_early") == 1, statuses
    for child in children:
        epochs = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
        if child.data.tags["resplat.trial.status"] == "stopped_early":
            # Stopping is asynchronous: a trial may log one more epoch before the stop reaches it.
            assert child.info.status != "RUNNING"
            assert float(child.data.params["optim.lr"]) < 1e-3, "ASHA stopped a good trial"
        else:
            assert max(epochs) == 3 and child.info.status == "FINISHED"
    assert "stopped_early" in result.stdout

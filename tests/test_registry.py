"""The registry flow and lineage on a model really trained on CIFAR-10 images: list, show, promote,
predict real test photos, load outside resplat, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
MODEL = "registry-test-model"
EPOCHS = 3
CIFAR10_CLASSES = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}

pytestmark = pytest.mark.slow


def one_epoch_job(path: Path, subset: Path, *, name: str, tracking: str, epochs: int = 1) -> Path:
    """A job file: ResNet-8 on the image subset for one epoch (or `epochs`), with this `tracking:` section."""
    path.write_text(f"""
name: {name}
model: {{family: cifar, depth: 8, num_classes: 10}}
data: {{train: {subset / 'train'}, val: {subset / 'test'}, loader_workers: 1}}
optim: {{lr: 0.05, batch_size: 50}}
schedule: {{kind: cosine, epochs: {epochs}}}
scaling: {{num_workers: 1, cpus_per_worker: 1}}
tracking: {tracking}
""")
    return path


@pytest.fixture(scope="module")
def trained(cifar_subset: Path, tmp_path_factory):
    """One real job (ResNet-8, EPOCHS epochs, a checkpoint each) registered as MODEL: (tracking URI, run id,
    RESPLAT_HOME, HEAD before)."""
    tmp = tmp_path_factory.mktemp("registry")
    home = tmp / "home"
    job = one_epoch_job(tmp / "job.yaml", cifar_subset, name="registry-job",
                        tracking=f"{{experiment: registry, register_as: {MODEL}}}", epochs=EPOCHS)
    before = git("rev-parse", "HEAD")
    done = subprocess.run([sys.executable, "-m", "resplat", "submit", str(job)], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "RESPLAT_HOME": str(home), "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    uri = f"sqlite:///{home / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("registry").experiment_id])
    assert len(runs) == 1
    return uri, runs[0].info.run_id, home, before


def is_ancestor(older: str, newer: str) -> bool:
    return subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", older, newer],
                          check=False).returncode == 0


def git(*arguments: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *arguments], check=True, capture_output=True,
                          text=True).stdout.strip()


def cli(*arguments: str):
    from resplat.cli.main import app

    return CliRunner().invoke(app, list(arguments), env={"COLUMNS": "200"})  # tables unwrapped


def test_every_run_carries_its_lineage(trained):
    from mlflow.tracking import MlflowClient

    uri, run_id, home, before = trained
    tags = MlflowClient(uri).get_run(run_id).data.tags
    commit = tags["resplat.git.commit"]
    # Others may commit while the job runs: the recorded commit is the checkout's HEAD at run creation.
    assert is_ancestor(before, commit) and is_ancestor(commit, "HEAD")
    assert tags["resplat.git.dirty"] in ("true", "false")
    assert tags["resplat.host"] == socket.gethostname()
    assert tags["resplat.devices"] == "cpu" or tags["resplat.devices"].startswith("cuda: ")
    for library in ("torch", "ray", "ffcv", "mlflow"):
        assert tags[f"resplat.version.{library}"] == version(library)
    betons = {json.loads(p.read_text())["sha256"] for p in (home / "betons").glob("*.beton.json")}
    assert {tags["resplat.data.train_sha256"], tags["resplat.data.val_sha256"]} == betons

    shown = cli("runs", "show", run_id, "--tracking-uri", uri)
    assert shown.exit_code == 0, shown.output
    for value in (commit, tags["resplat.data.train_sha256"], version("torch"), socket.gethostname(), "FINISHED"):
        assert value in shown.output


def test_list_promote_show(trained):
    uri = trained[0]
    listed = cli("models", "list", "--tracking-uri", uri)
    assert listed.exit_code == 0 and MODEL in listed.output, listed.output

    promoted = cli("models", "promote", MODEL, "1", "--alias", "champion", "--tracking-uri", uri)
    assert promoted.exit_code == 0, promoted.output
    assert f"{MODEL}@champion -> version 1" in promoted.output

    from resplat.tracking.registry import list_models, resolve, show_model

    assert list_models(uri)[0].aliases == {"champion": "1"}
    assert resolve(uri, f"{MODEL}@champion") == (MODEL, "1") == resolve(uri, MODEL) == resolve(uri, f"{MODEL}/1")
    (only,) = show_model(uri, MODEL)
    assert only.aliases == ["champion"] and only.run_id == trained[1] and "val_top1" in only.metrics
    shown = cli("models", "show", MODEL, "--tracking-uri", uri)
    assert shown.exit_code == 0 and "champion" in shown.output and trained[1] in shown.output, shown.output


def test_predict_real_test_photos_by_class_name(trained, cifar_subset):
    from mlflow.tracking import MlflowClient

    from resplat.tracking.predict import predict

    uri, run_id = trained[:2]
    photos = sorted((cifar_subset / "test").glob("*/*"))
    _, predictions = predict(uri, MODEL, photos, top=5)
    for prediction in predictions:
        names = [name for name, _ in prediction.top]
        probabilities = [p for _, p in prediction.top]
        assert len(names) == 5 and set(names) <= CIFAR10_CLASSES
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-5
    # The same eval transform as the FFCV validation pipeline: accuracy over the same photos
    # agrees with the val_top1 the run logged (JPEG decoders may differ on a pixel or two).
    correct = sum(p.top[0][0] == p.image.parent.name for p in predictions)
    logged = MlflowClient(uri).get_run(run_id).data.metrics["val_top1"]
    assert abs(correct / len(predictions) - logged) <= 0.03

    shown = cli("models", "predict", f"{MODEL}/1", str(photos[0]), str(photos[-1]), "--tracking-uri", uri)
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.output.splitlines() if line.startswith(str(cifar_subset))]
    assert len(lines) == 2 and all(line.count("%") == 5 for line in lines)


OUTSIDE_RESPLAT = """
import sys
sys.path = [p for p in sys.path if not p.rstrip("/").endswith("platform")]
sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                 and "editable" not in repr(f).lower()]
import importlib.util
assert importlib.util.find_spec("resplat") is None, "resplat is importable"
import mlflow, mlflow.pytorch, torch
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pytorch.load_model(sys.argv[2], map_location="cpu").eval()
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[3])), sys.argv[4])
import resplat
print(resplat.__file__)
"""


def test_the_logged_model_loads_outside_resplat_with_signature_and_example(trained, tmp_path):
    import mlflow
    import mlflow.models
    import mlflow.pytorch
    import torch

    uri = trained[0]
    model_uri = f"models:/{MODEL}/1"
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    assert info.metadata["resplat.pipeline"] == "cifar" and len(info.metadata["resplat.classes"]) == 10

    inputs = torch.randn(3, 3, 32, 32)
    torch.save(inputs, tmp_path / "in.pt")
    outside = subprocess.run([sys.executable, "-c", OUTSIDE_RESPLAT, uri, model_uri, str(tmp_path / "in.pt"),
                              str(tmp_path / "out.pt")], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert outside.returncode == 0, outside.stderr[-3000:]
    assert "/code/resplat/" in outside.stdout  # the bundled copy, not the checkout
    with torch.no_grad():
        expected = mlflow.pytorch.load_model(model_uri, map_location="cpu").eval()(inputs)
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_the_declared_requirements_are_what_mlflow_would_infer(trained, tmp_path):
    """resplat pins the model's requirements instead of letting MLflow infer them in a subprocess per
    worker; the list must still be what that inference writes (less resplat: it travels as code)."""
    import mlflow
    import mlflow.pytorch
    import numpy as np

    from resplat.tracking.model_card import bundle_model_code

    mlflow.set_tracking_uri(trained[0])
    model_uri = f"models:/{MODEL}/1"
    declared = Path(mlflow.artifacts.download_artifacts(f"{model_uri}/requirements.txt")).read_text().split()
    mlflow.pytorch.save_model(mlflow.pytorch.load_model(model_uri, map_location="cpu"), tmp_path / "inferred",
                              serialization_format="pickle", code_paths=[str(bundle_model_code(tmp_path / "code"))],
                              input_example=np.zeros((1, 3, 32, 32), np.float32))
    inferred = (tmp_path / "inferred" / "requirements.txt").read_text().split()
    assert f"torch=={version('torch').split('+')[0]}" in declared
    assert sorted(declared) == sorted(set(inferred) - {f"resplat=={version('resplat')}"})


@pytest.mark.parametrize(("arguments", "message"), [
    (["models", "show", "no-such-model"], "no registered model 'no-such-model'"),
    (["models", "promote", MODEL, "7"], f"model '{MODEL}' has no version '7'; versions: 1"),
    (["models", "predict", f"{MODEL}@gold", "IMAGE"], f"model '{MODEL}' has no alias 'gold'"),
    (["models", "predict", MODEL, "NOT_AN_IMAGE"], "not an image that can be read"),
    (["models", "predict", MODEL, "/no/such.png"], "/no/such.png: no such image file"),
    (["runs", "show", "0123456789abcdef"], "no MLflow run 0123456789abcdef"),
    (["models", "epochs", "0123456789abcdef"], "no MLflow run 0123456789abcdef"),
    (["models", "register", "0123456789abcdef", "--best", "--name", "x"], "no MLflow run 0123456789abcdef"),
    (["models", "register", "RUN", "--epoch", "9", "--name", "x"], "has no model of epoch 9; epochs: 1, 2, 3"),
    (["models", "register", "RUN", "--name", "x"], "give --best or --epoch N"),
    (["models", "register", "RUN", "--best", "--metric", "val_nope", "--name", "x"], "--metric 'val_nope'"),
])
def test_bad_input_is_one_line_and_exit_2(trained, cifar_subset, tmp_path, arguments, message):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not a picture\n")
    photo = str(next((cifar_subset / "test").glob("*/*")))
    arguments = [{"IMAGE": photo, "NOT_AN_IMAGE": str(not_an_image), "RUN": trained[1]}.get(a, a) for a in arguments]
    result = cli(*arguments, "--tracking-uri", trained[0])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_submit_from_run_trains_the_same_spec_as_a_new_tagged_run(trained):
    from mlflow.tracking import MlflowClient

    uri, run_id, home = trained[:3]
    env = {**os.environ, "RESPLAT_HOME": str(home), "RAY_ADDRESS": "", "MLFLOW_TRACKING_URI": uri}
    both = cli("submit", "job.yaml", "--from-run", run_id)
    assert both.exit_code == 2 and "give a JOB.yaml or --from-run RUN_ID" in both.output, both.output
    done = subprocess.run([sys.executable, "-m", "resplat", "submit", "--from-run", run_id], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_run(run_id).info.experiment_id])
    (again,) = [r for r in runs if r.info.run_id != run_id]
    assert again.data.tags["resplat.from_run"] == run_id and again.info.status == "FINISHED"
    original = client.get_run(run_id).data.params
    assert again.data.params == original


def val_top1_by_epoch(uri: str, run_id: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, "val_top1")}


def test_each_checkpointed_epoch_is_a_logged_model_at_its_step(trained):
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    from resplat.tracking.registry import epoch_models

    uri, run_id = trained[:2]
    client = MlflowClient(uri)
    val_top1 = val_top1_by_epoch(uri, run_id)
    assert sorted(val_top1) == list(range(1, EPOCHS + 1))
    steps = {output.model_id: output.step for output in client.get_run(run_id).outputs.model_outputs}
    views = epoch_models(uri, run_id)
    assert [view.epoch for view in views] == list(range(1, EPOCHS + 1))
    for view in views:
        assert steps[view.model_id] == view.epoch
        assert view.metrics["val_top1"] == val_top1[view.epoch] and "val_top5" in view.metrics
        logged = client.get_logged_model(view.model_id)
        assert logged.source_run_id == run_id and logged.name == f"model-epoch-{view.epoch}"
    # Linking the step's metrics to each model left the run's own history at one value per step.
    for key in client.get_run(run_id).data.metrics:
        history = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(history) == len(set(history)), key

    # Each is its epoch's network: the last epoch's is the final model, the first one differs.
    mlflow.set_tracking_uri(uri)
    inputs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final = mlflow.pytorch.load_model(f"models:/{MODEL}/1", map_location="cpu").eval()(inputs)
        last = mlflow.pytorch.load_model(views[-1].model_uri, map_location="cpu").eval()(inputs)
        first = mlflow.pytorch.load_model(views[0].model_uri, map_location="cpu").eval()(inputs)
    assert torch.equal(last, final) and not torch.equal(first, final)


def test_register_the_best_epoch_or_a_given_one(trained):
    from mlflow.tracking import MlflowClient

    from resplat.tracking.registry import epoch_models

    uri, run_id = trained[:2]
    val_top1 = val_top1_by_epoch(uri, run_id)
    best_epoch = max(sorted(val_top1), key=val_top1.get)  # the earliest of equals, as register picks
    by_epoch = {view.epoch: view for view in epoch_models(uri, run_id)}

    best = cli("models", "register", run_id, "--best", "--name", "best-epoch", "--tracking-uri", uri)
    assert best.exit_code == 0, best.output
    assert f"registered epoch {best_epoch} of run {run_id}" in best.output and "best-epoch version 1" in best.output
    chosen = MlflowClient(uri).get_model_version("best-epoch", "1")
    assert chosen.source == by_epoch[best_epoch].model_uri and chosen.run_id == run_id

    first = cli("models", "register", run_id, "--epoch", "1", "--name", "best-epoch", "--tracking-uri", uri)
    assert first.exit_code == 0 and "registered epoch 1 " in first.output, first.output
    assert MlflowClient(uri).get_model_version("best-epoch", "2").source == by_epoch[1].model_uri

    listed = cli("models", "epochs", run_id, "--tracking-uri", uri)
    assert listed.exit_code == 0, listed.output
    for epoch, view in by_epoch.items():
        assert view.model_uri in listed.output and f"{val_top1[epoch]:.2%}" in listed.output
    assert "best-epoch/1" in listed.output and "best-epoch/2" in listed.output


def test_a_run_without_epoch_models_is_one_line_exit_2(trained):
    from mlflow.tracking import MlflowClient

    uri = trained[0]
    client = MlflowClient(uri)
    bare = client.create_run(client.create_experiment("no-epoch-models")).info.run_id
    result = cli("models", "register", bare, "--best", "--name", "x", "--tracking-uri", uri)
    assert result.exit_code == 2 and f"run {bare} has no epoch models" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output

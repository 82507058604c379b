"""`resplat report`: a sweep recorded in a real MLflow store becomes plots and an HTML page."""

from __future__ import annotations

import html
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from resplat.cli.report import report_command
from resplat.errors import InputError
from resplat.tracking import report as report_module
from resplat.tracking.report import build_report

logging.getLogger("alembic").setLevel(logging.WARNING)

SWEEP = "cifar-shortcuts"
EPOCHS = 6


@dataclass(frozen=True)
class TrialPlan:
    trial_id: str
    depth: int
    shortcut: str
    epochs: int
    status: str
    final_val_top1: float


# One trial id carries HTML metacharacters: the page must escape what comes from MLflow.
TRIALS = [
    TrialPlan("t0-plain8", 8, "none", EPOCHS, "finished", 0.78),
    TrialPlan("t1-res8A", 8, "A", EPOCHS, "finished", 0.82),
    TrialPlan("t2-res20A", 20, "A", EPOCHS, "finished", 0.88),
    TrialPlan("t3-res20B<&>", 20, "B", EPOCHS, "finished", 0.89),
    TrialPlan("t4-res20C", 20, "C", 2, "stopped_early", 0.61),
]


@dataclass(frozen=True)
class Store:
    uri: str
    parent_id: str
    older_parent_id: str
    other_sweep: str


def _epoch_metrics(plan: TrialPlan, epoch: int) -> dict[str, float]:
    """Accuracies that rise towards the planned final value at EPOCHS."""
    progress = epoch / EPOCHS
    val_top1 = plan.final_val_top1 - 0.4 * (1 - progress)
    return {
        "train_loss": 2.0 * (1 - progress) + 0.2,
        "train_top1": min(0.99, val_top1 + 0.05),
        "val_top1": val_top1,
        "val_top5": min(0.999, val_top1 + 0.1),
        "val_loss": 1.5 * (1 - progress) + 0.3,
        "lr": 0.1,
    }


def _log_trial(client, experiment_id: str, parent_id: str, plan: TrialPlan) -> None:
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, run_name=plan.trial_id, tags={
        "mlflow.parentRunId": parent_id, "resplat.trial": plan.trial_id,
        "resplat.trial.status": plan.status,
    })
    params = {"model.family": "cifar", "model.depth": str(plan.depth),
              "model.shortcut": plan.shortcut, "optim.lr": "0.1", "data.train": "/data/train"}
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, epoch) for epoch in range(1, plan.epochs + 1)
               for key, value in _epoch_metrics(plan, epoch).items()]
    client.log_batch(run.info.run_id, metrics=metrics,
                     params=[Param(key, value) for key, value in params.items()])
    client.set_terminated(run.info.run_id)


def _create_parent(client, experiment_id: str, name: str) -> str:
    run = client.create_run(experiment_id, run_name=name, tags={
        "resplat.kind": "sweep", "resplat.sweep": name,
        "resplat.sweep.metric": "val_top1", "resplat.sweep.mode": "max",
    })
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """One MLflow store: an older and a newer run of SWEEP, and another sweep elsewhere."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("sweeps", artifact_location=(root / "a1").as_uri())
    older_parent_id = _create_parent(client, experiment_id, SWEEP)
    _log_trial(client, experiment_id, older_parent_id, TRIALS[0])
    time.sleep(0.01)  # the newer run must start later
    parent_id = _create_parent(client, experiment_id, SWEEP)
    for plan in TRIALS:
        _log_trial(client, experiment_id, parent_id, plan)
    client.set_terminated(parent_id)
    other_experiment = client.create_experiment("other", artifact_location=(root / "a2").as_uri())
    other_parent = _create_parent(client, other_experiment, "imagenet-depths")
    _log_trial(client, other_experiment, other_parent, TRIALS[1])
    return Store(uri, parent_id, older_parent_id, "imagenet-depths")


def _ranked_rows(page: str) -> list[str]:
    table = re.search(r'<table class="ranked">(.*?)</table>', page, re.DOTALL).group(1)
    return re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)[1:]  # without the header row


@dataclass(frozen=True)
class Built:
    out: Path
    page: str


@pytest.fixture(scope="module")
def built(store: Store, tmp_path_factory) -> Built:
    """The report of SWEEP (looked up by name), built once for the tests that only read it."""
    out = tmp_path_factory.mktemp("report") / "out"
    index = build_report(store.uri, SWEEP, out)
    assert index == out / "index.html"
    return Built(out, index.read_text())


def test_report_has_valid_plots_and_one_row_per_trial(store: Store, built: Built):
    for name in ("error_curves.png", "final_error_by_depth.png"):
        with Image.open(built.out / name) as image:
            image.verify()
            assert image.format == "PNG"
            assert image.size[0] >= 400 and image.size[1] >= 300
        assert f'src="{name}"' in built.page
    assert len(_ranked_rows(built.page)) == len(TRIALS)  # the newest run of the name
    assert store.parent_id in built.page
    assert html.escape("t3-res20B<&>") in built.page and "t3-res20B<&>" not in built.page


def test_ranked_table_orders_by_metric_and_shows_early_stop(built: Built):
    rows = _ranked_rows(built.page)

    assert "t3-res20B" in rows[0]  # best final val_top1
    stopped = next(r for r in rows if "t4-res20C" in r)
    assert "stopped_early" in stopped
    assert "<td>2</td>" in stopped  # epochs run


def test_depth_grid_puts_paper_number_beside_ours(built: Built):
    grid = re.search(r'<table class="grid">(.*?)</table>', built.page, re.DOTALL).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", grid, re.DOTALL)
    depth20 = next(r for r in rows if r.startswith("<th>20</th>"))
    depth8 = next(r for r in rows if r.startswith("<th>8</th>"))

    assert "paper 8.75" in depth20
    assert "12.00" in depth20  # ours: ResNet-20 A ends at val top-1 0.88
    assert "paper" not in depth8  # the paper has no 8-layer net


def test_lookup_by_run_id_finds_that_parent(store: Store):
    by_id = report_module.load_sweep(store.uri, store.older_parent_id)
    by_name = report_module.load_sweep(store.uri, SWEEP)

    assert by_id.run_id == store.older_parent_id and len(by_id.trials) == 1
    assert by_name.run_id == store.parent_id and len(by_name.trials) == len(TRIALS)


def test_unknown_sweep_lists_existing_ones(store: Store, tmp_path: Path):
    with pytest.raises(InputError) as raised:
        build_report(store.uri, "no-such-sweep", tmp_path / "out")

    message = str(raised.value)
    assert "no-such-sweep" in message
    assert SWEEP in message and store.other_sweep in message
    assert not (tmp_path / "out").exists()


def test_missing_store_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="no MLflow store"):
        build_report(f"sqlite:///{tmp_path / 'absent.db'}", SWEEP, tmp_path / "out")
    assert not (tmp_path / "absent.db").exists()


def test_failure_midway_leaves_nothing_behind(store: Store, tmp_path: Path, monkeypatch):
    def broken_plot(*args, **kwargs):
        raise RuntimeError("plotting broke")

    monkeypatch.setattr(report_module, "plot_final_errors", broken_plot)
    with pytest.raises(RuntimeError, match="plotting broke"):
        build_report(store.uri, SWEEP, tmp_path / "out")

    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_an_existing_report_as_it_was(store: Store, built: Built, tmp_path: Path,
                                                     monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(built.out, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    monkeypatch.setattr(report_module, "render_html", lambda sweep: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_report(store.uri, store.older_parent_id, out)

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so that "report" is a sub-command as in resplat
    app.command("report")(report_command)
    return app


def test_cli_prints_where_the_report_is(store: Store, tmp_path: Path):
    out = tmp_path / "cli-out"
    arguments = ["report", SWEEP, "--out", str(out), "--tracking-uri", store.uri]
    result = CliRunner().invoke(_cli(), arguments)

    assert result.exit_code == 0, result.output
    assert str(out / "index.html") in result.output.replace("\n", "")
    assert (out / "index.html").is_file()


def test_cli_exits_2_on_unknown_sweep(store: Store, tmp_path: Path):
    result = CliRunner().invoke(_cli(), ["report", "nope", "-o", str(tmp_path / "x"),
                                         "--tracking-uri", store.uri])

    assert result.exit_code == 2
    assert "nope" in result.output and SWEEP in result.output

"""dashboards/: valid Grafana JSON, a Prometheus config promtool accepts, and every panel's query
answered by a real Prometheus scraping a real Ray cluster while a resplat job trains."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "dashboards" / "grafana").glob("*.json"))
SHIPPED_CONFIG = ROOT / "dashboards" / "prometheus" / "prometheus.yml"
VARIABLE_LABELS = ("job", "run", "trial", "worker", "sweep", "ip")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def query_panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in query_panels(dashboard) for t in p["targets"]]


def test_the_three_dashboards_are_shipped_and_built_from_the_metric_names():
    assert [p.name for p in DASHBOARDS] == ["cluster.json", "sweeps.json", "training.json"]
    spec = importlib.util.spec_from_file_location("dashboards_build", ROOT / "dashboards" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for path in DASHBOARDS:
        assert path.read_text() == build.render(build.DASHBOARDS[path.name]), f"{path.name}: run dashboards/build.py"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_grafana_json_without_hard_coded_ids(path):
    dashboard = load(path)
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in query_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    for title, expr in expressions(dashboard):
        for label, value in re.findall(r'\b(\w+)=~?"([^"]*)"', expr):
            if label in VARIABLE_LABELS:
                assert value.startswith("$"), f"{path.name} {title}: {label} is hard-coded in {expr}"
        for name in re.findall(r"\$(\w+)", expr):
            assert name in variables, f"{path.name} {title}: ${name} is not a variable"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"
    assert not re.search(r"raysubmit_|[0-9a-f]{32}", path.read_text()), "a hard-coded run or job id"


def promtool_check(config: Path) -> None:
    result = subprocess.run(["promtool", "check", "config", str(config)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_shipped_prometheus_config():
    promtool_check(SHIPPED_CONFIG)


def test_the_generated_config_points_at_the_given_discovery_file(tmp_path):
    import yaml

    from resplat.cluster.prometheus import write_config

    sd_file = tmp_path / "session" / "prom_metrics_service_discovery.json"
    config = write_config(tmp_path / "prometheus.yml", sd_file=sd_file, scrape_interval="2s")
    loaded = yaml.safe_load(config.read_text())
    assert loaded["scrape_configs"][0]["file_sd_configs"][0]["files"] == [str(sd_file)]
    assert loaded["global"]["scrape_interval"] == "2s"
    promtool_check(config)


def test_unknown_trial_states_are_refused_before_anything_is_set():
    from resplat.orchestrate.metrics import SweepMetrics

    metrics = SweepMetrics.__new__(SweepMetrics)  # the check runs before any Ray call
    with pytest.raises(ValueError, match="unknown trial states.*'lost'"):
        metrics.set_counts({"running": 1, "lost": 2})


def test_gauge_values_are_set_again_until_their_owner_is_gone():
    import gc

    from resplat.orchestrate import metrics as m

    keeper, before = m.keeper, m.keeper.owners()
    train = m.TrainMetrics(job="keep", run="r", trial="", worker=0)
    sweep = m.SweepMetrics("keep")
    train.set(m.RESTARTS, 1)
    sweep.set_counts({"running": 1})
    assert keeper.owners() == before + 2 and keeper.refreshing
    del train, sweep
    gc.collect()
    assert keeper.owners() == before
    if before == 0:  # nothing left to keep: the thread ends
        deadline = time.monotonic() + 30
        while keeper.refreshing and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not keeper.refreshing


# ---------------------------------------------------------------- against a real Prometheus and Ray


def prometheus_query(url: str, expr: str, start: float, end: float) -> list:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{query}", timeout=30) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.2)
    return path


@pytest.mark.slow
def test_every_panel_query_returns_data_for_a_sweep_while_it_trains(cifar_medium, tmp_path):
    """A one-trial sweep: its driver sets the trial-state gauge, its trial's workers the training
    metrics. Every panel has data over the sweep, and every resplat panel still has data in the
    middle of the last epoch, long after the values set only once (restarts, the trial counts)."""
    from resplat.cluster.prometheus import start_prometheus, stop_prometheus

    job_name, sweep = f"dash-{os.getpid()}", f"dash-sweep-{os.getpid()}"
    job = tmp_path / "job.yaml"
    job.write_text(f"""
name: {job_name}
model: {{family: cifar, depth: 8}}
data: {{train: {cifar_medium / 'train'}, val: {cifar_medium / 'test'}, loader_workers: 1}}
optim: {{lr: 0.05, batch_size: 50}}
schedule: {{kind: cosine, epochs: {EPOCHS}}}
scaling: {{num_workers: 1, cpus_per_worker: 1}}
checkpoint: {{every_epochs: 1}}
tracking: {{experiment: dashboards}}
""")
    space = tmp_path / "space.yaml"
    space.write_text(f"name: {sweep}\nbase_job: {job}\nparams:\n  optim.lr: {{grid: [0.05]}}\n"
                     "metric: val_top1\nmode: max\nscheduler: {kind: fifo}\n")
    # The sweep's own local Ray, in a temp dir of its own (short: Ray's socket paths must stay short),
    # exporting metrics every second instead of every 10.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rd", dir="/tmp"))
    home = tmp_path / "home"
    env = {**os.environ, "RESPLAT_HOME": str(home), "RAY_ADDRESS": "", "RAY_TMPDIR": str(ray_tmp),
           "RAY_metrics_report_interval_ms": "1000"}
    start = time.time()
    process = subprocess.Popen([sys.executable, "-m", "resplat", "tune", "--space", str(space)], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prometheus = None
    try:
        session = wait_for(ray_tmp / "ray" / "session_latest" / "prom_metrics_service_discovery.json", process)
        prometheus, url = start_prometheus(state_dir=tmp_path / "prometheus", sd_file=session.resolve(),
                                           scrape_interval="1s")
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out[-2000:] + err[-2000:]
        end = time.time()
        check_every_panel(url, job_name, home, sweep, start, end)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if prometheus is not None:
            stop_prometheus(prometheus)
        shutil.rmtree(ray_tmp, ignore_errors=True)


EPOCHS = 3


def prometheus_instant(url: str, expr: str, at: float) -> list:
    query = urllib.parse.urlencode({"query": expr, "time": at})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=30) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def check_every_panel(url: str, job_name: str, home: Path, sweep: str, start: float, end: float) -> None:
    import torch
    from mlflow.tracking import MlflowClient

    from resplat.tracking.names import PARENT_TAG, TRIAL_TAG

    mlflow = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("dashboards").experiment_id])
    [trial_run] = [r for r in runs if PARENT_TAG in r.data.tags]
    run_id = trial_run.info.run_id
    # The labels are the trial's: its workers' series carry its MLflow run id, trial id and world rank.
    epochs = prometheus_query(url, f'ray_resplat_train_epoch{{job="{job_name}"}}', start, end)
    assert {(s["metric"]["run"], s["metric"]["trial"], s["metric"]["worker"]) for s in epochs} == {
        (run_id, trial_run.data.tags[TRIAL_TAG], "0")}
    last_epoch = [float(t) for s in epochs for t, v in s["values"] if float(v) == EPOCHS]
    assert last_epoch, f"epoch {EPOCHS} never reached Prometheus"
    # Mid last epoch: seconds after the last epoch's accuracy, the restarts count and the trial
    # counts were set, and before the workers and the sweep driver end.
    middle = (min(last_epoch) + max(last_epoch)) / 2

    values = {"job": job_name, "run": run_id, "worker": ".*", "sweep": sweep, "node": ".*"}
    on_gpu = torch.cuda.is_available()
    empty, gone, checked = [], [], 0
    for path in DASHBOARDS:
        for title, expr in expressions(load(path)):
            if "gpu" in (title + expr).lower() and not on_gpu:
                continue  # GPU panels have data only on GPU workers and nodes
            concrete = re.sub(r"\$(\w+)", lambda match: values[match.group(1)], expr)
            series = prometheus_query(url, concrete, start, end)
            checked += 1
            if not series or not any(s["values"] for s in series):
                empty.append(f"{path.name} / {title}: {concrete}")
            elif "ray_resplat_" in expr and not prometheus_instant(url, concrete, middle):
                gone.append(f"{path.name} / {title}: {concrete}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert not gone, f"resplat panels without data mid epoch {EPOCHS}:\n" + "\n".join(gone)
    assert checked >= 36
    assert max(float(v) for s in epochs for _, v in s["values"]) == EPOCHS

    def trials(state: str, at: float | None = None) -> set[float]:
        expr = f'ray_resplat_sweep_trials{{sweep="{sweep}", state="{state}"}}'
        if at is not None:
            return {float(s["value"][1]) for s in prometheus_instant(url, expr, at)}
        return {float(v) for s in prometheus_query(url, expr, start, end) for _, v in s["values"]}

    assert trials("running", middle) == {1.0} and trials("finished", middle) == {0.0}
    assert max(trials("finished")) == 1.0  # the driver's last counts, once the trial ended
    assert trials("stopped") == trials("errored") == {0.0}

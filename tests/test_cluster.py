"""A persistent Ray cluster for real: `resplat cluster up`, jobs through Ray's Jobs API, `cluster down`.

One head serves the module (started by `resplat cluster up` in a temporary working directory,
stopped by `resplat cluster down`); jobs train real CIFAR-10 images and log to the MLflow
store of that directory, which the tests read back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOB_ID = re.compile(r"resplat-[A-Za-z0-9._-]+-\d{8}-\d{6}-[0-9a-f]{4}")

pytestmark = pytest.mark.slow


def resplat(*args: str, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resplat", *args], cwd=cwd, env=env, capture_output=True, check=False,
                          text=True, timeout=timeout)


def ray_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    ray = shutil.which("ray", path=os.path.dirname(sys.executable))
    # Ray's own CLI sends the token only when told that auth is on.
    return subprocess.run([ray, *args], env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, check=False,
                          timeout=120)


def write_job(folder: Path, data: Path, name: str, epochs: int, extra: str = "", depth: int = 8,
              tracking: str = "experiment: on-cluster") -> Path:
    job = folder / f"{name}.yaml"
    job.write_text(f"""
name: {name}
model: {{family: cifar, depth: {depth}, num_classes: 10}}
data: {{train: {data / 'train'}, val: {data / 'test'}, loader_workers: 1}}
optim: {{lr: 0.05, batch_size: 100}}
schedule: {{kind: cosine, epochs: {epochs}}}
scaling: {{num_workers: 1, cpus_per_worker: 1}}
tracking: {{{tracking}}}
{extra}""")
    return job


class Cluster:
    def __init__(self, workdir: Path, env: dict):
        self.workdir, self.env = workdir, env
        self.home = Path(env["RESPLAT_HOME"])
        self.record = json.loads((self.home / "cluster.json").read_text())

    def run(self, *args: str, timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess:
        return resplat(*args, cwd=self.workdir, env={**self.env, **extra_env}, timeout=timeout)

    def mlflow(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(f"sqlite:///{self.home / 'mlflow.db'}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    workdir = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "RESPLAT_HOME": str(workdir / "home"), "RAY_ADDRESS": ""}
    up = resplat("cluster", "up", "--metrics", cwd=workdir, env=env, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "Ray cluster started: http://127.0.0.1:" in up.stdout
    handle = Cluster(workdir, env)
    handle.up_output = up.stdout
    yield handle
    if (handle.home / "cluster.json").exists():  # a failed test before test_down_stops_every_process
        resplat("cluster", "down", cwd=workdir, env=env, timeout=120)


def processes_of(record: dict) -> list:
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if process.info["pid"] == record["pid"] or any(
                    record["temp_dir"] in part for part in process.info["cmdline"] or ()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def test_up_again_says_already_up_and_status_shows_the_head(cluster):
    again = cluster.run("cluster", "up")
    assert again.returncode == 0 and "already up" in again.stdout
    assert cluster.record["url"].startswith("http://127.0.0.1:")
    status = cluster.run("cluster", "status")
    assert status.returncode == 0, status.stderr
    assert re.search(r"ALIVE\s+head\s+\S+\s+\d+ CPU", status.stdout), status.stdout
    assert "Jobs running:" in status.stdout


def test_metrics_start_a_prometheus_that_scrapes_the_head(cluster):
    url = re.search(r"Prometheus scraping the cluster at (http://127\.0\.0\.1:\d+)", cluster.up_output).group(1)

    def ray_targets_up() -> bool:
        with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as response:
            targets = json.loads(response.read())["data"]["activeTargets"]
        return any(t["health"] == "up" for t in targets)

    assert wait_for(ray_targets_up, timeout=120), "Prometheus never scraped the head's metrics"
    assert prometheus_alive(cluster)


def prometheus_alive(cluster) -> bool:
    import psutil

    pid = cluster.record["extra_pids"]["prometheus"]
    return psutil.pid_exists(pid) and "prometheus" in psutil.Process(pid).name()


def test_a_submitted_job_runs_to_the_end_through_the_jobs_api(cluster, cifar_subset):
    job = write_job(cluster.workdir, cifar_subset, "on-cluster", epochs=1,
                    tracking="experiment: on-cluster, register_as: cluster-model")
    result = cluster.run("submit", str(job), "--follow")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    job_id = JOB_ID.search(result.stdout).group(0)
    assert f"submitted job {job_id} to {cluster.record['url']} (from resplat cluster up" in result.stdout
    assert "epoch 1: train_loss" in result.stdout and f"job {job_id}: SUCCEEDED" in result.stdout
    assert "Traceback" not in result.stderr

    listed = ray_cli("job", "list", "--address", cluster.record["url"], env=cluster.env)
    assert job_id in listed.stdout, listed.stdout + listed.stderr
    status = ray_cli("job", "status", job_id, "--address", cluster.record["url"], env=cluster.env)
    assert f"Job '{job_id}' succeeded" in status.stdout + status.stderr

    ours = cluster.run("jobs", "list")
    line = next(line for line in ours.stdout.splitlines() if line.startswith(job_id))
    run_id = line.split("\t")[-1]
    run = cluster.mlflow().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert 0 <= run.data.metrics["val_top1"] <= 1 and "train_loss" in run.data.metrics
    import mlflow.pytorch

    mlflow.set_tracking_uri(f"sqlite:///{cluster.home / 'mlflow.db'}")
    model = mlflow.pytorch.load_model("models:/cluster-model/1")
    import torch

    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)

    # `submit --from-run` to the cluster: its resolved spec again, a new run tagged with its source.
    again = cluster.run("submit", "--from-run", run_id, "--follow")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    client = cluster.mlflow()
    (rerun,) = client.search_runs([run.info.experiment_id], filter_string=f"tags.`resplat.from_run` = '{run_id}'")
    assert rerun.info.status == "FINISHED" and rerun.info.run_id != run_id
    assert rerun.data.params == run.data.params


def wait_for(predicate, timeout: float, every: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def test_a_stopped_job_ends_killed_in_mlflow_and_resumes_from_its_checkpoint(cluster, cifar_medium):
    # Epochs of several seconds: the stop surely lands while it trains.
    epochs = 10
    job = write_job(cluster.workdir, cifar_medium, "stop-me", epochs=epochs, depth=20)
    submitted = cluster.run("submit", str(job))
    assert submitted.returncode == 0, submitted.stderr
    job_id = JOB_ID.search(submitted.stdout).group(0)
    assert f"resplat jobs stop {job_id}" in submitted.stdout  # how to follow, list and stop it

    assert wait_for(lambda: "epoch 1: " in cluster.run("jobs", "logs", job_id).stdout, timeout=400)
    stopped = cluster.run("jobs", "stop", job_id)
    assert stopped.returncode == 0, stopped.stderr
    assert f"job {job_id}: STOPPED" in stopped.stdout
    run_id = re.search(r"--resume ([0-9a-f]{32})", stopped.stdout).group(1)
    status = ray_cli("job", "status", job_id, "--address", cluster.record["url"], env=cluster.env)
    assert f"Job '{job_id}' was stopped" in status.stdout + status.stderr

    client = cluster.mlflow()
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert int(run.data.tags["resplat.last_checkpoint_epoch"]) >= 1

    resumed = cluster.run("submit", str(job), "--resume", run_id, "--follow")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["resplat.restored_from_epoch"]) >= 1
    assert [m.step for m in client.get_metric_history(run_id, "val_top1")][-1] == epochs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_bad_input_is_one_line_exit_2_and_nothing_is_submitted(cluster, cifar_subset):
    job = write_job(cluster.workdir, cifar_subset, "never", epochs=1)
    before = cluster.run("jobs", "list").stdout.count("\n")
    cases = {
        "unknown job": (("jobs", "status", "resplat-nope-20260101-000000-abcd"), {}, "no job resplat-nope"),
        "malformed address": (("submit", str(job), "--address", "http://head:99999"), {}, "not an address"),
        "ray client address": (("jobs", "list", "--address", "ray://head:10001"), {}, "Jobs API"),
        "unreachable": (("submit", str(job), "--address", f"http://127.0.0.1:{free_port()}"), {},
                        "nothing answers at"),
        "wrong token": (("submit", str(job)), {"RAY_AUTH_TOKEN": "not-the-token"}, "RAY_AUTH_TOKEN"),
        "too big": (("submit", str(job)), {"RAY_max_grpc_message_size": "20000"}, "over Ray's upload limit"),
    }
    for case, (args, env, message) in cases.items():
        started = time.monotonic()
        result = cluster.run(*args, **env)
        assert result.returncode == 2, (case, result.stdout, result.stderr)
        assert message in result.stderr, (case, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, case
        assert time.monotonic() - started < 60, case  # an answer, not a hang (the limit is generous on purpose)
    assert cluster.run("jobs", "list").stdout.count("\n") == before


def test_down_stops_every_process_of_the_cluster_and_only_those(cluster):
    assert processes_of(cluster.record), "the head should be running"
    down = cluster.run("cluster", "down")
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert processes_of(cluster.record) == []
    assert not prometheus_alive(cluster)
    assert not (cluster.home / "cluster.json").exists()
    again = cluster.run("cluster", "down")
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_a_recorded_cluster_that_died_is_one_line_not_a_hang(tmp_path, cifar_subset):
    home = tmp_path / "home"
    home.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (home / "cluster.json").write_text(json.dumps({
        "url": f"http://127.0.0.1:{free_port()}", "gcs_address": "127.0.0.1:1", "pid": dead.pid,
        "temp_dir": str(tmp_path / "gone"), "home": str(home), "started": 0.0}))
    job = write_job(tmp_path, cifar_subset, "orphan", epochs=1)
    env = {**os.environ, "RESPLAT_HOME": str(home), "RAY_ADDRESS": ""}
    result = resplat("submit", str(job), cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 2
    assert "is not running" in result.stderr and "resplat cluster up" in result.stderr
    assert sorted(p.name for p in home.iterdir()) == ["cluster.json"]

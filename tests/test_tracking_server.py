"""Server mode against a real PostgreSQL: `resplat tracking serve`, a real job logging to it, the run,
metrics and registered model read back through MLflow's client; an unreachable tracking URI stops a
job before anything starts."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from test_registry import one_epoch_job

ROOT = Path(__file__).resolve().parents[1]
MODEL = "server-test-model"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"PostgreSQL's {name} is missing: install Debian's postgresql (make test-deps)")
    return found[-1]


def as_postgres(*command: str) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL on a free 127.0.0.1 port with database `mlflow`; its URI."""
    folder = Path(tempfile.mkdtemp(prefix="resplat-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(as_postgres(postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"),
                   check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    subprocess.run(as_postgres(postgres_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
                               "-w", "start"), check=True, capture_output=True)
    try:
        subprocess.run(as_postgres(postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                   "mlflow"), check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(as_postgres(postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"),
                       check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """`resplat tracking serve` on the PostgreSQL: (its URL, the process, the artifacts folder)."""
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "resplat", "tracking", "serve", "--backend-store-uri", postgres,
         "--artifacts", str(tmp / "artifacts"), "--port", str(port), "--workers", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "RESPLAT_HOME": str(tmp / "home")},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", process)
        yield url, process, tmp / "artifacts"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def wait_for(url: str, process: subprocess.Popen, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {limit_s} s")


def job_file(tmp: Path, subset: Path, tracking_uri: str) -> Path:
    return one_epoch_job(tmp / "job.yaml", subset, name="server-job",
                         tracking=f"{{experiment: server, register_as: {MODEL}, tracking_uri: '{tracking_uri}'}}")


def submit(job: Path, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resplat", "submit", str(job)], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "RESPLAT_HOME": str(home), "RAY_ADDRESS": ""})


def test_a_job_logs_its_run_metrics_and_model_to_the_server(server, cifar_subset, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    url, _, artifacts = server
    done = submit(job_file(tmp_path, cifar_subset, url), tmp_path / "home")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (tmp_path / "home" / "mlflow.db").exists()  # nothing went to the embedded store

    client = MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("server").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["resplat.job"] == "server-job"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [1]
    (version,) = client.search_model_versions(f"name = '{MODEL}'")
    assert version.run_id == run.info.run_id
    assert any(artifacts.rglob("MLmodel"))  # the model went through the server's artifact proxy
    mlflow.set_tracking_uri(url)
    import mlflow.pytorch
    import torch

    model = mlflow.pytorch.load_model(f"models:/{MODEL}/{version.version}", map_location="cpu")
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_the_server_binds_loopback_and_refuses_foreign_hosts(server):
    url, _, _ = server
    port = int(url.rsplit(":", 1)[1])
    connections = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], check=False, capture_output=True,
                                 text=True).stdout
    if connections.strip():  # ss is there: every listener of the port is on 127.0.0.1
        assert all(line.split()[3].startswith("127.0.0.1:") for line in connections.splitlines()), connections
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"  # /health is exempt from the check
    with urllib.request.urlopen(api, timeout=30) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(api, headers={"Host": "attacker.example"}), timeout=30)
    assert refused.value.code in (400, 403)


def test_an_unreachable_tracking_uri_stops_the_job_before_anything_starts(cifar_subset, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    home = tmp_path / "home"
    done = submit(job_file(tmp_path, cifar_subset, uri), home)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and f"tracking URI {uri}" in message, message
    assert not (home / "betons").exists() and not (home / "mlflow.db").exists()


def test_bad_server_input_is_one_line_and_exit_2(tmp_path):
    from typer.testing import CliRunner

    from resplat.cli.main import app

    closed = free_port()
    for arguments, message in (
        (["--backend-store-uri", "sqlite:///x.db"], "expected postgresql://USER@HOST:PORT/DATABASE"),
        (["--backend-store-uri", f"postgresql://postgres@127.0.0.1:{closed}/mlflow"], "cannot connect"),
        (["--backend-store-uri", f"postgresql://postgres@127.0.0.1:{closed}/mlflow", "--allowed-host", "*"],
         "wildcards are refused"),
    ):
        result = CliRunner().invoke(app, ["tracking", "serve", *arguments, "--port", str(free_port())],
                                    env={"RESPLAT_HOME": str(tmp_path)})
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_sigterm_stops_the_server_and_its_workers_quietly(server):
    url, process, _ = server
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "stopped" in out
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=3)


def database(postgres: str, name: str) -> str:
    """Another database on the fixture's PostgreSQL: its URI."""
    port = postgres.rsplit(":", 1)[1].split("/")[0]
    subprocess.run(as_postgres(postgres_bin("createdb"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", name),
                   check=True, capture_output=True)
    return postgres.rsplit("/", 1)[0] + f"/{name}"


def resplat(*arguments: str, env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resplat", *arguments], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cluster_up_starts_a_tracking_server_that_its_jobs_log_to(postgres, cifar_subset, tmp_path):
    import json

    import psutil
    from mlflow.tracking import MlflowClient

    home = tmp_path / "home"
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "RESPLAT_HOME": str(home),
           "RAY_ADDRESS": ""}
    bad = resplat("cluster", "up", "--tracking-store", "sqlite:///x.db", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "--tracking-store 'sqlite:///x.db': expected postgresql://" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not home.exists()

    store = database(postgres, "cluster")
    up = resplat("cluster", "up", "--tracking-store", store, env=env, cwd=tmp_path, timeout=400)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        record = json.loads((home / "cluster.json").read_text())
        uri, server_pid = record["tracking_uri"], record["extra_pids"]["mlflow"]
        assert uri.startswith("http://127.0.0.1:") and f"Jobs log to the MLflow server at {uri}" in up.stdout
        connections = subprocess.run(["ss", "-ltnH", f"sport = :{uri.rsplit(':', 1)[1]}"], check=False,
                                     capture_output=True, text=True).stdout
        assert all(line.split()[3].startswith("127.0.0.1:") for line in connections.splitlines()), connections

        status = resplat("cluster", "status", env=env, cwd=tmp_path)
        assert status.returncode == 0 and f"MLflow tracking: {uri}" in status.stdout, status.stdout + status.stderr

        job = one_epoch_job(tmp_path / "job.yaml", cifar_subset, name="tracked-on-cluster",
                            tracking="{experiment: cluster-tracked, register_as: cluster-server-model}")
        done = resplat("submit", str(job), "--follow", env=env, cwd=tmp_path, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("cluster-tracked").experiment_id])
        assert run.info.status == "FINISHED" and run.data.tags["resplat.job"] == "tracked-on-cluster"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [1]
        (version,) = client.search_model_versions("name = 'cluster-server-model'")
        assert version.run_id == run.info.run_id
        assert not (home / "mlflow.db").exists()  # nothing went to the embedded store

        down = resplat("cluster", "down", env=env, cwd=tmp_path, timeout=180)
        assert down.returncode == 0 and f"its MLflow server {uri} too" in down.stdout, down.stdout + down.stderr
        assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{uri}/health", timeout=3)
    finally:
        if (home / "cluster.json").exists():
            resplat("cluster", "down", env=env, cwd=tmp_path, timeout=180)

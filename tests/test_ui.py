"""`resplat ui`: the MLflow UI serves the embedded store; a busy port is an input error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ui(home: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "resplat", "ui", "--port", str(port)], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "RESPLAT_HOME": str(home)},
    )


def search_runs(port: int, experiment_id: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", method="POST",
        data=json.dumps({"experiment_ids": [experiment_id]}).encode(), headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_ui_serves_the_runs_of_the_embedded_store(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("RESPLAT_HOME", str(home))
    from resplat.paths import default_tracking_uri
    from resplat.tracking import TrackedRun

    run = TrackedRun.create(default_tracking_uri(), "ui-check", run_name="shown", params={"optim.lr": "0.1"},
                            texts={})
    port = free_port()
    process = ui(home, port)
    try:
        deadline, found = time.monotonic() + 120, None
        while found is None and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            try:
                found = search_runs(port, run.client.get_run(run.run_id).info.experiment_id)
            except OSError:
                time.sleep(0.5)
        assert found is not None, "the UI did not answer within 120 s"
        assert [r["info"]["run_id"] for r in found["runs"]] == [run.run_id]
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        assert "<html" in page.lower()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_ui_on_a_busy_port_is_an_input_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = ui(tmp_path / "home", port)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 2, out + err
    assert f"--port {port}" in err and "choose another" in err and "Traceback" not in err
    assert not (tmp_path / "home").exists()

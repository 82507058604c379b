"""Ray's autoscaler on one machine: seconds from a resource demand to the first worker node.

Starts a head with cluster/local-autoscaling.yaml (Ray's fake_multinode provider: the real
autoscaler, starting and stopping local raylets) in its own temp folder on free ports, asks
for two gpu1 nodes (a STRICT_SPREAD placement group of two {CPU: 1, gpu1: 1} bundles),
counts the nodes with Ray's state API before, during and after the demand, and stops
exactly the processes of that head (never `ray stop`, which stops every Ray on the machine).

Run from the repository root:
  .venv/bin/python bench/autoscaling.py                     # appends to bench/results/autoscaling.json
  .venv/bin/python bench/autoscaling.py --out F --idle-timeout-s 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "cluster" / "local-autoscaling.yaml"
BUNDLE = {"CPU": 1, "gpu1": 1}
WAIT_S = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_copy(temp_dir: Path, gcs_port: int, idle_timeout_s: float) -> Path:
    """The shipped file with a short idle timeout, and the head's GCS where the provider finds it."""
    config = yaml.safe_load(CONFIG.read_text())
    config["idle_timeout_minutes"] = idle_timeout_s / 60
    config["provider"]["gcs_address"] = f"127.0.0.1:{gcs_port}"
    path = temp_dir / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_head(temp_dir: Path, config: Path, gcs_port: int, dashboard_port: int) -> subprocess.Popen:
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    command = [ray, "start", "--head", "--block", f"--port={gcs_port}", "--num-cpus=0",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--metrics-export-port={free_port()}", f"--temp-dir={temp_dir / 'ray'}",
               f"--autoscaling-config={config}", "--disable-usage-stats"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    log = open(temp_dir / "head.log", "wb")  # noqa: SIM115 (the head writes to it until it stops)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def processes_of(head: subprocess.Popen, temp_dir: Path) -> list:
    """The head's process tree and every process naming its temp folder (the raylets the autoscaler started)."""
    import psutil

    found = {}
    try:
        root = psutil.Process(head.pid)
        found = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        pass
    for process in psutil.process_iter(["cmdline"]):
        if any(str(temp_dir) in part for part in process.info["cmdline"] or ()):
            found[process.pid] = process
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_head(head: subprocess.Popen, temp_dir: Path) -> None:
    import psutil

    for attempt in (signal.SIGTERM, signal.SIGKILL):
        for process in processes_of(head, temp_dir):
            try:
                process.send_signal(attempt)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(processes_of(head, temp_dir), timeout=20)
    head.wait(timeout=20)


def worker_nodes(dashboard: str) -> list:
    from ray.util.state import list_nodes

    alive = list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")], detail=True,
                       raise_on_missing_output=False)  # a node going away may not answer
    return [node for node in alive if not node.is_head_node]


def wait_for(condition, what: str, timeout: float = WAIT_S, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"no {what} within {timeout:.0f} s")


def run(idle_timeout_s: float) -> dict:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    temp_dir = Path(tempfile.mkdtemp(prefix="rs-as-", dir="/tmp"))  # short: Unix socket paths live under it
    gcs_port, dashboard_port = free_port(), free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    head = start_head(temp_dir, test_copy(temp_dir, gcs_port, idle_timeout_s), gcs_port, dashboard_port)
    try:
        ray.init(address=f"127.0.0.1:{gcs_port}", logging_level="ERROR", log_to_driver=False)
        before = wait_for(lambda: [worker_nodes(dashboard)], "answer from the state API", every=1)[0]
        group = placement_group([BUNDLE, BUNDLE], strategy="STRICT_SPREAD")
        demanded = time.monotonic()
        wait_for(lambda: worker_nodes(dashboard), "worker node")
        first_node_s = time.monotonic() - demanded
        if not group.wait(timeout_seconds=WAIT_S):
            raise TimeoutError(f"the placement group was not placed within {WAIT_S} s")
        placed_s = time.monotonic() - demanded
        during = worker_nodes(dashboard)
        remove_placement_group(group)
        released = time.monotonic()
        wait_for(lambda: not worker_nodes(dashboard), "removal of the idle nodes")
        removed_s = time.monotonic() - released
        after = worker_nodes(dashboard)
    finally:
        ray.shutdown()
        stop_head(head, temp_dir)
    left = processes_of(head, temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return {
        "demand": f"placement group STRICT_SPREAD 2 x {BUNDLE}",
        "idle_timeout_s": idle_timeout_s,
        "seconds_to_first_worker_node": round(first_node_s, 1),
        "seconds_to_all_bundles_placed": round(placed_s, 1),
        "seconds_from_idle_to_nodes_removed": round(removed_s, 1),
        "worker_nodes": {"before": len(before), "during": len(during), "after": len(after)},
        "worker_node_types": sorted(_type_of(n) for n in during),
        "processes_left": len(left),
        "temp_dir": str(temp_dir),
    }


def _type_of(node) -> str:
    return next((r for r in node.resources_total if r in ("gpu1", "gpu8")), "?")


def provenance() -> dict:
    import ray

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "bench/autoscaling.py",
                            "cluster"], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, Python "
                   f"{platform.python_version()}, Ray {ray.__version__}",
        "load_average_1min_at_start": round(os.getloadavg()[0], 1),  # other work on the machine slows Ray's start-ups
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/autoscaling.py", *sys.argv[1:]]),
        "commit": commit + ("+uncommitted bench/autoscaling.py or cluster/" if dirty else ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-timeout-s", type=float, default=10.0, help="idle_timeout_minutes of the test copy")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "autoscaling.json",
                        help="JSON list the result is appended to")
    args = parser.parse_args()
    os.environ["RAY_AUTH_MODE"] = "token"  # before Ray is imported: the head has token auth on (~/.ray/auth_token)
    record = {**provenance(), **run(args.idle_timeout_s)}
    history = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([*history, record], indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

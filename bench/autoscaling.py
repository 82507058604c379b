"""Ray's autoscaler on one machine, through resplat: seconds from `resplat submit` to the first worker
node and to the first training step.

`resplat cluster up` a copy of cluster/local-autoscaling.yaml (Ray's fake_multinode provider: the
real autoscaler, starting and stopping local raylets; the head trains nothing) with a short idle
timeout, submits a two-worker job on real CIFAR-10 images through the Jobs API, counts the worker
nodes with the state API before, during and after, waits for the idle nodes to go, and
`resplat cluster down`. Appends one record (machine, command, commit, date, figures) to the output.

Run from the repository root (after `make data`):
  .venv/bin/python bench/autoscaling.py                      # appends to bench/results/autoscaling.json
  .venv/bin/python bench/autoscaling.py --out F --idle-timeout-s 5 --per-class 20
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
CONFIG = REPO / "cluster" / "local-autoscaling.yaml"
WAIT_S = 600
JOB_ID = re.compile(r"resplat-[A-Za-z0-9._-]+-\d{8}-\d{6}-[0-9a-f]{4}")


def resplat(*args: str, env: dict, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "resplat", *args], env=env, cwd=cwd, capture_output=True,
                            text=True, check=False, timeout=WAIT_S)
    if result.returncode != 0:
        raise SystemExit(f"resplat {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def small_cifar(folder: Path, per_class: int) -> Path:
    from resplat import paths
    from resplat.data.cifar10 import ensure_cifar10

    source = ensure_cifar10(paths.datasets_dir())
    for split, count in (("train", per_class), ("test", max(per_class // 4, 1))):
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            target = folder / split / class_dir.name
            target.mkdir(parents=True)
            for image in sorted(class_dir.iterdir())[:count]:
                shutil.copy(image, target / image.name)
    return folder


def worker_nodes(url: str) -> list[str]:
    """Node types of the alive worker nodes (the fake provider labels each raylet with its type)."""
    from resplat.cluster.address import auth_headers

    request = urllib.request.Request(url + "/api/v0/nodes?detail=true&limit=1000", headers=auth_headers())
    with urllib.request.urlopen(request, timeout=10) as response:
        nodes = json.loads(response.read())["data"]["result"]["result"]
    alive = [n for n in nodes if n["state"] == "ALIVE" and not n.get("is_head_node")]
    return sorted(next((k for k in (n.get("resources_total") or {}) if k.startswith("gpu")), "?") for n in alive)


def wait_until(predicate, what: str, every: float = 0.5) -> float:
    started = time.monotonic()
    while time.monotonic() - started < WAIT_S:
        if predicate():
            return time.monotonic()
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=False).stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "autoscaling.json")
    parser.add_argument("--idle-timeout-s", type=float, default=15.0)
    parser.add_argument("--per-class", type=int, default=40, help="training images per class")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rs-autoscale-"))
    env = {**os.environ, "RESPLAT_HOME": str(work / "home"), "RAY_ADDRESS": ""}
    config = yaml.safe_load(CONFIG.read_text())
    config["idle_timeout_minutes"] = args.idle_timeout_s / 60
    (work / "cluster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    data = small_cifar(work / "data", args.per_class)
    (work / "job.yaml").write_text(f"""name: autoscaled
model: {{family: cifar, depth: 8, num_classes: 10}}
data: {{train: {data / 'train'}, val: {data / 'test'}, loader_workers: 1}}
optim: {{lr: 0.05, batch_size: 20}}
schedule: {{kind: cosine, epochs: 1}}
scaling: {{num_workers: 2, cpus_per_worker: 1, placement: SPREAD}}
tracking: {{experiment: autoscaling}}
""")
    load = os.getloadavg()[0]
    resplat("cluster", "up", str(work / "cluster.yaml"), env=env, cwd=work)
    record_file = json.loads((work / "home" / "cluster.json").read_text())
    url = record_file["url"]
    try:
        before = worker_nodes(url)
        submitted_at = time.monotonic()
        job_id = JOB_ID.search(resplat("submit", str(work / "job.yaml"), env=env, cwd=work)).group(0)
        during: list[str] = []

        def nodes_up() -> bool:
            during[:] = max(during, worker_nodes(url), key=len)
            return bool(during)

        first_node = wait_until(nodes_up, "a worker node")
        def stepped() -> bool:  # the driver's first progress line comes after the first step
            log = resplat("jobs", "logs", job_id, env=env, cwd=work)
            return bool(re.search(r"step [1-9]\d*/", log)) or "epoch 1:" in log

        first_step = wait_until(stepped, "the first step", 1.0)
        nodes_up()
        status = resplat("jobs", "logs", job_id, "--follow", env=env, cwd=work).strip().splitlines()[-1]
        idle_from = time.monotonic()
        gone = wait_until(lambda: not worker_nodes(url), "the idle nodes to go", 1.0)
        after = worker_nodes(url)
    finally:
        resplat("cluster", "down", env=env, cwd=work)
    left = sum(1 for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                                            check=False).stdout.splitlines() if record_file["temp_dir"] in line)
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}",
        "load_average_1min_at_start": round(load, 1),
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/autoscaling.py", *sys.argv[1:]]),
        "commit": commit(),
        "job": "2 workers x 1 CPU, SPREAD, CIFAR ResNet-8, 1 epoch",
        "job_outcome": status,
        "idle_timeout_s": args.idle_timeout_s,
        "seconds_submit_to_first_worker_node": round(first_node - submitted_at, 1),
        "seconds_submit_to_first_training_step": round(first_step - submitted_at, 1),
        "seconds_from_job_end_to_nodes_removed": round(gone - idle_from, 1),
        "worker_nodes": {"before": len(before), "during": len(during), "after": len(after)},
        "worker_node_types": during,
        "processes_left": left,
        "temp_dir": record_file["temp_dir"],
    }
    history = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([*history, record], indent=2) + "\n")
    print(json.dumps(record, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

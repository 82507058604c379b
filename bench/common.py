"""What every benchmark of the suite shares: the evidence it records, the data it trains on, and
`resplat` run as a subprocess with its start-up phases timed (RESPLAT_TIMING=1).

A record is one JSON object appended to a list in RESULTS_DIR/<name>.json: date, command, commit,
machine, the load during the run, the figures and a one-line reading.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
QUICKSTART_JOB = REPO / "jobs" / "cifar10-resnet20.yaml"
# Benchmarks keep their MLflow runs and cached .beton files here, apart from the user's own store.
BENCH_HOME = REPO / ".resplat" / "bench" / "home"
sys.path.insert(0, str(REPO / "platform"))


# ---------------------------------------------------------------- evidence


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, check=False).stdout.strip()
    return (done.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), "
            f"Python {platform.python_version()}")


def busy_cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has used, this process and its reaped children have used)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, *rest = (int(f) for f in fields)
    busy = (user + nice + system + irq + softirq + (rest[0] if rest else 0)) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system


class LoadMeter:
    """The machine's load while a benchmark runs: load averages and the CPU share other processes took."""

    def __init__(self):
        self.load_before = os.getloadavg()[0]
        self.cpu_before = busy_cpu_seconds()
        self.started = time.perf_counter()

    def summary(self) -> dict:
        seconds = time.perf_counter() - self.started
        after = busy_cpu_seconds()
        others = None
        if self.cpu_before and after:
            used = max(0.0, (after[0] - self.cpu_before[0]) - (after[1] - self.cpu_before[1]))
            others = round(used / ((os.cpu_count() or 1) * seconds), 3)
        return {
            "load_average_1min_before_after": [round(self.load_before, 2), round(os.getloadavg()[0], 2)],
            # Children still running (a Ray we did not reap) count as "others": an upper bound.
            "other_processes_cpu_share": others,
            "seconds": round(seconds, 1),
        }


def record(name: str, figures: dict, *, reading: str, load: LoadMeter, results_dir: Path,
           note: str = "") -> dict:
    """Append one record to results_dir/<name>.json and print where it went."""
    entry = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([".venv/bin/python", *[str(a) for a in sys.argv]]),
        "commit": git_commit(),
        "machine": machine(),
        "load": load.summary(),
        **({"note": note} if note else {}),
        "reading": reading,
        "figures": figures,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    history = json.loads(path.read_text()) if path.exists() else []
    history.append(entry)
    path.write_text(json.dumps(history, indent=2) + "\n")
    print(reading)
    print(f"load: {entry['load']}; recorded in {path}")
    return entry


def add_common_options(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="reduced mode: tiny data, few steps (the test's mode)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where <name>.json is appended")
    parser.add_argument("--note", default="", help="free text for the record (e.g. other load on the machine)")


# ---------------------------------------------------------------- data


def cifar10_root() -> Path:
    """The full CIFAR-10 image folder (`make data` / `resplat data cifar10` put it under .resplat/datasets)."""
    from resplat.data import ensure_cifar10

    return ensure_cifar10(REPO / ".resplat" / "datasets")


def cifar10_subset(target: Path, *, train_per_class: int, test_per_class: int) -> Path:
    """A datasets folder holding cifar10/{train,test} with the first images of each class; returns target."""
    source = cifar10_root()
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            into = target / "cifar10" / split / class_dir.name
            into.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:count]:
                shutil.copy(image, into / image.name)
    return target


def datasets_dir(quick: bool, scratch: Path) -> Path:
    """RESPLAT_DATA for a run: the full CIFAR-10, or a 40 + 10 per class subset in quick mode."""
    if quick:
        return cifar10_subset(scratch / "datasets", train_per_class=40, test_per_class=10)
    return cifar10_root().parent


def resplat_env(home: Path, data: Path) -> dict[str, str]:
    env = {**os.environ, "RESPLAT_HOME": str(home), "RESPLAT_DATA": str(data), "RESPLAT_TIMING": "1",
           "PYTHONUNBUFFERED": "1", "NUMBA_CACHE_DIR": str(compile_cache(home))}
    for leaked in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):  # a local run of its own, in the bench's store
        env.pop(leaked, None)
    return env


def compile_cache(home: Path) -> Path:
    """FFCV's numba cache of a benchmark's runs: beside its RESPLAT_HOME, so a fresh home is cold."""
    return home / "numba-cache"


def load_spec(job: Path, overrides: list[str], *, home: Path, data: Path):
    """The job as `resplat submit` with RESPLAT_HOME=home and RESPLAT_DATA=data would load it."""
    os.environ["RESPLAT_HOME"], os.environ["RESPLAT_DATA"] = str(home), str(data)
    os.environ["NUMBA_CACHE_DIR"] = str(compile_cache(home))
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the store under `home`, as in resplat_env()
    from resplat.spec import load_job

    return load_job(job, overrides)


def prepare_in_process(job: Path, overrides: list[str], *, home: Path, data: Path):
    """Convert the job's data to cached .beton files under `home`, create its MLflow store there and
    fill FFCV's compile cache, as an earlier submit would have. Returns (spec, prepared data)."""
    import torch
    from mlflow.tracking import MlflowClient

    from resplat.orchestrate.submit import prepare_data
    from resplat.tracking import tracking_uri_for
    from resplat.train.loop import create_loaders

    spec = load_spec(job, overrides, home=home, data=data)
    MlflowClient(tracking_uri_for(spec.tracking)).search_experiments()  # creates the SQLite store
    prepared = prepare_data(spec.data, num_classes=spec.model.num_classes)
    for loader in create_loaders(prepared.data, batch_size=spec.optim.batch_size, seed=0,
                                 device=torch.device("cpu"), channels_last=spec.scaling.channels_last):
        batches = iter(loader)
        next(batches)
        batches.close()  # stop FFCV's thread: one left inside a parallel stage can abort the process at exit
    return spec, prepared


# ---------------------------------------------------------------- resplat in a subprocess


@dataclass
class TimedRun:
    """One `resplat` command: its launch time, exit code, the RESPLAT_TIMING events it printed."""

    launched: float
    ended: float
    returncode: int
    events: list[dict] = field(default_factory=list)
    output_tail: str = ""

    def first(self, event: str) -> dict | None:
        return next((e for e in self.events if e["resplat_timing"] == event), None)

    def all(self, event: str) -> list[dict]:
        return [e for e in self.events if e["resplat_timing"] == event]

    def check(self) -> TimedRun:
        if self.returncode != 0:
            raise SystemExit(f"resplat exited with {self.returncode}:\n{self.output_tail}")
        return self


def set_options(overrides: list[str]) -> list[str]:
    return [part for override in overrides for part in ("--set", override)]


def run_resplat(args: list[str], *, env: dict[str, str], timeout: float = 3600) -> TimedRun:
    """Run `python -m resplat ARGS` from the repository root; collect its timing events from stderr."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        launched = time.time()
        done = subprocess.run([sys.executable, "-m", "resplat", *args], cwd=REPO, env=env, stdout=out,
                              stderr=err, text=True, timeout=timeout, check=False)
        ended = time.time()
        out.seek(0)
        err.seek(0)
        events, other = [], []
        for line in err:
            at = line.find('{"resplat_timing"')
            (events.append(json.loads(line[at:])) if at >= 0 else other.append(line))
        tail = (out.read()[-4000:] + "".join(other)[-4000:])
    return TimedRun(launched, ended, done.returncode, events, tail)

"""How fast the CLI answers bad input: each case is the real `resplat` command in a subprocess.

Every case runs in a fresh empty folder with a fresh RESPLAT_HOME, so a case that
wrote anything (it must not) could not speed up the next run. The goal is under
one second per input error on an idle machine; the load average is recorded
because this machine is shared.

    .venv/bin/python bench/cli_latency.py            # 5 runs per case, writes bench/results/cli_latency.json
    .venv/bin/python bench/cli_latency.py --quick --out /tmp/x.json   # 1 run per case (the test's mode)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "cli_latency.json"
GOAL_SECONDS = 1.0

CASES = {
    "--help (baseline)": ["--help"],
    "eval unknown run": ["eval", "0123456789abcdef"],
    "tune unknown space": ["tune", "--space", "no-such-space"],
    "data prepare missing folder": ["data", "prepare", "no-such-folder", "--out", "x.beton"],
    "report unknown sweep": ["report", "no-such-sweep"],
    "validate missing job file": ["validate", "no-such-job.yaml"],
}


def time_once(argv: list[str]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="resplat-latency-") as folder:
        env = {**os.environ, "RESPLAT_HOME": str(Path(folder) / "home"), "RAY_ADDRESS": ""}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "resplat", *argv], cwd=folder, env=env,
                              capture_output=True, text=True, check=False)
        return time.perf_counter() - started, done.returncode


def measure(runs: int) -> list[dict]:
    cases = []
    for case, argv in CASES.items():
        timings, codes = zip(*(time_once(argv) for _ in range(runs)))
        cases.append({
            "case": case, "command": "resplat " + " ".join(argv), "runs": runs,
            "median_s": round(statistics.median(timings), 3), "max_s": round(max(timings), 3),
            "exit_code": codes[-1], "goal_s": GOAL_SECONDS if codes[-1] == 2 else None,
        })
    return cases


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="Runs per case (the median is recorded).")
    parser.add_argument("--quick", action="store_true", help="1 run per case (the test suite's mode).")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write.")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    load_before = os.getloadavg()[0]
    cases = measure(runs)
    record = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git_commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    width = max(len(case["case"]) for case in cases)
    for case in cases:
        verdict = "" if case["goal_s"] is None else ("  ok" if case["median_s"] < GOAL_SECONDS else "  SLOW")
        print(f"{case['case']:<{width}}  exit {case['exit_code']}  median {case['median_s']:.2f} s{verdict}")
    print(f"load average {record['load_average_1min_before_after']}; written to {args.out}")


if __name__ == "__main__":
    main()

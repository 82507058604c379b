"""A new user's first hour (issue 15): the real CLI, in a subprocess, in a fresh folder.

Every refused command exits 2 with one line naming the problem, no traceback, and leaves
the working folder and RESPLAT_HOME as it found them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def place(tmp_path) -> dict[str, Path]:
    """A working folder outside the repository and an empty RESPLAT_HOME beside it."""
    (tmp_path / "work").mkdir()
    return {"cwd": tmp_path / "work", "home": tmp_path / "home"}


def resplat(place: dict[str, Path], *args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "RESPLAT_DATA"}
    environment.update({"RESPLAT_HOME": str(place["home"]), "RAY_ADDRESS": "", **(env or {})})
    return subprocess.run([sys.executable, "-m", "resplat", *args], cwd=place["cwd"], env=environment,
                          capture_output=True, check=False, text=True, timeout=timeout)


def contents(*folders: Path) -> set[str]:
    return {str(path) for folder in folders if folder.exists() for path in [folder, *folder.rglob("*")]}


def refused(place: dict[str, Path], *args: str, needles: tuple[str, ...], env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
    """Run a command that must be refused; check exit code, message, no traceback, nothing written."""
    before = contents(place["cwd"], place["home"])
    result = resplat(place, *args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(all(needle in line for needle in needles) for line in lines), (needles, result.stderr)
    assert contents(place["cwd"], place["home"]) == before
    return result


# ---------------------------------------------------------------- job files


def test_a_job_file_that_is_not_text_is_one_line(place):
    job = place["cwd"] / "garbage.yaml"
    job.write_bytes(bytes(range(128, 256)) * 4)
    refused(place, "validate", str(job), needles=("garbage.yaml",))
    refused(place, "validate", str(job), needles=("not UTF-8",))
    refused(place, "submit", str(job), "--dry-run", needles=("not UTF-8",))


def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(place):
    job = place["cwd"] / "twice.yaml"
    job.write_text("name: twice\noptim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n")
    refused(place, "validate", str(job), needles=("duplicate key 'lr'", "line 5", "line 3"))


# ---------------------------------------------------------------- resplat ui


def test_ui_port_out_of_range_is_one_line(place):
    refused(place, "ui", "--port", "99999", needles=("--port 99999", "65535"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serving(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _server_processes(port: int) -> list[int]:
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if str(port) in cmdline and any("mlflow" in part or "uvicorn" in part for part in cmdline):
            found.append(process.info["pid"])
    return found


@pytest.mark.slow
@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_says_when_ready_and_stops_with_its_workers_quietly(place, stop_with):
    port = _free_port()
    environment = {**os.environ, "RESPLAT_HOME": str(place["home"])}
    ui = subprocess.Popen([sys.executable, "-m", "resplat", "ui", "--port", str(port)], cwd=place["cwd"],
                          env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first_line = ui.stdout.readline()  # printed once the server answers, not before
        assert f"ready at http://127.0.0.1:{port}" in first_line, first_line + ui.stderr.read()
        assert _serving(port)
        group = _server_processes(port)
        assert 1 <= len(group) <= 1 + max(1, min(4, (os.cpu_count() or 2) // 2))  # sized for the machine
        ui.send_signal(stop_with)
        out, err = ui.communicate(timeout=60)
    finally:
        if ui.poll() is None:
            ui.kill()
    assert ui.returncode == 0 and "stopped" in out
    assert "Traceback" not in err and len(err.splitlines()) <= 2, err
    assert not _serving(port) and _server_processes(port) == []


# ---------------------------------------------------------------- data


def test_data_prepare_of_an_empty_folder_leaves_nothing(place):
    empty = place["cwd"] / "empty"
    empty.mkdir()
    refused(place, "data", "prepare", str(empty), "--out", "new/dir/out.beton", needles=("no class folders",))
    assert not (place["cwd"] / "new").exists()


def test_data_prepare_of_a_missing_folder_leaves_nothing(place):
    refused(place, "data", "prepare", "missing", "--out", "out/train.beton", needles=("missing", "no such folder"))


def test_data_prepare_of_one_class_warns(place, cifar_subset):
    one_class = place["cwd"] / "one"
    (one_class / "cat").mkdir(parents=True)
    for image in sorted((cifar_subset / "test" / "cat").iterdir())[:4]:
        (one_class / "cat" / image.name).write_bytes(image.read_bytes())
    result = resplat(place, "data", "prepare", str(one_class), "--out", "one.beton", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "one class folder (cat)" in result.stderr
    assert "4 images, 1 classes" in result.stdout


def test_data_prepare_that_fails_midway_removes_the_folder_it_made(place):
    broken = place["cwd"] / "broken"
    for name in ("cat", "dog"):
        (broken / name).mkdir(parents=True)
        (broken / name / "a.jpg").write_bytes(b"not a jpeg")
    before = contents(place["cwd"], place["home"])
    result = resplat(place, "data", "prepare", str(broken), "--out", "made/here/x.beton", "--workers", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert contents(place["cwd"], place["home"]) == before


# ---------------------------------------------------------------- nothing left behind


def test_eval_of_an_unknown_run_creates_no_store(place):
    refused(place, "eval", "0123456789abcdef", needles=("0123456789abcdef", "no tracking store"))
    assert not place["home"].exists()


def test_eval_bad_scales_is_one_line(place):
    refused(place, "eval", "abc", "--scales", "224,x", needles=("--scales",))


# ---------------------------------------------------------------- paths


def test_named_spaces_are_found_outside_the_repository(place):
    # No data sets in this RESPLAT_HOME: the shipped space and its base job are found, then the data is missing.
    result = refused(place, "tune", "--space", "shortcuts", needles=("data.train",))
    assert str(place["home"] / "datasets" / "cifar10" / "train") in result.stderr


def test_an_unknown_space_lists_the_known_ones(place):
    refused(place, "tune", "--space", "shortcutz", needles=("--space shortcutz", "shortcuts", "depth", "lr"))


def test_shipped_jobs_read_data_from_resplat_data(place):
    data = place["cwd"] / "sets"
    result = refused(place, "validate", str(ROOT / "jobs" / "cifar10-resnet20.yaml"),
                     env={"RESPLAT_DATA": str(data)}, needles=(str(data / "cifar10" / "train"),))
    assert str(place["home"]) not in result.stderr


def test_shipped_jobs_follow_resplat_home(place):
    refused(place, "validate", str(ROOT / "jobs" / "cifar10-resnet20.yaml"),
            needles=(str(place["home"] / "datasets" / "cifar10" / "train"),))


# ---------------------------------------------------------------- a CLI that explains itself


def test_dash_h_version_and_completion(place):
    top = resplat(place, "-h")
    assert top.returncode == 0 and "--version" in top.stdout and "--install-completion" in top.stdout
    version = resplat(place, "--version")
    assert version.returncode == 0 and version.stdout.startswith("resplat ")
    for sub in ("data", "models", "cluster", "jobs"):
        assert resplat(place, sub, "-h").returncode == 0, sub


@pytest.mark.parametrize("command, usage", [
    (["validate"], "validate [OPTIONS] JOB.yaml"),
    (["eval"], "eval [OPTIONS] RUN_ID"),
    (["ui"], "ui [OPTIONS]"),
    (["schema"], "schema [OPTIONS]"),
    (["data", "prepare"], "prepare [OPTIONS] IMAGE_FOLDER"),
    (["data", "cifar10"], "cifar10 [OPTIONS]"),
    (["tune"], "tune [OPTIONS]"),
    (["report"], "report [OPTIONS] SWEEP"),
])
def test_help_has_plain_usage_and_examples(place, command, usage):
    result = resplat(place, *command, "-h", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert usage in result.stdout and "{" not in result.stdout.split("\n\n")[0]
    assert "<list[str]>" not in result.stdout
    assert "Examples:" in result.stdout and f"$ resplat {' '.join(command)}" in result.stdout


def test_debug_is_accepted_after_the_command_name(place):
    job = place["cwd"] / "twice.yaml"
    job.write_text("name: a\nname: b\n")
    result = resplat(place, "validate", str(job), "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr and "duplicate key 'name'" in result.stderr


def test_long_paths_do_not_wrap_when_not_a_terminal(place):
    deep = place["cwd"] / ("a-rather-long-folder-name-" * 4) / ("and-another-one-" * 4)
    refused(place, "data", "prepare", str(deep), "--out", "x.beton", env={"COLUMNS": "40"}, needles=(str(deep),))


# ---------------------------------------------------------------- bench/cli_latency.py


def test_cli_latency_bench_reduced_mode(tmp_path):
    out = tmp_path / "latency.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "cli_latency.py"), "--quick", "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert {case["case"] for case in record["cases"]} >= {"eval unknown run", "tune unknown space",
                                                           "data prepare missing folder", "report unknown sweep"}
    errors = [case for case in record["cases"] if case["case"] != "--help (baseline)"]
    assert all(case["exit_code"] == 2 and case["median_s"] > 0 for case in errors), errors


# ---------------------------------------------------------------- the same class of defect elsewhere


def test_brackets_in_a_path_are_printed_as_written(place):
    refused(place, "validate", "odd[x]/job.yaml", needles=("error: odd[x]/job.yaml",))


def test_an_output_folder_that_cannot_be_made_is_one_line(place):
    (place["cwd"] / "a-file").write_text("in the way")
    (place["cwd"] / "images" / "cat").mkdir(parents=True)
    (place["cwd"] / "images" / "dog").mkdir()
    refused(place, "data", "prepare", "images", "--out", "a-file/x.beton", needles=("--out", "a-file"))
    refused(place, "data", "cifar10", "--cache", "a-file/sets", needles=("a-file/sets", "cannot create"))


def test_duplicate_keys_in_a_set_override_are_refused(place):
    job = place["cwd"] / "job.yaml"
    job.write_text("name: t\n")
    refused(place, "validate", str(job), "--set", "optim={lr: 1, lr: 2}", needles=("--set", "duplicate key 'lr'"))


# ---------------------------------------------------------------- submit: cheap checks first, nothing started

def small_job(place: dict[str, Path], data: Path, *, num_classes: int = 10, batch_size: int = 50) -> Path:
    job = place["cwd"] / "small.yaml"
    job.write_text(f"name: small\nmodel: {{family: cifar, depth: 8, num_classes: {num_classes}}}\n"
                   f"data: {{train: {data / 'train'}, val: {data / 'test'}}}\noptim: {{batch_size: {batch_size}}}\n")
    return job


def test_dry_run_with_resume_starts_nothing(place, cifar_subset):
    job = small_job(place, cifar_subset)
    before = contents(place["cwd"], place["home"])
    result = resplat(place, "submit", str(job), "--dry-run", "--resume", "0" * 32)
    assert result.returncode == 0, result.stderr
    assert "8 per epoch (400 train images)" in result.stdout
    assert contents(place["cwd"], place["home"]) == before  # no store, no .beton, no Ray


def test_submit_reports_every_cheap_problem_before_converting_anything(place, cifar_subset):
    job = small_job(place, cifar_subset, num_classes=1000, batch_size=512)
    result = refused(place, "submit", str(job), needles=("has 10 classes but model.num_classes is 1000",))
    assert "less than one batch of 512" in result.stderr  # both problems, at once


def test_missing_quickstart_data_names_the_command_that_makes_it(place):
    refused(place, "validate", str(ROOT / "jobs" / "cifar10-resnet20.yaml"),
            needles=("data.train", "does not exist; make it with `resplat data cifar10`"))

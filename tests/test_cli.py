"""The command line as a user meets it: help, data prepare, errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def resplat(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resplat", *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_help_lists_every_command():
    result = resplat("--help")
    assert result.returncode == 0
    for command in ("validate", "submit", "schema", "ui", "eval", "report", "data", "models"):
        assert command in result.stdout


def test_data_prepare_writes_a_beton_and_its_class_index(cifar_subset, tmp_path):
    out = tmp_path / "val.beton"
    result = resplat("data", "prepare", str(cifar_subset / "test"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "100 images, 10 classes, raw storage" in result.stdout
    assert out.exists() and (tmp_path / "val.beton.json").exists()


def test_data_prepare_bad_input_exits_2_and_writes_nothing(tmp_path):
    missing = resplat("data", "prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "x.beton"))
    assert missing.returncode == 2 and str(tmp_path / "nope") in missing.stderr
    wrong_suffix = resplat("data", "prepare", str(tmp_path), "--out", str(tmp_path / "x.txt"))
    assert wrong_suffix.returncode == 2 and "must end in .beton" in wrong_suffix.stderr
    assert list(tmp_path.iterdir()) == []
    assert "Traceback" not in missing.stderr + wrong_suffix.stderr


def test_models_arch_prints_the_paper_table():
    result = resplat("models", "arch", "--family", "cifar", "--depth", "20")
    assert result.returncode == 0 and "269,722" in result.stdout
    bad = resplat("models", "arch", "--family", "cifar", "--depth", "21")
    assert bad.returncode == 2 and "6n+2" in bad.stderr


def test_local_job_larger_than_the_machine_is_refused_before_anything_starts(cifar_subset, tmp_path):
    job = tmp_path / "big.yaml"
    job.write_text(f"name: big\ndata: {{train: {cifar_subset / 'train'}, val: {cifar_subset / 'test'}}}\n"
                   "scaling: {num_workers: 64, cpus_per_worker: 4}\n")
    result = subprocess.run([sys.executable, "-m", "resplat", "submit", str(job)], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "RESPLAT_HOME": str(tmp_path / "home"), "RAY_ADDRESS": ""}, check=False)
    assert result.returncode == 2 and "64 workers x 4 CPUs = 256 CPUs" in result.stderr
    assert not (tmp_path / "home").exists()

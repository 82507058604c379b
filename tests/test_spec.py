"""Job specs: good files validate, bad ones fail with one clear line per problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resplat.errors import SpecError
from resplat.spec import JobSpec, load_job

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dirs(tmp_path: Path) -> tuple[Path, Path]:
    for split in ("train", "val"):
        (tmp_path / split / "cat").mkdir(parents=True)
    return tmp_path / "train", tmp_path / "val"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def minimal(data_dirs, extra: str = "") -> str:
    train, val = data_dirs
    return f"name: t\ndata:\n  train: {train}\n  val: {val}\n{extra}"


def problems(path: Path, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_job(path, list(overrides))
    return info.value.problems


def test_defaults_follow_the_paper(tmp_path, data_dirs):
    spec = load_job(write(tmp_path, minimal(data_dirs)))
    assert spec.model.family == "cifar" and spec.model.shortcut == "A"
    assert (spec.optim.momentum, spec.optim.weight_decay) == (0.9, 1e-4)
    assert spec.optim.batch_size == 128 and spec.optim.global_batch_size == 128


def test_imagenet_family_defaults_to_option_b(tmp_path, data_dirs):
    spec = load_job(write(tmp_path, minimal(data_dirs, "model: {family: imagenet, depth: 50}\n")))
    assert spec.model.shortcut == "B"


@pytest.mark.parametrize("job", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_job_validates(job, monkeypatch, tmp_path):
    for split in ("train", "test", "val"):
        (tmp_path / "cifar10" / split / "cat").mkdir(parents=True)
    monkeypatch.setenv("RESPLAT_DATA", str(tmp_path))
    monkeypatch.setenv("IMAGENET_DIR", str(tmp_path / "cifar10"))
    spec = load_job(job)
    assert spec.name


def test_unknown_field_suggests_the_right_name(tmp_path, data_dirs):
    found = problems(write(tmp_path, minimal(data_dirs, "optim:\n  lrr: 0.1\n")))
    assert len(found) == 1
    assert found[0].startswith("optim.lrr: unknown field; did you mean 'lr'?")


def test_every_problem_is_reported_at_once(tmp_path, data_dirs):
    text = minimal(data_dirs, "optim: {lr: -0.1, momentum: 2}\nschedule: {kind: linear}\n")
    found = problems(write(tmp_path, text))
    assert {p.split(":")[0] for p in found} == {"optim.lr", "optim.momentum", "schedule.kind"}
    assert any("'constant', 'step', 'plateau', 'cosine' or 'onecycle'" in p for p in found)


def test_unknown_depth_lists_allowed_depths(tmp_path, data_dirs):
    found = problems(write(tmp_path, minimal(data_dirs, "model: {family: imagenet, depth: 19}\n")))
    assert len(found) == 1 and found[0].startswith("model:")
    assert "18" in found[0] and "152" in found[0]


def test_missing_data_folder_is_named(tmp_path, data_dirs):
    text = f"name: t\ndata:\n  train: {tmp_path / 'nope'}\n  val: {data_dirs[1]}\n"
    found = problems(write(tmp_path, text))
    assert found == [f"data.train: {tmp_path / 'nope'} does not exist (give an image folder or a .beton file)"]


def test_yaml_syntax_error_gives_the_line(tmp_path):
    found = problems(write(tmp_path, "name: t\ndata: [oops\n"))
    assert found[0].startswith("line 3, column 1: YAML syntax error")


def test_variables_expand_with_defaults_and_unset_ones_are_errors(tmp_path, data_dirs, monkeypatch):
    monkeypatch.setenv("RESPLAT_TEST_ROOT", str(data_dirs[0].parent))
    monkeypatch.delenv("RESPLAT_UNSET", raising=False)
    text = "name: t\ndata:\n  train: ${RESPLAT_TEST_ROOT}/train\n  val: ${RESPLAT_UNSET:-" + str(data_dirs[1]) + "}\n"
    spec = load_job(write(tmp_path, text))
    assert spec.data.train == data_dirs[0] and spec.data.val == data_dirs[1]
    found = problems(write(tmp_path, text + "tracking: {experiment: '${RESPLAT_UNSET}'}\n"))
    assert found == [("tracking.experiment: environment variable RESPLAT_UNSET is not set "
                      "(set it or write ${RESPLAT_UNSET:-default})")]


def test_overrides_apply_and_unknown_paths_are_errors(tmp_path, data_dirs):
    path = write(tmp_path, minimal(data_dirs))
    spec = load_job(path, ["optim.lr=0.05", "model.depth=56", "scaling.num_workers=2"])
    assert (spec.optim.lr, spec.model.depth, spec.optim.global_batch_size) == (0.05, 56, 256)
    found = problems(path, ["model.dept=3"])
    assert found[0].startswith("--set model.dept: unknown field; did you mean 'depth'?")
    assert problems(path, ["optim.lr"])[0].startswith("--set 'optim.lr': expected FIELD.PATH=VALUE")


def test_batch_sizes_must_divide_over_workers(tmp_path, data_dirs):
    path = write(tmp_path, minimal(data_dirs, "optim: {global_batch_size: 256}\nscaling: {num_workers: 3}\n"))
    assert "does not divide over scaling.num_workers 3" in problems(path)[0]
    spec = load_job(path, ["scaling.num_workers=4"])
    assert spec.optim.batch_size == 64


def test_committed_schema_is_in_sync():
    committed = json.loads((ROOT / "jobs" / "schema.json").read_text())
    assert committed == JobSpec.model_json_schema(), "run `resplat schema > jobs/schema.json`"


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resplat", *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_cli_bad_spec_exits_2_with_no_traceback_and_no_side_effects(tmp_path, data_dirs):
    path = write(tmp_path, minimal(data_dirs, "optim: {lrr: 0.1}\n"))
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "resplat", "submit", str(path)], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "RESPLAT_HOME": str(home)}, check=False,
    )
    assert result.returncode == 2
    assert f"{path}: invalid spec" in result.stderr and "did you mean 'lr'?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not home.exists()


def test_cli_validate_prints_the_resolved_spec(tmp_path, cifar_subset):
    job = write(tmp_path, minimal((cifar_subset / "train", cifar_subset / "test")))
    result = run_cli("validate", str(job), "--set", "optim.lr=0.2")
    assert result.returncode == 0, result.stderr
    assert "lr: 0.2" in result.stdout and "shortcut: A" in result.stdout


def test_cli_validate_refuses_what_submit_would(tmp_path, cifar_subset, data_dirs):
    job = write(tmp_path, minimal((cifar_subset / "train", cifar_subset / "test")))
    classes = run_cli("validate", str(job), "--set", "model.num_classes=1000")
    assert classes.returncode == 2 and "has 10 classes but model.num_classes is 1000" in classes.stderr
    too_small = run_cli("validate", str(job), "--set", "optim.batch_size=512")
    assert too_small.returncode == 2 and "less than one batch of 512" in too_small.stderr
    empty = run_cli("validate", str(write(tmp_path, minimal(data_dirs))))
    assert empty.returncode == 2 and "no image" in empty.stderr
    assert "Traceback" not in classes.stderr + too_small.stderr + empty.stderr


def test_cli_dry_run_prints_the_plan(tmp_path, data_dirs):
    result = run_cli("submit", str(write(tmp_path, minimal(data_dirs))), "--dry-run", "--set", "scaling.num_workers=2")
    assert "128 per worker, 256 global" in result.stdout  # the plan, then what submit would refuse
    assert "steps  unknown:" in result.stdout and "no image" in result.stdout  # empty class folders
    assert result.returncode == 2 and "no image" in result.stderr


def test_elastic_workers_take_a_range(tmp_path, data_dirs):
    path = write(tmp_path, minimal(data_dirs, "optim: {batch_size: 32, lr_scaling: linear, base_batch_size: 32}\n"
                                              "scaling: {num_workers: [1, 4], resize_check_seconds: 5}\n"))
    spec = load_job(path)
    assert (spec.scaling.min_workers, spec.scaling.max_workers, spec.scaling.elastic) == (1, 4, True)
    # The per-worker batch is fixed; the global batch and the linear-scaled lr follow the current workers.
    assert spec.optim.batch_size == 32 and spec.optim.global_batch_size is None
    assert [spec.global_batch_size(n) for n in (1, 3)] == [32, 96]
    assert [spec.peak_lr(n) for n in (1, 4)] == pytest.approx([0.1, 0.4])
    assert load_job(path, ["scaling.num_workers=[3, 3]"]).scaling.num_workers == 3  # no range: fixed
    fixed = load_job(path, ["scaling.num_workers=2"]).scaling
    assert (fixed.min_workers, fixed.max_workers, fixed.elastic) == (2, 2, False)


@pytest.mark.parametrize("workers", ["[2, 1]", "[0, 2]", "[1]", "[1, 2, 3]", "0", "true", "[1, two]"])
def test_bad_elastic_ranges_name_the_rule(tmp_path, data_dirs, workers):
    found = problems(write(tmp_path, minimal(data_dirs, f"scaling: {{num_workers: {workers}}}\n")))
    assert len(found) == 1, found
    assert found[0].startswith("scaling.num_workers: give a worker count >= 1 or an elastic range [MIN, MAX] "
                               "with 1 <= MIN <= MAX (got ")


def test_elastic_workers_refuse_a_fixed_global_batch(tmp_path, data_dirs):
    found = problems(write(tmp_path, minimal(data_dirs, "optim: {global_batch_size: 256}\n"
                                                        "scaling: {num_workers: [2, 4]}\n")))
    assert found == [("(top level): optim.global_batch_size cannot be fixed for an elastic scaling.num_workers "
                      "[2, 4] (the global batch is optim.batch_size x the current workers); give optim.batch_size")]
    quasi = problems(write(tmp_path, minimal(data_dirs, "scaling: {num_workers: [1, 2]}\n")), ["data.order=quasi_random"])
    assert "data.order quasi_random does not work with more than one worker" in quasi[0]


def test_cli_dry_run_plans_an_elastic_job(tmp_path, cifar_subset):
    job = write(tmp_path, minimal((cifar_subset / "train", cifar_subset / "test"),
                                  "optim: {batch_size: 20, lr: 0.05, lr_scaling: linear, base_batch_size: 20}\n"
                                  "schedule: {epochs: 3}\nscaling: {num_workers: [1, 2], resize_check_seconds: 2}\n"))
    result = run_cli("submit", str(job), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "1..2 (elastic) x (1 CPU)" in result.stdout
    assert "looks for room to grow to 2 every 2 s" in result.stdout
    assert "20 per worker, 20..40 global, following the workers" in result.stdout
    assert "0.05..0.1, following the workers (step schedule)" in result.stdout
    # 400 images: 20 batches of 20 with one worker, 10 each with two.
    assert "20..10 per epoch with 1..2 workers (400 train images), 60..30 in all" in result.stdout
    # Fixed sizes keep their plan; a local run needs room for the fewest workers only.
    fixed = run_cli("submit", str(job), "--dry-run", "--set", "scaling.num_workers=2")
    assert "20 per worker, 40 global\n" in fixed.stdout and "0.1 (step schedule)" in fixed.stdout
    too_big = run_cli("submit", str(job), "--dry-run", "--set", f"scaling.num_workers=[{os.cpu_count() + 1}, 64]")
    assert too_big.returncode == 2 and f"asks for at least {os.cpu_count() + 1} workers" in too_big.stderr
    grows_past_data = run_cli("submit", str(job), "--dry-run", "--set", "scaling.num_workers=[1, 64]")
    assert grows_past_data.returncode == 2 and "less than one batch of 20 for each of 64 workers" in grows_past_data.stderr


def test_cluster_plan_starts_with_min_and_grows_to_max():
    from resplat.cluster.capacity import plan_nodes
    from resplat.spec import ScalingSpec

    local = ROOT / "cluster" / "local-autoscaling.yaml"  # gpu1 nodes: 1 CPU each, at most 2; gpu8: 8 CPUs, 1
    grows = plan_nodes(ScalingSpec(num_workers=[1, 2], placement="STRICT_SPREAD"), local)
    assert grows.startswith("starts with 1 x ") and "; grows to " in grows
    assert "node limits" not in grows
    capped = plan_nodes(ScalingSpec(num_workers=[2, 8], placement="STRICT_SPREAD"), local)
    assert capped.endswith("(the file's node limits stop it at 3 of the 8)")
    from resplat.errors import InputError

    with pytest.raises(InputError, match="at least 4 workers"):
        plan_nodes(ScalingSpec(num_workers=[4, 8], placement="STRICT_SPREAD"), local)

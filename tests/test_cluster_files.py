"""The files under cluster/: each passes `resplat cluster validate`, broken copies are refused
with the path of the problem, and `submit --dry-run --cluster` plans the worker nodes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from resplat.cluster.capacity import plan_nodes
from resplat.cluster.validate import validate_cluster_file
from resplat.errors import InputError
from resplat.spec import ScalingSpec

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHERS = ["aws-gpu.yaml", "gcp-gpu.yaml", "local-autoscaling.yaml"]
MANIFESTS = ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"]


def test_the_cluster_folder_holds_the_launcher_files_and_manifests():
    shipped = sorted(str(p.relative_to(CLUSTER)) for p in CLUSTER.rglob("*.yaml"))
    assert shipped == sorted(LAUNCHERS + MANIFESTS)


@pytest.mark.parametrize("name", LAUNCHERS + MANIFESTS)
def test_every_shipped_cluster_file_is_valid(name):
    assert validate_cluster_file(CLUSTER / name) == []


def write_broken(tmp_path: Path, name: str, mutate) -> Path:
    doc = copy.deepcopy(yaml.safe_load((CLUSTER / name).read_text()))
    mutate(doc)
    broken = tmp_path / Path(name).name
    broken.write_text(yaml.safe_dump(doc))
    return broken


def misspell_min_workers(doc):
    doc["available_node_types"]["gpu8"]["min_worker"] = doc["available_node_types"]["gpu8"].pop("min_workers")


def max_workers_as_text(doc):
    doc["available_node_types"]["gpu8"]["max_workers"] = "four"


def drop_head_type(doc):
    del doc["head_node_type"]


@pytest.mark.parametrize("name", LAUNCHERS)
@pytest.mark.parametrize(("mutate", "expected"), [
    (misspell_min_workers, "available_node_types.gpu8.min_worker: unknown key; did you mean 'min_workers'?"),
    (max_workers_as_text, "available_node_types.gpu8.max_workers: 'four' is not of type 'integer'"),
    (drop_head_type, "head_node_type: missing: name the head among the node types"),
])
def test_a_broken_launcher_file_is_refused_with_the_path(name, mutate, expected, tmp_path):
    problems = validate_cluster_file(write_broken(tmp_path, name, mutate))
    assert any(p.startswith(expected) for p in problems), problems


def cluster_spec(doc):
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def misspell_min_replicas(doc):
    group = cluster_spec(doc)["workerGroupSpecs"][0]
    group["minReplica"] = group.pop("minReplicas")


def max_replicas_as_text(doc):
    cluster_spec(doc)["workerGroupSpecs"][0]["maxReplicas"] = "four"


def drop_head_group(doc):
    del cluster_spec(doc)["headGroupSpec"]


def gpus_unlike_the_limits(doc):
    cluster_spec(doc)["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = "4"


@pytest.mark.parametrize("name", MANIFESTS)
@pytest.mark.parametrize(("mutate", "expected"), [
    (misspell_min_replicas, "workerGroupSpecs[0].minReplica: unknown key; did you mean 'minReplicas'?"),
    (max_replicas_as_text, "workerGroupSpecs[0].maxReplicas: 'four' is not of type 'integer'"),
    (drop_head_group, "headGroupSpec: missing (required)"),
    (gpus_unlike_the_limits, ("workerGroupSpecs[0].rayStartParams.num-gpus: '4' does not match the container's "
                              "limits.nvidia.com/gpu (8)")),
])
def test_a_broken_kuberay_manifest_is_refused_with_the_path(name, mutate, expected, tmp_path):
    problems = validate_cluster_file(write_broken(tmp_path, name, mutate))
    prefix = "spec.rayClusterSpec." if name.endswith("rayjob.yaml") else "spec."
    assert prefix + expected in problems, problems


def test_kuberay_keys_are_checked_everywhere_plain_jsonschema_lets_them_through(tmp_path):
    def misspell_deep(doc):
        doc["spec"]["shutdownAfterJobFinish"] = doc["spec"].pop("shutdownAfterJobFinishes")
        container = cluster_spec(doc)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        container["resources"]["limit"] = container["resources"].pop("limits")
        doc["metadata"]["nmae"] = doc["metadata"].pop("name")

    problems = validate_cluster_file(write_broken(tmp_path, "kuberay/rayjob.yaml", misspell_deep))
    assert "spec.shutdownAfterJobFinish: unknown key; did you mean 'shutdownAfterJobFinishes'?" in problems
    assert ("spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].resources.limit: unknown key; "
            "did you mean 'limits'?") in problems
    assert "metadata.nmae: unknown key; did you mean 'name'?" in problems and "metadata.name: missing" in problems


def test_unknown_keys_pass_only_where_the_schema_preserves_them():
    from resplat.cluster.validate import unknown_key_problems

    schema = {"type": "object", "properties": {
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "labels": {"type": "object", "additionalProperties": {"type": "object", "properties": {"a": {}}}},
        "items": {"type": "array", "items": {"type": "object", "properties": {"name": {}}}},
    }}
    doc = {"free": {"anything": {"goes": 1}}, "labels": {"x": {"a": 1, "b": 2}}, "items": [{"name": 1}, {"nme": 2}]}
    assert unknown_key_problems(doc, schema, []) == [
        "labels.x.b: unknown key", "items[1].nme: unknown key; did you mean 'name'?"]


def test_paths_quote_node_type_names_with_dots(tmp_path):
    def misspell_head_key(doc):
        doc["available_node_types"]["ray.head.default"]["node_confg"] = {}

    problems = validate_cluster_file(write_broken(tmp_path, "local-autoscaling.yaml", misspell_head_key))
    assert problems == [('available_node_types["ray.head.default"].node_confg: unknown key; did you mean '
                        "'node_config'?")]


def test_yaml_errors_and_foreign_kinds_are_one_line_each(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("cluster_name: x\nprovider: [aws\nmax_workers: 2\n")
    assert validate_cluster_file(bad_yaml) == ["line 3, column 12: not valid YAML: expected ',' or ']', but got ':'"]
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text("apiVersion: ray.io/v1\nkind: Deployment\nmetadata: {name: x}\n")
    assert validate_cluster_file(deployment) == ["kind: 'Deployment' is not a KubeRay kind (RayCluster, RayJob)"]
    old_api = tmp_path / "old.yaml"
    old_api.write_text("apiVersion: ray.io/v1alpha1\nkind: RayCluster\nmetadata: {name: x}\n")
    assert validate_cluster_file(old_api) == ["apiVersion: 'ray.io/v1alpha1' is not supported; use ray.io/v1"]


def test_missing_kuberay_crds_are_an_input_error_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("RESPLAT_KUBERAY_CRDS", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="set RESPLAT_KUBERAY_CRDS to the folder"):
        validate_cluster_file(CLUSTER / "kuberay" / "raycluster.yaml")


def test_cluster_validate_command_exit_codes(tmp_path):
    broken = write_broken(tmp_path, "aws-gpu.yaml", max_workers_as_text)

    def validate(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "resplat", "cluster", "validate", str(path)], cwd=ROOT,
                              capture_output=True, text=True, check=False)

    good = validate(CLUSTER / "kuberay" / "rayjob.yaml")
    assert good.returncode == 0 and good.stdout.strip().endswith("rayjob.yaml: ok"), good.stderr
    bad = validate(broken)
    assert bad.returncode == 2, bad.stderr
    assert "available_node_types.gpu8.max_workers: 'four' is not of type 'integer'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(("file", "scaling", "plan"), [
    ("aws-gpu.yaml", {"num_workers": 16, "use_gpu": True, "cpus_per_worker": 8},
     "2 x gpu8 for 16 workers (8 per node; a node has 96 CPU, 8 GPU, 8 gpu8)"),
    ("gcp-gpu.yaml", {"num_workers": 1, "use_gpu": True, "cpus_per_worker": 4},
     "1 x gpu1 for 1 worker (1 per node; a node has 8 CPU, 1 GPU, 1 gpu1)"),
    ("kuberay/raycluster.yaml", {"num_workers": 40, "use_gpu": True, "cpus_per_worker": 8},
     ("4 x gpu8 for 32 workers (8 per node; a node has 88 CPU, 8 GPU, 8 gpu8) + "
      "8 x gpu1 for 8 workers (1 per node; a node has 8 CPU, 1 GPU, 1 gpu1)")),
    ("local-autoscaling.yaml", {"num_workers": 2, "placement": "STRICT_SPREAD"},
     "2 x gpu1 for 2 workers (1 per node; a node has 1 CPU, 1 gpu1)"),
])
def test_plan_nodes_picks_the_node_type_and_count(file, scaling, plan):
    assert plan_nodes(ScalingSpec(**scaling), CLUSTER / file) == plan


def test_plan_nodes_refuses_workers_the_file_cannot_hold():
    with pytest.raises(InputError, match=r"no node type can hold one worker of \(100 CPU, 1 GPU\)"):
        plan_nodes(ScalingSpec(num_workers=1, use_gpu=True, cpus_per_worker=100), CLUSTER / "aws-gpu.yaml")
    with pytest.raises(InputError, match="40 workers of .* need more nodes than the file allows"):
        plan_nodes(ScalingSpec(num_workers=40, use_gpu=True, cpus_per_worker=8), CLUSTER / "aws-gpu.yaml")


@pytest.fixture
def imagenet_dir(tmp_path, cifar_subset, monkeypatch):
    (tmp_path / "train").symlink_to(cifar_subset / "train")  # real images in an ImageNet-style layout
    (tmp_path / "val").symlink_to(cifar_subset / "test")
    monkeypatch.setenv("IMAGENET_DIR", str(tmp_path))
    monkeypatch.setenv("RESPLAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAY_ADDRESS", "")
    return tmp_path


def dry_run(*args: str):
    from resplat.cli.main import app

    return CliRunner().invoke(app, ["submit", str(ROOT / "jobs" / "resnet152.yaml"), "--dry-run", *args])


def test_dry_run_with_a_cluster_file_prints_the_node_plan(imagenet_dir):
    result = dry_run("--cluster", str(CLUSTER / "aws-gpu.yaml"))
    assert result.exit_code == 0, result.output
    assert "nodes  2 x gpu8 for 16 workers (8 per node; a node has 96 CPU, 8 GPU, 8 gpu8)" in result.output
    assert "16 x (8 CPU, 1 GPU)" in result.output
    assert not (imagenet_dir / "home").exists()


def test_dry_run_with_a_worker_no_node_type_fits_exits_2(imagenet_dir):
    result = dry_run("--cluster", str(CLUSTER / "local-autoscaling.yaml"))
    assert result.exit_code == 2
    assert "no node type can hold one worker of (8 CPU, 1 GPU)" in result.output
    assert "workers" not in result.output.split("error:")[0]  # refused before the plan is printed
    assert not (imagenet_dir / "home").exists()


@pytest.mark.slow
def test_a_submitted_job_makes_the_autoscaler_add_nodes_that_go_when_idle(tmp_path):
    """bench/autoscaling.py for real: `resplat cluster up cluster/local-autoscaling.yaml` (Ray's fake_multinode
    provider; the head trains nothing), a submitted two-worker job makes the autoscaler add worker nodes, the job
    succeeds, the idle nodes go after the timeout, `cluster down` leaves nothing running."""
    import psutil

    out = tmp_path / "autoscaling.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "autoscaling.py"), "--out", str(out),
                             "--idle-timeout-s", "5", "--per-class", "20"], cwd=ROOT, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    [record] = json.loads(out.read_text())
    assert record["worker_nodes"]["before"] == 0 and record["worker_nodes"]["after"] == 0
    assert record["worker_nodes"]["during"] >= 1
    assert "SUCCEEDED" in record["job_outcome"]
    assert 0 < record["seconds_submit_to_first_worker_node"] <= record["seconds_submit_to_first_training_step"]
    assert record["processes_left"] == 0
    assert not any(record["temp_dir"] in " ".join(p.info["cmdline"] or ())
                   for p in psutil.process_iter(["cmdline"]))

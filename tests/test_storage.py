"""Shared storage for real: checkpoints and .beton files in an S3-protocol server on 127.0.0.1 (moto),
a job on two real raylets whose training node is removed mid-run, finishing on the other node
from the checkpoint read back from S3."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from ray_nodes import connect, training_node_id

from resplat.spec import JobSpec

pytestmark = pytest.mark.slow
BUCKET = "resplat-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_uri(tmp_path_factory):
    """A bucket in moto's S3 server on a free local port; credentials in the environment (moto takes any),
    set before Ray starts so that every raylet's workers inherit them."""
    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "RESPLAT_NODE_CACHE", "RESPLAT_HOME")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      RESPLAT_NODE_CACHE=str(tmp_path_factory.mktemp("node-cache")),
                      RESPLAT_HOME=str(tmp_path_factory.mktemp("home")))
    options = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    fs, _ = pyarrow.fs.FileSystem.from_uri(f"s3://{BUCKET}?{options}&allow_bucket_creation=true")
    fs.create_dir(BUCKET)
    yield f"s3://{BUCKET}/runs?{options}"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="module")
def two_nodes(s3_uri):
    """A head that trains nothing and two worker raylets, each with a resource of its own."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = {name: cluster.add_node(num_cpus=1, resources={name: 1}) for name in ("node_a", "node_b")}
    cluster.wait_for_nodes()
    connect(cluster)
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def test_a_job_on_object_storage_survives_losing_its_node(two_nodes, s3_uri, cifar_medium):
    import pyarrow.fs

    from resplat.orchestrate.submit import prepare_data, submit
    from resplat.tracking import TrackedRun

    cluster, nodes = two_nodes
    spec = JobSpec.model_validate({
        "name": "on-s3", "model": {"family": "cifar", "depth": 8},
        "data": {"train": cifar_medium / "train", "val": cifar_medium / "test", "loader_workers": 1},
        "optim": {"lr": 0.05, "batch_size": 100}, "schedule": {"kind": "cosine", "epochs": 5},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1}, "failure": {"max_failures": 1},
        "storage": {"uri": s3_uri}, "tracking": {"experiment": "on-s3"},
    })
    prepared = prepare_data(spec.data, num_classes=10)
    removed: dict = {}

    def remove_the_training_node_after_a_checkpoint(progress, epochs) -> None:
        # After epoch 2 is posted, epoch 1's checkpoint is surely registered (Ray Train registers a
        # reported checkpoint at its controller's next poll, and epochs are posted before the report).
        if removed or len(epochs) < 2:
            return
        node_id = training_node_id()
        victim = next((node for node in nodes.values() if node.node_id == node_id), None)
        if victim is not None:
            removed["node"] = victim
            threading.Thread(target=cluster.remove_node, args=(victim,), daemon=True).start()

    result = submit(spec, prepared=prepared, spec_text="", address="auto",
                    on_update=remove_the_training_node_after_a_checkpoint)
    assert removed, "the training node should have been removed mid-run"

    run = TrackedRun.open(f"sqlite:///{Path(os.environ['RESPLAT_HOME']) / 'mlflow.db'}", result.run_id)
    assert run.status == "FINISHED"
    assert int(run.tags["resplat.restored_from_epoch"]) >= 1
    assert result.metrics["epoch"] == 5

    fs, root = pyarrow.fs.FileSystem.from_uri(s3_uri)
    stored = [info.path for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))]
    assert f"{root}/betons/{prepared.train.sha256}.beton" in stored
    assert any("/ray_results/" in path and path.endswith("state.pt") for path in stored), stored[:20]
    local_results = Path(os.environ["RESPLAT_HOME"]) / "ray_results"
    assert not list(local_results.rglob("state.pt"))  # checkpoints live only in the object store
    cached = Path(os.environ["RESPLAT_NODE_CACHE"]) / f"{prepared.train.sha256}.beton"
    assert cached.exists() and cached.stat().st_size == prepared.train.path.stat().st_size


def test_a_sweep_on_object_storage_keeps_its_state_and_checkpoints_there(two_nodes, s3_uri, cifar_subset, tmp_path):
    """One-worker trials train in their Tune trial processes, one on each raylet: their checkpoints
    and the sweep's Tune state go to the object store, the data comes from it, and the best trial's
    model is registered from its checkpoint read back from S3."""
    import pyarrow.fs
    import yaml
    from ray.tune import Tuner

    from resplat.orchestrate.tune import run_sweep
    from resplat.sweep import load_space

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "sweep-on-s3", "model": {"family": "cifar", "depth": 8},
        "data": {"train": str(cifar_subset / "train"), "val": str(cifar_subset / "test"), "loader_workers": 1},
        "optim": {"lr": 0.05, "batch_size": 50}, "schedule": {"kind": "cosine", "epochs": 1},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1}, "checkpoint": {"keep": 1},
        "storage": {"uri": s3_uri}, "tracking": {"experiment": "sweep-on-s3"},
    }))
    space = tmp_path / "space.yaml"
    space.write_text(f"name: s3-sweep\nbase_job: {job}\nparams:\n  optim.lr: {{grid: [0.05, 0.1]}}\n"
                     "scheduler: {kind: fifo}\nmax_concurrent: 2\n")

    result = run_sweep(load_space(space), address="auto")
    assert {t.status for t in result.trials} == {"finished"} and str(result.registered_version) == "1"

    fs, root = pyarrow.fs.FileSystem.from_uri(s3_uri)
    stored = [info.path for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))]
    assert len([p for p in stored if p.startswith(f"{root}/tune/s3-sweep/") and p.endswith("state.pt")]) == 2
    assert any(p.startswith(f"{root}/betons/") and p.endswith(".beton") for p in stored)
    assert Tuner.can_restore(f"{s3_uri.partition('?')[0]}/tune/s3-sweep?{s3_uri.partition('?')[2]}")
    assert not (Path(os.environ["RESPLAT_HOME"]) / "tune").exists()

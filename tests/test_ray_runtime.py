"""The Ray that resplat starts for a local job: its workers ask their own cluster, even with another
Ray on the machine (Ray Train's placement-group cleaner depends on it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

# A second Ray that, as ray.cluster_utils does, records itself as the machine's current cluster:
# without an address of their own, the state API calls of the first Ray's workers go there.
PROBE = """
import ray
from ray.cluster_utils import Cluster

from resplat.orchestrate.runtime import start_ray

other = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
start_ray(address=None)


@ray.remote(num_cpus=0)
class Probe:
    def sees(self, actor_id: str) -> bool:
        from ray.util.state import get_actor

        return get_actor(actor_id) is not None


probe = Probe.remote()
try:
    print("sees itself:", ray.get(probe.sees.remote(probe._actor_id.hex())))
finally:
    ray.shutdown()
    other.shutdown()
"""


def test_workers_ask_their_own_cluster_when_another_ray_runs_on_the_machine(tmp_path):
    env = {**os.environ, "RESPLAT_HOME": str(tmp_path / "home"), "RAY_ADDRESS": ""}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sees itself: True" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_head_whose_port_another_ray_takes_while_it_starts_moves_to_a_free_one(tmp_path, monkeypatch):
    """`resplat cluster up` probes the dashboard port, then `ray start` binds it seconds later: when
    another Ray takes it in between, the port answers for that Ray, and jobs would go there."""
    from resplat.cluster import head

    monkeypatch.setenv("RESPLAT_HOME", str(tmp_path / "first"))
    first, _ = head.start()
    try:
        taken = int(first.url.rsplit(":", 1)[1])
        probe = head.free_port

        def racing_free_port(preferred: int | None = None) -> int:  # found free, then taken by `first`
            return taken if preferred == head.DEFAULT_DASHBOARD_PORT else probe(preferred)

        monkeypatch.setattr(head, "free_port", racing_free_port)
        monkeypatch.setenv("RESPLAT_HOME", str(tmp_path / "second"))
        second, started = head.start()
        try:
            assert started and second.url != first.url
            assert (Path(second.temp_dir) / head._session_name(second)).is_dir()
            assert head.recorded() == second
        finally:
            head.stop(second)
    finally:
        monkeypatch.setenv("RESPLAT_HOME", str(tmp_path / "first"))
        head.stop(first)

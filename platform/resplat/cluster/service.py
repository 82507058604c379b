"""`resplat cluster up/status/down`: the cluster-level operations behind the CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from resplat.cluster import head as local_head
from resplat.cluster.address import ClusterTarget, request_json, resolve
from resplat.errors import InputError, RunError

PROMETHEUS = "prometheus"
MLFLOW_SERVER = "mlflow"


def _launcher_provider(file: Path) -> str:
    """The provider type of a launcher file, after checking the file (nothing started when bad)."""
    import yaml

    from resplat.cluster.validate import validate_cluster_file

    problems = validate_cluster_file(file)
    if problems:
        raise InputError(f"{file}: not a valid cluster file\n" + "\n".join(f"  - {p}" for p in problems))
    config = yaml.safe_load(file.read_text())
    if not isinstance(config, dict) or "provider" not in config:
        raise InputError(f"{file}: `resplat cluster up` takes a Ray cluster launcher file (with a provider); "
                         "KubeRay manifests are applied with kubectl")
    return str(config["provider"].get("type", ""))


def up(file: Path | None, *, dashboard_port: int | None = None, metrics: bool = False,
       tracking_store: str | None = None, tracking_artifacts: str | None = None) -> str:
    """Start the head; with `tracking_store` (PostgreSQL) an MLflow server beside it first, which the
    head's jobs log to and `down` stops."""
    autoscaling = None
    if file is not None:
        provider = _launcher_provider(file)
        if provider != "fake_multinode":
            if tracking_store:
                raise InputError("--tracking-store starts the server beside a head on this machine; for a "
                                 "cloud cluster run `resplat tracking serve` and set tracking.tracking_uri")
            return _ray_up(file)
        autoscaling = file
    server = _start_tracking_server(tracking_store, tracking_artifacts) if tracking_store else None
    try:
        recorded, started = local_head.start(autoscaling_config=autoscaling, dashboard_port=dashboard_port,
                                             tracking_uri=server[1] if server else None)
    except BaseException:
        if server:
            from resplat.tracking.server import stop_detached_server

            stop_detached_server(server[0])
        raise
    if server:
        local_head.add_process(recorded, MLFLOW_SERVER, server[0])
    state = "started" if started else "already up"
    where = f"{recorded.url} (GCS {recorded.gcs_address}, recorded in {local_head.state_file()})"
    lines = [f"Ray cluster {state}: {where}"]
    if metrics:
        lines.append(_start_metrics(recorded))
    store = (f"the MLflow server at {recorded.tracking_uri} (127.0.0.1 only; PostgreSQL backend)"
             if recorded.tracking_uri else f"the MLflow store under {recorded.home} (`resplat ui` here shows them)")
    lines += [
        f"Jobs log to {store}.",
        "Submit:  resplat submit JOB.yaml        Watch:  resplat cluster status | resplat jobs list",
        "Stop:    resplat cluster down",
    ]
    return "\n".join(lines)


def _start_tracking_server(store: str, artifacts: str | None) -> tuple[int, str]:
    """The MLflow server for a head about to start; refused when a head is already up (its jobs'
    environment is fixed at its start)."""
    from resplat import paths
    from resplat.tracking.server import start_detached_server

    existing = local_head.recorded()
    if existing is not None and local_head.is_alive(existing):
        running = f"its jobs log to {existing.tracking_uri}" if existing.tracking_uri else "it has no tracking server"
        raise InputError(f"--tracking-store: the cluster {existing.url} is already up and {running}; "
                         "`resplat cluster down` first")
    home = paths.home()
    return start_detached_server(backend_store_uri=store, artifacts=artifacts or str(home / "server-artifacts"),
                                 port=local_head.free_port(), log_path=paths.logs_dir() / "mlflow-server.log")


def _start_metrics(recorded) -> str:
    from resplat.cluster.prometheus import start_prometheus

    if PROMETHEUS in recorded.extra_pids and local_head.pid_alive(recorded.extra_pids[PROMETHEUS]):
        return "Prometheus already running"
    sd_file = Path(recorded.temp_dir) / "prom_metrics_service_discovery.json"
    pid, url = start_prometheus(state_dir=Path(recorded.home) / "prometheus", sd_file=sd_file)
    local_head.add_process(recorded, PROMETHEUS, pid)
    return f"Prometheus scraping the cluster at {url} (dashboards/ has the Grafana dashboards)"


def _ray_launcher(verb: str, file: Path) -> None:
    """`ray up` / `ray down` on a cloud launcher file, its output straight to the terminal."""
    ray = shutil.which("ray")
    if ray is None:
        raise RunError("the `ray` command is not on PATH")
    result = subprocess.run([ray, verb, "-y", str(file)], check=False)
    if result.returncode != 0:
        raise RunError(f"`ray {verb} {file}` failed with exit code {result.returncode}")


def _ray_up(file: Path) -> str:
    _ray_launcher("up", file)
    return (f"cluster of {file} is up. Reach its dashboard with `ray dashboard {file}` (forwards port 8265), "
            "then: resplat submit JOB.yaml --address http://127.0.0.1:8265")


def down(file: Path | None) -> str:
    from resplat.cluster.prometheus import stop_prometheus

    if file is not None and _launcher_provider(file) != "fake_multinode":
        _ray_launcher("down", file)
        return f"cluster of {file} is down"
    recorded = local_head.recorded()
    if recorded is None:
        return f"no cluster recorded in {local_head.state_file()}: nothing to stop"
    if PROMETHEUS in recorded.extra_pids:
        stop_prometheus(recorded.extra_pids.pop(PROMETHEUS))
    stopped = local_head.stop(recorded)  # the MLflow server too: it is one of the head's extra processes
    server = f"; its MLflow server {recorded.tracking_uri} too" if recorded.tracking_uri else ""
    return f"Ray cluster {recorded.url} stopped ({stopped} processes{server})"


def status(address: str | None) -> str:
    """Nodes, pending demands (Ray's autoscaler summary) and the jobs running, as text."""
    from resplat.cluster import jobs_api

    target: ClusterTarget = resolve(address, allow_local=False)
    answer = request_json(target.url, "/api/cluster_status?format=1")
    summary = ((answer or {}).get("data") or {}).get("clusterStatus") or ""
    if "No cluster status" in summary or not summary.strip():
        summary = "(the autoscaler has not published its summary yet: ask again in a few seconds)"
    running = [row for row in jobs_api.list_jobs(target) if row.status in ("PENDING", "RUNNING")]
    jobs = "\n".join(f"  {row.job_id}  {row.status}  {row.name}" for row in running) or "  (none)"
    return (f"cluster {target.describe()}\n{_tracking_line(target)}\nNodes:\n{_nodes(target)}\n\n"
            f"{summary.strip()}\n\nJobs running:\n{jobs}")


def _tracking_line(target: ClusterTarget) -> str:
    """Where the cluster's jobs log, when it is the one `up` recorded here."""
    recorded = local_head.recorded()
    if recorded is None or recorded.url.rstrip("/") != target.url.rstrip("/"):
        return ""
    store = recorded.tracking_uri or f"the MLflow store under {recorded.home}"
    return f"MLflow tracking: {store}\n"


def _nodes(target: ClusterTarget) -> str:
    answer = request_json(target.url, "/api/v0/nodes?detail=false&limit=1000")
    nodes = (((answer or {}).get("data") or {}).get("result") or {}).get("result") or []
    lines = []
    for node in sorted(nodes, key=lambda n: (n.get("state") != "ALIVE", not n.get("is_head_node"))):
        total = node.get("resources_total") or {}
        role = "head" if node.get("is_head_node") else "worker"
        lines.append(f"  {node['node_id'][:12]}  {node.get('state', '?'):<5}  {role:<6}  {node.get('node_ip', '?'):<15}  "
                     f"{total.get('CPU', 0):g} CPU  {total.get('GPU', 0):g} GPU")
    return "\n".join(lines) or "  (none)"

"""A persistent Ray head on this machine: `resplat cluster up`, `down`, and what they record.

`up` runs `ray start --head --block` in its own process session, with its own temp folder
(so Ray's "current cluster" file of the default folder is left alone), the dashboard and
Jobs API on 127.0.0.1, and RESPLAT_HOME set to this directory's state so that jobs log to
the MLflow store that `resplat ui` shows here. What it started is recorded in
`<RESPLAT_HOME>/cluster.json`; `down` stops exactly those processes and their children.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from resplat import paths
from resplat.errors import InputError, RunError

DEFAULT_DASHBOARD_PORT = 8265
START_TIMEOUT_S = 120.0
PORT_ATTEMPTS = 3
STOP_TIMEOUT_S = 30.0
# The driver of a stopped job gets this long to end its MLflow run before Ray kills it.
JOB_STOP_GRACE_S = "30"


@dataclass
class RecordedHead:
    url: str  # the Jobs API / dashboard
    gcs_address: str  # host:port, for `ray.init(address=...)`
    pid: int  # the `ray start --block` process; every Ray process of this head descends from it
    temp_dir: str
    home: str  # RESPLAT_HOME of the jobs it runs
    started: float
    autoscaling_config: str | None = None
    extra_pids: dict[str, int] = field(default_factory=dict)  # e.g. {"prometheus": pid}
    tracking_uri: str | None = None  # the MLflow server started beside the head, which its jobs log to


def state_file() -> Path:
    return paths.home() / "cluster.json"


def recorded() -> RecordedHead | None:
    try:
        return RecordedHead(**json.loads(state_file().read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        raise InputError(f"{state_file()}: not a cluster record ({error}); remove it") from None


def _record(head: RecordedHead | None) -> None:
    if head is None:
        state_file().unlink(missing_ok=True)
        return
    state_file().parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(head), indent=2))
    tmp.replace(state_file())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/version", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, even if it wants a token
    except (urllib.error.URLError, OSError):
        return False


def is_alive(head: RecordedHead) -> bool:
    return pid_alive(head.pid) and _answers(head.url)


def free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RunError("no free port on 127.0.0.1")


def _node_ip() -> str:
    """The address Ray gives this node (its GCS listens there, not on 127.0.0.1)."""
    from ray._private.services import get_node_ip_address

    return get_node_ip_address()


def _with_gcs_address(config: Path, folder: Path, gcs_address: str) -> Path:
    """A copy of a fake_multinode file whose provider reaches this head's GCS (its port is not 6379)."""
    import yaml

    data = yaml.safe_load(config.read_text())
    data.setdefault("provider", {})["gcs_address"] = gcs_address
    effective = folder / "autoscaling.yaml"
    effective.write_text(yaml.safe_dump(data, sort_keys=False))
    return effective


def _ray_executable() -> str:
    return shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray") or "ray"


def start(*, autoscaling_config: Path | None = None, dashboard_port: int | None = None,
          tracking_uri: str | None = None) -> tuple[RecordedHead, bool]:
    """Start the head (or find the running one); return it and whether it was started now.
    `tracking_uri`: the MLflow store the head's jobs log to (MLFLOW_TRACKING_URI in their environment)."""
    existing = recorded()
    if existing is not None and is_alive(existing):
        return existing, False
    if dashboard_port and free_port(dashboard_port) != dashboard_port:
        raise InputError(f"--dashboard-port {dashboard_port}: the port is taken; choose another")
    # A port found free can be taken before `ray start` binds it (another Ray starting beside this
    # one); then Ray leaves this head without a dashboard and the port answers for the other.
    for attempt in range(PORT_ATTEMPTS):
        port = dashboard_port or free_port(DEFAULT_DASHBOARD_PORT if attempt == 0 else None)
        head, process = _launch(port, autoscaling_config=autoscaling_config, tracking_uri=tracking_uri)
        if _wait_until_ready(head, process):
            return head, True
        stop(head)
        if dashboard_port:
            raise InputError(f"--dashboard-port {dashboard_port}: another server took the port while the head "
                             "started; choose another")
    raise RunError(f"the Ray head found no dashboard port of its own in {PORT_ATTEMPTS} tries")


def _launch(port: int, *, autoscaling_config: Path | None,
            tracking_uri: str | None) -> tuple[RecordedHead, subprocess.Popen]:
    """`ray start --head --block` with its dashboard on `port`, recorded as this home's head."""
    home = paths.home()
    home.mkdir(parents=True, exist_ok=True)
    logs = paths.logs_dir()
    logs.mkdir(parents=True, exist_ok=True)
    # Short: Ray's socket paths under it must stay within the 107 characters a Unix socket allows.
    temp_dir = tempfile.mkdtemp(prefix="resplat-ray-", dir="/tmp")
    gcs_port = free_port()
    command = [
        _ray_executable(), "start", "--head", "--block",
        f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={port}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    node_ip = _node_ip()
    env = {
        **os.environ,
        "RESPLAT_HOME": str(home),
        # Job drivers run `python`: the one of this installation.
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        "RAY_JOB_STOP_WAIT_TIME_S": JOB_STOP_GRACE_S,
        "RAY_TRAIN_V2_ENABLED": "1",
        # Every process of the head, and the jobs it runs, asks this cluster, never another Ray on
        # the machine (see orchestrate.runtime.point_ray_address_at_this_cluster).
        "RAY_ADDRESS": f"{node_ip}:{gcs_port}",
    }
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    if autoscaling_config is not None:
        effective = _with_gcs_address(autoscaling_config, Path(temp_dir), f"{node_ip}:{gcs_port}")
        command.append(f"--autoscaling-config={effective}")
        command.append("--num-cpus=0")  # the head only schedules; the autoscaler adds the workers
        env["RAY_FAKE_CLUSTER"] = "1"
    with open(_log_path(), "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=home)
    head = RecordedHead(url=f"http://127.0.0.1:{port}", gcs_address=f"{node_ip}:{gcs_port}", pid=process.pid,
                        temp_dir=temp_dir, home=str(home), started=time.time(),
                        autoscaling_config=str(autoscaling_config.absolute()) if autoscaling_config else None,
                        tracking_uri=tracking_uri)
    _record(head)
    return head, process


def _log_path() -> Path:
    return paths.logs_dir() / "ray-head.log"


def _wait_until_ready(head: RecordedHead, process: subprocess.Popen) -> bool:
    """True once the head serves its Jobs API; False when its port answers for another Ray."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _record(None)
            tail = _log_path().read_text(errors="replace").strip().splitlines()[-5:]
            raise RunError(f"ray start exited with code {process.returncode}; last lines of {_log_path()}:\n"
                           + "\n".join(tail))
        session = _session_name(head)
        if session is not None:
            if not (Path(head.temp_dir) / session).is_dir():
                return False
            if _ready(head):
                return True
        time.sleep(0.5)
    stop(head)
    raise RunError(f"the Ray head did not answer within {START_TIMEOUT_S:.0f} s; see {_log_path()}")


def _session_name(head: RecordedHead) -> str | None:
    """The Ray session behind the head's URL (each lives in a folder of its Ray's temp dir)."""
    answer = _get(head, "/api/version")
    try:
        return json.loads(answer).get("session_name") if answer is not None else None
    except ValueError:
        return None


def _ready(head: RecordedHead) -> bool:
    """The Jobs API answers and the state API lists this head as an alive node."""
    if _get(head, "/api/jobs/") is None:
        return False
    nodes = _get(head, "/api/v0/nodes?detail=false")
    return nodes is not None and b'"ALIVE"' in nodes


def _get(head: RecordedHead, path: str) -> bytes | None:
    """The head's answer to GET `path`, or None when it does not answer with one."""
    from resplat.cluster.address import auth_headers

    try:
        request = urllib.request.Request(head.url + path, headers=auth_headers())
        with urllib.request.urlopen(request, timeout=2.0) as response:
            return response.read()
    except (urllib.error.URLError, OSError):
        return None


def add_process(head: RecordedHead, name: str, pid: int) -> None:
    head.extra_pids[name] = pid
    _record(head)


def _descendants(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _processes_of(head: RecordedHead) -> list:
    """Every live process of this head: the `ray start` tree, plus any process whose command line
    names this head's temp folder (a worker whose parent already died)."""
    import psutil

    found = {p.pid: p for p in _descendants(head.pid)}
    for extra in head.extra_pids.values():
        found.update({p.pid: p for p in _descendants(extra)})
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(head.temp_dir in part for part in process.info["cmdline"] or ()):
                found[process.pid] = process
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def stop(head: RecordedHead) -> int:
    """Stop what `start` started and nothing else; return how many processes were stopped."""
    import psutil

    processes = _processes_of(head)
    for process in processes:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=STOP_TIMEOUT_S)
    for process in alive + _processes_of(head):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(_processes_of(head), timeout=10)
    left = _processes_of(head)
    if left:
        raise RunError(f"could not stop {len(left)} processes of the cluster: pids "
                       f"{', '.join(str(p.pid) for p in left)}")
    shutil.rmtree(head.temp_dir, ignore_errors=True)
    _record(None)
    return len(processes)


def forget() -> None:
    _record(None)


__all__ = ["RecordedHead", "add_process", "forget", "free_port", "is_alive", "pid_alive", "recorded", "start",
           "state_file", "stop"]

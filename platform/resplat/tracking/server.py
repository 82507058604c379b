"""An MLflow tracking server with a PostgreSQL backend store, and the check every job makes of
the tracking URI before it starts anything."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from resplat.errors import InputError

REACHABLE_TIMEOUT_S = 5
GRACEFUL_SHUTDOWN_S = 5
POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg2", "postgres")


def check_tracking_reachable(tracking_uri: str, *, timeout_s: float = REACHABLE_TIMEOUT_S) -> None:
    """An http(s) tracking URI must answer MLflow's /health within `timeout_s`; local stores pass.

    Called before a job starts anything, so an unreachable server is one line, not a failed run.
    """
    scheme = urlparse(tracking_uri).scheme
    if scheme not in ("http", "https"):
        return
    health = f"{tracking_uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except OSError as error:
        reason = str(getattr(error, "reason", None) or error)
    raise InputError(f"tracking URI {tracking_uri}: no MLflow server answers there within "
                     f"{timeout_s:g} s ({reason})")


def postgres_store_uri(uri: str, *, option: str = "--backend-store-uri") -> str:
    """The backend store URI with the driver MLflow needs named (`postgresql+psycopg2://`)."""
    parsed = urlparse(uri)
    if parsed.scheme not in POSTGRES_SCHEMES or not parsed.hostname or not parsed.path.strip("/"):
        raise InputError(f"{option} {uri!r}: expected postgresql://USER@HOST:PORT/DATABASE")
    return urlunparse(parsed._replace(scheme="postgresql+psycopg2"))


def check_postgres(uri: str, *, timeout_s: float = REACHABLE_TIMEOUT_S, option: str = "--backend-store-uri") -> None:
    """The database answers (checked before the server starts, so a wrong URI is one line)."""
    import psycopg2

    parsed = urlparse(uri)
    try:
        psycopg2.connect(host=parsed.hostname, port=parsed.port or 5432, user=parsed.username,
                         password=parsed.password, dbname=parsed.path.strip("/"),
                         connect_timeout=max(1, int(timeout_s))).close()
    except psycopg2.OperationalError as error:
        first = (str(error).strip().splitlines() or ["no answer"])[0]
        shown = urlunparse(parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@")
                                           if parsed.password else parsed.netloc))
        raise InputError(f"{option} {shown}: cannot connect ({first})") from None


def allowed_hosts(host: str, port: int, extra: list[str]) -> str:
    """The Host headers the server accepts: the address it binds, loopback, and `extra` (each bare and
    with the port). Never `*`."""
    if any("*" in name for name in extra):
        raise InputError("--allowed-host: wildcards are refused; name the hosts clients use")
    names = [*([] if host in ("0.0.0.0", "::") else [host]), "localhost", "127.0.0.1", *extra]
    return ",".join(dict.fromkeys(form for name in names for form in (name, f"{name}:{port}")))


def artifacts_destination(location: str) -> str:
    """A folder (created) as a file URI, or an object store URI (s3://, gs://) passed on."""
    if urlparse(location).scheme in ("s3", "gs", "wasbs", "file"):
        return location
    folder = Path(location).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--artifacts {location}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


# MLflow's server-side job runner (GenAI scorers, trace roll-ups) is unused by resplat and starts a
# pool of consumer processes that a small machine feels and that slow every stop.
SERVER_ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_command(*, backend_store_uri: str, artifacts: str, host: str, port: int, workers: int,
                   extra_allowed_hosts: list[str] | None = None) -> list[str]:
    """`mlflow server` on PostgreSQL, proxying artifacts to `artifacts`, bound to host:port."""
    here = Path(sys.executable).parent
    mlflow = str(here / "mlflow") if (here / "mlflow").exists() else "mlflow"
    return [mlflow, "server", "--backend-store-uri", postgres_store_uri(backend_store_uri),
            "--serve-artifacts", "--artifacts-destination", artifacts_destination(artifacts),
            "--host", host, "--port", str(port), "--workers", str(workers),
            "--allowed-hosts", allowed_hosts(host, port, extra_allowed_hosts or []),
            # A client's idle keep-alive connection would otherwise hold a stop forever.
            "--uvicorn-opts", f"--timeout-graceful-shutdown {GRACEFUL_SHUTDOWN_S}"]


SERVER_READY_TIMEOUT_S = 180.0  # a first start on an empty database runs MLflow's migrations


def start_detached_server(*, backend_store_uri: str, artifacts: str, port: int, log_path: Path,
                          option: str = "--tracking-store") -> tuple[int, str]:
    """`mlflow server` on 127.0.0.1:`port` in its own session, outliving this process (beside a
    cluster head); return its pid and URL once /health answers. Bad input: InputError, nothing started."""
    import os
    import subprocess

    from resplat.errors import RunError
    from resplat.server_process import wait_until_serving

    store = postgres_store_uri(backend_store_uri, option=option)
    check_postgres(store, option=option)
    command = server_command(backend_store_uri=store, artifacts=artifacts, host="127.0.0.1", port=port, workers=1)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **SERVER_ENVIRONMENT}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    if not wait_until_serving(process, f"{url}/health", what="the MLflow server", timeout_s=SERVER_READY_TIMEOUT_S,
                              poll_s=0.5, see=str(log_path)):
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise RunError(f"the MLflow server exited with code {process.returncode}; last lines of {log_path}:\n"
                       + "\n".join(tail))
    return process.pid, url


def stop_detached_server(pid: int, *, timeout_s: float = 30.0) -> None:
    """Stop a server `start_detached_server` started: its whole session (uvicorn workers too)."""
    from resplat.server_process import stop_session

    stop_session(pid, timeout_s=timeout_s)

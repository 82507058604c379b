"""`resplat ui`: run the MLflow server in its own process group, say when it answers, stop it whole.

The server runs in a new session, so Ctrl-C in the terminal reaches only resplat, which
then stops the server's whole process group with SIGTERM (uvicorn's quiet shutdown)
instead of each worker printing its own KeyboardInterrupt traceback. SIGTERM to resplat
(kill, timeout, a supervisor) does the same, so no worker is left serving the port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from resplat.errors import InputError, RunError
from resplat.server_process import signal_session, stop_session, wait_until_serving
from resplat.tracking.server import GRACEFUL_SHUTDOWN_S, SERVER_ENVIRONMENT

STOP_GRACE_SECONDS = 15
READY_TIMEOUT_SECONDS = 300


def default_workers() -> int:
    """One server worker per two cores, 1 to 4: MLflow's default of 4 swamps a small machine."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def check_address(host: str, port: int) -> None:
    """The host and port can be served on (checked before anything starts)."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port {port}: must be between 1 and 65535")
    try:
        with socket.socket(_family(host)) as probe:
            probe.bind((host, port))
    except OSError as error:
        reason = error.strerror or str(error)
        raise InputError(f"--host {host} --port {port}: cannot serve there ({reason}); "
                         "choose another with --port") from None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def server_command(*, tracking_uri: str, host: str, port: int, workers: int, artifact_root: Path | None) -> list[str]:
    here = Path(sys.executable).parent
    mlflow = str(here / "mlflow") if (here / "mlflow").exists() else "mlflow"
    command = [mlflow, "server", "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port),
               "--workers", str(workers),
               # A client's idle keep-alive connection would otherwise hold a stop for a long time.
               "--uvicorn-opts", f"--timeout-graceful-shutdown {GRACEFUL_SHUTDOWN_S}"]
    if artifact_root is not None:
        command += ["--default-artifact-root", artifact_root.as_uri()]
    return command


def serve(command: list[str], *, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Run the server until it exits or resplat gets SIGINT/SIGTERM; always stop its process group.

    Its output goes to a temporary log, shown only when it fails to start.
    """
    stop_signal: dict[str, int | None] = {"number": None}
    with tempfile.TemporaryFile(mode="w+", prefix="resplat-ui-") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True, env={**os.environ, **SERVER_ENVIRONMENT})

        def stop(number, _frame) -> None:
            stop_signal["number"] = number
            signal_session(server.pid, signal.SIGTERM)

        previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            url = f"http://{_connect_host(host)}:{port}"
            if wait_until_serving(server, f"{url}/health", what="the MLflow server", timeout_s=READY_TIMEOUT_SECONDS,
                                  given_up=lambda: stop_signal["number"] is not None):
                on_ready(url)
                server.wait()
            if stop_signal["number"] is None and server.returncode not in (0, None):
                log.seek(0)
                tail = " | ".join(line.strip() for line in log.read().splitlines()[-3:] if line.strip())
                raise RunError(f"the MLflow server exited with code {server.returncode}: {tail}")
        finally:
            stop_session(server.pid, timeout_s=STOP_GRACE_SECONDS)
            server.wait()
            for number, handler in previous.items():
                signal.signal(number, handler)


def _connect_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host



"""Servers resplat starts in a session of their own (the MLflow UI and tracking server, Prometheus):
wait until one answers its health URL; stop one together with every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable

from resplat.errors import RunError


def answers(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until_serving(process: subprocess.Popen, health_url: str, *, what: str, timeout_s: float,
                       poll_s: float = 0.3, see: str = "", given_up: Callable[[], bool] = lambda: False) -> bool:
    """True once `health_url` answers 200; False when the process exits or `given_up()` first.

    Past `timeout_s` the server is stopped and RunError names `what`, the URL and `see` (a log).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None or given_up():
            return False
        if answers(health_url):
            return True
        time.sleep(poll_s)
    stop_session(process.pid)
    raise RunError(f"{what} did not answer {health_url} within {timeout_s:.0f} s" + (f"; see {see}" if see else ""))


def signal_session(pid: int, number: int) -> bool:
    """Send `number` to the session `pid` leads; False when none of it is left."""
    try:
        os.killpg(pid, number)
        return True
    except ProcessLookupError:
        return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # a child of this process stays a zombie (and in its group) until reaped
    except ChildProcessError:
        pass  # started by another process (`cluster up`, then `cluster down`)


def stop_session(pid: int, *, timeout_s: float = 30.0) -> None:
    """SIGTERM the session `pid` leads, wait for all of it, SIGKILL what outlives `timeout_s`."""
    if not signal_session(pid, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not signal_session(pid, 0):
            return
        time.sleep(0.1)
    signal_session(pid, signal.SIGKILL)
    time.sleep(0.1)
    _reap(pid)

"""Prometheus beside a local Ray head: Debian's binary, the shipped scrape config, 127.0.0.1 only.

Ray's own `ray metrics launch-prometheus` downloads Prometheus from the internet; this uses
the installed one, so it works behind a firewall.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from resplat.cluster.head import free_port
from resplat.errors import InputError, RunError
from resplat.server_process import stop_session, wait_until_serving

SHIPPED_CONFIG = Path(__file__).resolve().parents[3] / "dashboards" / "prometheus" / "prometheus.yml"
READY_TIMEOUT_S = 60.0


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise InputError("metrics: no `prometheus` binary on PATH; install Debian's package: "
                         "apt-get install prometheus")
    return found


def write_config(path: Path, *, sd_file: Path, scrape_interval: str | None = None) -> Path:
    """The shipped prometheus.yml, with its service-discovery file pointed at `sd_file`."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(sd_file)]
    if scrape_interval:
        config["global"]["scrape_interval"] = scrape_interval
        config["global"]["evaluation_interval"] = scrape_interval
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_prometheus(*, state_dir: Path, sd_file: Path, port: int | None = None,
                     scrape_interval: str | None = None) -> tuple[int, str]:
    """Start Prometheus scraping the Ray nodes listed in `sd_file`; return (pid, url) once it is ready.

    Its config, data and log live under `state_dir`; it listens on 127.0.0.1:`port` (a free one by default).
    """
    binary = prometheus_binary()
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    config = write_config(state_dir / "prometheus.yml", sd_file=Path(sd_file), scrape_interval=scrape_interval)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log = state_dir / "prometheus.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={state_dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    if not wait_until_serving(process, f"{url}/-/ready", what="prometheus", timeout_s=READY_TIMEOUT_S,
                              poll_s=0.2, see=str(log)):
        raise RunError(f"prometheus exited with code {process.returncode}: {_tail(log)}")
    return process.pid, url


def stop_prometheus(pid: int, timeout: float = 20.0) -> None:
    """Stop the Prometheus started with `pid` (SIGTERM, then SIGKILL); a gone process is fine."""
    stop_session(pid, timeout_s=timeout)


def _tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(text[-lines:]) or "(no output)"

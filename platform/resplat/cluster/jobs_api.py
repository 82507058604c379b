"""resplat's jobs on a Ray cluster, through Ray's Jobs API: submit, list, status, logs, stop.

A submitted job runs `python -m resplat.cluster.driver` on the head with the project's code
as its working_dir; what to run travels in the RESPLAT_DRIVER variable (JSON). The driver
prints `resplat: MLflow run <id>` once the run exists, so the client finds it in the log.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from resplat import paths
from resplat.cluster.address import ClusterTarget, auth_headers, check_reachable
from resplat.errors import InputError, RunError

DRIVER_ENV = "RESPLAT_DRIVER"
DRIVER_ENTRYPOINT = "python -m resplat.cluster.driver"
RUN_LINE = "resplat: MLflow run "
RUN_ID = re.compile(re.escape(RUN_LINE) + r"([0-9a-f]{32})")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
METADATA_JOB = "resplat.job"
METADATA_KIND = "resplat.kind"
METADATA_SPEC_SHA = "resplat.spec_sha256"


@dataclass
class JobRow:
    job_id: str
    name: str
    kind: str
    status: str
    start: float | None  # epoch seconds
    end: float | None
    message: str
    run_id: str | None = None

    @property
    def duration(self) -> float | None:
        if self.start is None:
            return None
        return (self.end or time.time()) - self.start


def _client(target: ClusterTarget):
    import logging

    from ray.job_submission import JobSubmissionClient

    # The SDK logs each packaging step and ignored file at INFO/WARNING: not the user's business.
    for name in ["ray", *(n for n in logging.root.manager.loggerDict if n.startswith("ray."))]:
        logging.getLogger(name).setLevel(logging.ERROR)
    check_reachable(target)
    return JobSubmissionClient(target.url, headers=auth_headers())


def submission_id(name: str) -> str:
    return f"resplat-{name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def submit(target: ClusterTarget, *, name: str, kind: str, payload: dict, spec_sha256: str) -> str:
    """Submit a driver run of `payload` under a readable id, with this checkout's code; return the id."""
    import tempfile

    from resplat.cluster.package import build

    client = _client(target)
    env_vars = {DRIVER_ENV: json.dumps(payload), "RAY_TRAIN_V2_ENABLED": "1", "RAY_JOB_STOP_WAIT_TIME_S": "30"}
    job_id = submission_id(name)
    metadata = {METADATA_JOB: name, METADATA_KIND: kind, METADATA_SPEC_SHA: spec_sha256}
    root = paths.checkout_root()
    with tempfile.TemporaryDirectory() as folder:
        runtime_env: dict = {"env_vars": env_vars}
        if root is not None and not _local_autoscaling_head(target):  # else the cluster has resplat installed
            runtime_env["working_dir"] = str(build(root, Path(folder) / f"{job_id}.zip"))
            env_vars["PYTHONPATH"] = "platform"
        return client.submit_job(entrypoint=DRIVER_ENTRYPOINT, submission_id=job_id, runtime_env=runtime_env,
                                 metadata=metadata)


def _local_autoscaling_head(target: ClusterTarget) -> bool:
    """The recorded head of a fake_multinode cluster: its nodes are this machine, running this checkout
    already, and they share one Ray temp folder, where a node that goes deletes the job's unpacked
    working_dir under the driver's feet."""
    from resplat.cluster import head

    recorded = head.recorded()
    return recorded is not None and recorded.url == target.url and recorded.autoscaling_config is not None


def _row(job, run_id: str | None = None) -> JobRow:
    metadata = job.metadata or {}
    return JobRow(
        job_id=job.submission_id, name=metadata.get(METADATA_JOB, job.entrypoint), kind=metadata.get(METADATA_KIND, "-"),
        status=str(job.status.value if hasattr(job.status, "value") else job.status),
        start=job.start_time / 1000 if job.start_time else None, end=job.end_time / 1000 if job.end_time else None,
        message=job.message or "", run_id=run_id,
    )


def _not_found(target: ClusterTarget, job_id: str, error: Exception) -> InputError | Exception:
    if "does not exist" in str(error) or "404" in str(error):
        return InputError(f"no job {job_id} on {target.url}; list them with `resplat jobs list`")
    return error


def list_jobs(target: ClusterTarget) -> list[JobRow]:
    """resplat's and other submitted jobs, newest first (Ray's driver-only jobs left out)."""
    client = _client(target)
    jobs = [job for job in client.list_jobs() if str(getattr(job.type, "value", job.type)).upper() == "SUBMISSION"]
    rows = [_row(job, run_id_in(client.get_job_logs(job.submission_id))) for job in jobs]
    return sorted(rows, key=lambda row: row.start or 0, reverse=True)


def status(target: ClusterTarget, job_id: str) -> JobRow:
    client = _client(target)
    try:
        job = client.get_job_info(job_id)
        logs = client.get_job_logs(job_id)
    except RuntimeError as error:
        raise _not_found(target, job_id, error) from None
    return _row(job, run_id_in(logs))


def logs(target: ClusterTarget, job_id: str) -> str:
    client = _client(target)
    try:
        return client.get_job_logs(job_id)
    except RuntimeError as error:
        raise _not_found(target, job_id, error) from None


def run_id_in(log: str) -> str | None:
    found = RUN_ID.search(log or "")
    return found.group(1) if found else None


def follow(target: ClusterTarget, job_id: str) -> Iterator[str]:
    """The job's log as it is written, chunk by chunk, until the job ends."""
    client = _client(target)
    try:
        client.get_job_info(job_id)
    except RuntimeError as error:
        raise _not_found(target, job_id, error) from None
    stream = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(stream.aclose())
        loop.close()


def stop(target: ClusterTarget, job_id: str, *, wait_s: float = 60.0) -> JobRow:
    """Ask Ray to stop the job (its driver ends the MLflow run as KILLED); wait until it has."""
    client = _client(target)
    try:
        client.stop_job(job_id)
    except RuntimeError as error:
        raise _not_found(target, job_id, error) from None
    return wait(target, job_id, timeout=wait_s)


def wait(target: ClusterTarget, job_id: str, *, timeout: float) -> JobRow:
    deadline = time.monotonic() + timeout
    while True:
        row = status(target, job_id)
        if row.status in TERMINAL or time.monotonic() > deadline:
            return row
        time.sleep(1.0)


def driver_exit_code(target: ClusterTarget, job_id: str) -> int | None:
    client = _client(target)
    return getattr(client.get_job_info(job_id), "driver_exit_code", None)


def outcome_error(row: JobRow, exit_code: int | None) -> RunError | InputError | None:
    """What the CLI raises for a job that did not succeed."""
    if row.status == "SUCCEEDED":
        return None
    text = f"job {row.job_id} ended {row.status}" + (f": {row.message}" if row.message else "")
    return InputError(text) if exit_code == 2 else RunError(text)

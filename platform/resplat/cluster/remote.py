"""Submitting `resplat submit` and `resplat tune` to a cluster: the client half of the driver."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from resplat.cluster import jobs_api
from resplat.cluster.address import ClusterTarget, check_reachable

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def on_this_machine(target: ClusterTarget) -> bool:
    """A cluster whose head is this machine sees the same files: data is checked here too."""
    return urlsplit(target.url).hostname in LOOPBACK


def submit_job(target: ClusterTarget, spec, *, source: str, text: str, overrides: list[str],
               resume: str | None = None, from_run: str | None = None) -> str:
    """Check what the client can, then submit the job's driver; return the job id. `from_run`: the run
    whose resolved spec `text` is (`submit --from-run`); the new run is tagged with it."""
    from resplat.orchestrate.submit import check_runnable

    check_reachable(target)
    if on_this_machine(target) and not resume:
        check_runnable(spec, address="auto")
    payload = {"command": "submit", "source": source, "text": text, "overrides": list(overrides),
               "name": spec.name, "resume": resume, "from_run": from_run}
    return jobs_api.submit(target, name=spec.name, kind="job", payload=payload, spec_sha256=_sha(text, overrides))


def submit_sweep(target: ClusterTarget, sweep, *, space: str, job: str | None, overrides: list[str],
                 samples: int | None, resume: str | None) -> str:
    """Submit the sweep's driver; the space and base job are read again on the cluster."""
    from resplat.orchestrate.submit import check_runnable

    check_reachable(target)
    if on_this_machine(target) and not resume:
        check_runnable(sweep.base_spec, address="auto")
    payload = {"command": "tune", "space": space, "job": job, "overrides": list(overrides), "samples": samples,
               "resume": resume}
    return jobs_api.submit(target, name=sweep.space.name, kind="sweep", payload=payload,
                           spec_sha256=_sha(sweep.text, overrides))


def _sha(text: str, overrides: list[str]) -> str:
    return hashlib.sha256("\n".join([text, *overrides]).encode()).hexdigest()

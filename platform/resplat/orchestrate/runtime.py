"""Starting local Ray, or joining a cluster, with Ray's own logs kept out of the terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator

from resplat import paths
from resplat.errors import RunError


def local_capacity_problems(scaling) -> list[str]:
    """Why a local run of `scaling` cannot fit this machine (empty when it fits). An elastic job
    needs room for its fewest workers only: it starts with what fits and never grows here."""
    problems = []
    cpus = os.cpu_count() or 1
    workers = scaling.min_workers
    asked = f"at least {workers}" if scaling.elastic else str(workers)
    needed = workers * scaling.cpus_per_worker
    if needed > cpus:
        problems.append(
            f"scaling asks for {asked} workers x {scaling.cpus_per_worker} CPUs = {needed} CPUs, "
            f"but this machine has {cpus}; lower scaling.num_workers or scaling.cpus_per_worker "
            "(--set scaling.cpus_per_worker=1), or submit to a cluster with --address"
        )
    if scaling.use_gpu:
        import torch

        if torch.cuda.device_count() < workers:
            problems.append(
                f"scaling.use_gpu is true with {asked} workers, but this machine has "
                f"{torch.cuda.device_count()} GPUs; set scaling.use_gpu=false or submit to a GPU cluster"
            )
    return problems


def _quiet_ray_logging(verbose: bool) -> None:
    # Ray adds its console handler when these modules are first imported: import them first.
    import ray._private.worker
    import ray.train.torch  # noqa: F401

    log_dir = paths.logs_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "ray-driver.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray", "ray.train", "ray.tune", "ray.data"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        if not verbose:
            logger.propagate = False
            for h in list(logger.handlers):
                if h is not handler:
                    logger.removeHandler(h)
    if not verbose:
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        # ray.init drops the handlers above while it starts, so Python's last-resort handler would
        # print this notice (token auth is on, as it should be) to the terminal.
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)


def point_ray_address_at_this_cluster() -> None:
    """Run in every worker process of a Ray that resplat starts (worker_process_setup_hook).

    Ray's state API finds its cluster by RAY_ADDRESS, else by looking for Ray processes on the
    machine. With a second Ray on the machine (another job, a `resplat cluster up` head) that
    fails or answers for the wrong cluster, and Ray Train's placement-group cleaner, which asks
    whether its controller is alive, either never frees a stopped run's CPUs (the next sweep trial
    waits forever) or frees a live run's."""
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def job_runtime_env() -> dict:
    """The runtime environment of the jobs resplat runs on a Ray it starts itself."""
    return {"worker_process_setup_hook": f"{__name__}.{point_ray_address_at_this_cluster.__name__}"}


def start_ray(*, address: str | None, verbose: bool = False) -> None:
    """With no address, start a Ray of our own on this machine (never a cluster some earlier
    `ray start` left behind); "auto" joins the cluster this process runs in (a Ray job's driver)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    _quiet_ray_logging(verbose)
    target = address or "local"
    if target == "local":
        os.environ.pop("RAY_ADDRESS", None)  # Train and Tune must not go looking for another cluster
    try:
        ray.init(
            address=target,
            runtime_env=job_runtime_env() if target == "local" else None,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.WARNING,
            configure_logging=verbose,
        )
    except ConnectionError as e:
        raise RunError(f"cannot reach the Ray cluster at {target}: {e}") from e
    _quiet_ray_logging(verbose)  # ray.init may have added console handlers


@contextlib.contextmanager
def ctrl_c_as_flag(on_first: Callable[[], None] = lambda: None) -> Iterator[threading.Event]:
    """While inside: the first Ctrl-C (or SIGTERM) sets the yielded flag (and calls `on_first`); a second one
    raises KeyboardInterrupt. Drivers poll the flag: a KeyboardInterrupt raised inside ray.get or
    MLflow calls can be swallowed there, and the run would carry on. Signals reach only the main
    thread; elsewhere the flag is never set."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_ctrl_c(signum, frame) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        on_first()

    # SIGTERM too: `kill`, a supervisor, or Ray stopping a job (`resplat jobs stop`) ask the same.
    previous = {signum: signal.signal(signum, on_ctrl_c) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupted
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

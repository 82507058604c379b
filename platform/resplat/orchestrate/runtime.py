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
from resplat.errors import InputError, RunError


def check_local_capacity(scaling) -> None:
    """A local run must fit this machine: fail before Ray starts when it cannot."""
    cpus = os.cpu_count() or 1
    needed = scaling.num_workers * scaling.cpus_per_worker
    if needed > cpus:
        raise InputError(
            f"scaling asks for {scaling.num_workers} workers x {scaling.cpus_per_worker} CPUs = {needed} CPUs, "
            f"but this machine has {cpus}; lower scaling.num_workers or scaling.cpus_per_worker "
            "(--set scaling.cpus_per_worker=1), or submit to a cluster with --address"
        )
    if scaling.use_gpu:
        import torch

        if torch.cuda.device_count() < scaling.num_workers:
            raise InputError(
                f"scaling.use_gpu is true with {scaling.num_workers} workers, but this machine has "
                f"{torch.cuda.device_count()} GPUs; set scaling.use_gpu=false or submit to a GPU cluster"
            )


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


def start_ray(*, address: str | None, verbose: bool = False) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray on this machine."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    _quiet_ray_logging(verbose)
    target = address or os.environ.get("RAY_ADDRESS") or None
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.pop("RAY_ADDRESS", None)  # ray.init reads it too; an empty one is an error there
    try:
        ray.init(
            address=target,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.WARNING,
            configure_logging=verbose,
        )
    except ConnectionError as e:
        raise RunError(f"cannot reach the Ray cluster at {target}: {e}") from e
    _quiet_ray_logging(verbose)  # ray.init may have added console handlers


@contextlib.contextmanager
def ctrl_c_as_flag(on_first: Callable[[], None] = lambda: None) -> Iterator[threading.Event]:
    """While inside: the first Ctrl-C sets the yielded flag (and calls `on_first`); a second one
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

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)

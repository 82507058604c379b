"""The one way resplat opens an MLflow store."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from resplat.errors import InputError


def client_for(tracking_uri: str):
    """An MlflowClient on `tracking_uri`; a SQLite store's folder is created when missing."""
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri)


def open_store(tracking_uri: str):
    """A client on a store that must already exist (for reading); InputError when a local one is absent."""
    location = local_store_path(tracking_uri)
    if location is not None and not location.exists():  # said before MLflow's slow import
        raise InputError(f"no MLflow store at {location} (tracking URI {tracking_uri})")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def local_store_path(tracking_uri: str) -> Path | None:
    """The file or folder a local tracking URI names; None for remote stores."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///"))
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "":
        return Path(tracking_uri)
    return None


@contextlib.contextmanager
def fluent_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (log_model, register_model, load_text) aimed at `tracking_uri` for a while.
    mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI, which resplat reads as the default store
    and child processes inherit: it is put back afterwards."""
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved

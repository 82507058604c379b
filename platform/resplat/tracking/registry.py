"""The MLflow model registry: registering a run's model and the `champion` alias."""

from __future__ import annotations

from resplat.tracking.client import client_for
from resplat.tracking.names import CHAMPION


def register(tracking_uri: str, model_uri: str, name: str) -> str:
    """Register the model at `model_uri` under `name`; return the new version."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.register_model(model_uri, name).version


def beats(value: float, other: float, mode: str) -> bool:
    return value > other if mode == "max" else value < other


def maybe_move_champion(tracking_uri: str, model_name: str, version: str, metric: str, mode: str,
                        value: float | None) -> tuple[dict, bool]:
    """Point `champion` at `version` when there is none or `value` beats the champion's metric.

    Returns the previous champion ({"version": ..., metric: its value}, empty when there was
    none) and whether the alias moved.
    """
    from mlflow.exceptions import MlflowException

    client = client_for(tracking_uri)
    try:
        current = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        current = None
    previous: dict = {}
    if current is not None:
        champion_value = client.get_run(current.run_id).data.metrics.get(metric) if current.run_id else None
        previous = {"version": current.version, metric: champion_value}
        if champion_value is not None and (value is None or not beats(value, champion_value, mode)):
            return previous, False
    client.set_registered_model_alias(model_name, CHAMPION, version)
    return previous, True

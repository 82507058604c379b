"""The MLflow model registry: registering a run's model and the `champion` alias."""

from __future__ import annotations

from dataclasses import dataclass, field

from resplat.errors import InputError
from resplat.tracking.client import client_for, fluent_tracking_uri
from resplat.tracking.names import CHAMPION


def register(tracking_uri: str, model_uri: str, name: str) -> str:
    """Register the model at `model_uri` under `name`; return the new version."""
    import mlflow

    with fluent_tracking_uri(tracking_uri):
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


# ---------------------------------------------------------------- reading and moving aliases


@dataclass
class ModelVersionView:
    name: str
    version: str
    aliases: list[str]
    run_id: str | None
    status: str
    created_ms: int | None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RegisteredModelView:
    name: str
    latest_version: str | None
    aliases: dict[str, str]  # alias -> version
    versions: int
    updated_ms: int | None


def _registry_client(tracking_uri: str):
    from resplat.tracking.client import open_store

    return open_store(tracking_uri)


def list_models(tracking_uri: str) -> list[RegisteredModelView]:
    """Every registered model, by name."""
    from resplat.tracking.sweeps import all_pages

    client = _registry_client(tracking_uri)
    models = list(all_pages(lambda token: client.search_registered_models(page_token=token)))
    views = []
    for model in sorted(models, key=lambda m: m.name):
        versions = _versions(client, model.name)
        views.append(RegisteredModelView(
            name=model.name,
            latest_version=max((str(v.version) for v in versions), key=int, default=None),
            aliases={alias: str(v) for alias, v in (model.aliases or {}).items()},
            versions=len(versions),
            updated_ms=model.last_updated_timestamp,
        ))
    return views


def _versions(client, name: str) -> list:
    from resplat.tracking.sweeps import all_pages

    return list(all_pages(lambda token: client.search_model_versions(
        f"name = '{_quoted(name)}'", page_token=token)))


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def _model(client, name: str, tracking_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        known = [m.name for m in list_models(tracking_uri)]
        listed = ", ".join(known[:10]) if known else "none (register one with tracking.register_as)"
        raise InputError(f"no registered model {name!r} in {tracking_uri}; models: {listed}") from None


def show_model(tracking_uri: str, name: str, *, metrics: tuple[str, ...] = ("val_top1", "val_top5")
               ) -> list[ModelVersionView]:
    """The versions of model `name`, newest first, with their aliases and their runs' final metrics."""
    client = _registry_client(tracking_uri)
    model = _model(client, name, tracking_uri)
    by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    views = []
    for v in sorted(_versions(client, name), key=lambda v: int(v.version), reverse=True):
        run_metrics = client.get_run(v.run_id).data.metrics if v.run_id else {}
        views.append(ModelVersionView(
            name=name, version=str(v.version), aliases=sorted(by_version.get(str(v.version), [])),
            run_id=v.run_id, status=v.status, created_ms=v.creation_timestamp,
            metrics={m: run_metrics[m] for m in metrics if m in run_metrics},
        ))
    return views


def _check_alias(alias: str) -> None:
    if not alias or not alias.replace("_", "").replace("-", "").isalnum() or alias[0].isdigit():
        raise InputError(f"--alias {alias!r}: use letters, digits, '_' or '-', not starting with a digit")
    if alias.lower() == "latest" or (alias[0] in "vV" and alias[1:].isdigit()):
        raise InputError(f"--alias {alias!r}: reserved by MLflow ('latest', 'v<number>')")


def _version(client, name: str, version: str, tracking_uri: str):
    from mlflow.exceptions import MlflowException

    _model(client, name, tracking_uri)
    try:
        return client.get_model_version(name, str(int(version)))
    except (ValueError, MlflowException):
        known = ", ".join(sorted((str(v.version) for v in _versions(client, name)), key=int)) or "none"
        raise InputError(f"model {name!r} has no version {version!r}; versions: {known}") from None


def promote(tracking_uri: str, name: str, version: str, alias: str = CHAMPION) -> str | None:
    """Point `alias` of model `name` at `version`; return the version it pointed at before, if any."""
    _check_alias(alias)
    client = _registry_client(tracking_uri)
    _version(client, name, version, tracking_uri)
    previous = (client.get_registered_model(name).aliases or {}).get(alias)
    client.set_registered_model_alias(name, alias, str(int(version)))
    return None if previous is None else str(previous)


def resolve(tracking_uri: str, reference: str) -> tuple[str, str]:
    """NAME, NAME@alias or NAME/version -> (name, version); NAME alone is the newest version."""
    from mlflow.exceptions import MlflowException

    client = _registry_client(tracking_uri)
    if "@" in reference:
        name, alias = reference.rsplit("@", 1)
        model = _model(client, name, tracking_uri)
        try:
            return name, str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            known = ", ".join(sorted(model.aliases or {})) or "none"
            raise InputError(f"model {name!r} has no alias {alias!r}; aliases: {known}") from None
    if "/" in reference:
        name, version = reference.rsplit("/", 1)
        return name, str(_version(client, name, version, tracking_uri).version)
    _model(client, reference, tracking_uri)
    versions = _versions(client, reference)
    if not versions:
        raise InputError(f"model {reference!r} has no versions")
    return reference, str(max(int(v.version) for v in versions))

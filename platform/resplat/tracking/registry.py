"""The MLflow model registry: registering a run's model and the `champion` alias."""

from __future__ import annotations

from dataclasses import dataclass, field

from resplat.errors import InputError
from resplat.tracking.client import client_for, fluent_tracking_uri
from resplat.tracking.names import CHAMPION, EPOCH_MODEL_TAG


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


# ---------------------------------------------------------------- epoch models of a run (LoggedModels)


@dataclass
class EpochModelView:
    epoch: int
    model_id: str
    metrics: dict[str, float]  # the run's metrics of that epoch, linked to the model
    registered: list[str] = field(default_factory=list)  # "NAME/VERSION" it was registered as

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"


def epoch_models(tracking_uri: str, run_id: str) -> list[EpochModelView]:
    """The LoggedModels of run `run_id` that hold a checkpointed epoch's network, by epoch."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    from resplat.tracking.runs import TrackedRun
    from resplat.tracking.sweeps import all_pages

    client = _registry_client(tracking_uri)
    run = TrackedRun.open(tracking_uri, run_id)
    logged = all_pages(lambda token: client.search_logged_models(
        [run.experiment_id], filter_string=f"source_run_id = '{_quoted(run_id)}'", page_token=token))
    by_epoch: dict[int, EpochModelView] = {}
    # Oldest first: an epoch trained again after a worker-group restart keeps its newer model.
    for model in sorted(logged, key=lambda m: m.creation_timestamp or 0):
        if EPOCH_MODEL_TAG not in model.tags:
            continue  # the final model, logged after training
        epoch = int(model.tags[EPOCH_MODEL_TAG])
        versions = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
        by_epoch[epoch] = EpochModelView(
            epoch=epoch, model_id=model.model_id,
            metrics={m.key: m.value for m in model.metrics or [] if m.step == epoch},
            registered=[f"{v['name']}/{v['version']}" for v in versions],
        )
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def pick_epoch_model(tracking_uri: str, run_id: str, *, epoch: int | None = None, metric: str = "val_top1",
                     mode: str = "max") -> EpochModelView:
    """The epoch model of `run_id` at `epoch`, or (no epoch) the one whose `metric` is best."""
    if mode not in ("max", "min"):
        raise InputError(f"--mode {mode!r}: use max or min")
    views = epoch_models(tracking_uri, run_id)
    if not views:
        raise InputError(f"run {run_id} has no epoch models (runs log one per checkpointed epoch; "
                         "older runs have only their final model)")
    if epoch is not None:
        for view in views:
            if view.epoch == epoch:
                return view
        known = ", ".join(str(v.epoch) for v in views)
        raise InputError(f"run {run_id} has no model of epoch {epoch}; epochs: {known}")
    scored = [view for view in views if metric in view.metrics]
    if not scored:
        known = ", ".join(sorted({key for view in views for key in view.metrics})) or "none"
        raise InputError(f"--metric {metric!r}: no epoch model of run {run_id} has it; metrics: {known}")
    best = scored[0]
    for view in scored[1:]:
        if beats(view.metrics[metric], best.metrics[metric], mode):
            best = view
    return best


def register_epoch_model(tracking_uri: str, run_id: str, name: str, *, epoch: int | None = None,
                         metric: str = "val_top1", mode: str = "max") -> tuple[EpochModelView, str]:
    """Register the chosen epoch model of `run_id` under `name`; return it and the new version."""
    if not name.strip():
        raise InputError("--name: give the registered model's name")
    chosen = pick_epoch_model(tracking_uri, run_id, epoch=epoch, metric=metric, mode=mode)
    return chosen, register(tracking_uri, chosen.model_uri, name)

"""One MLflow run per job, addressed by run id so that any process can log to it."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from resplat import paths
from resplat.errors import InputError
from resplat.tracking.client import client_for, fluent_tracking_uri
from resplat.tracking.names import (
    EPOCH_MODEL_TAG,
    MODEL_ARTIFACT,
    RESOLVED_SPEC,
    RESUMED_TAG,
    TRAIN_SHA256_TAG,
    epoch_model_name,
)

# MLflow's SQLite store logs its table set-up and migrations at INFO on first use; mlflow
# sets its loggers' level from MLFLOW_LOGGING_LEVEL when it is imported.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
logging.getLogger("alembic").setLevel(logging.WARNING)
# log_model warns that pickled models execute code on load; resplat loads only its own runs' models.
logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def tracking_uri_for(tracking_spec) -> str:
    """The job's tracking.tracking_uri, else MLFLOW_TRACKING_URI, else the embedded SQLite store."""
    configured = tracking_spec.tracking_uri if tracking_spec is not None else None
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """These environment variables set (None: unset) while inside, put back afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class TrackedRun:
    """An MLflow run of one job. `create` opens it; workers reopen it with the run id."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.client = client_for(tracking_uri)
        self._epoch_model_inputs = None  # (model spec, input example, metadata), read once per process

    @classmethod
    def create(cls, tracking_uri: str, experiment: str, *, run_name: str, params: dict[str, str],
               texts: dict[str, str], tags: dict[str, str] | None = None) -> TrackedRun:
        from mlflow.entities import Param

        client = client_for(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = None
            if tracking_uri.startswith("sqlite:"):
                location = paths.artifacts_dir().as_uri()
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        from resplat.tracking.lineage import lineage_tags

        run = client.create_run(experiment_id, run_name=run_name, tags={**lineage_tags(), **(tags or {})})
        tracked = cls(tracking_uri, run.info.run_id)
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):
            client.log_batch(tracked.run_id, params=items[start:start + 100])
        for name, text in texts.items():
            tracked.log_text(text, name)
        return tracked

    @classmethod
    def open(cls, tracking_uri: str, run_id: str) -> TrackedRun:
        """An existing run; InputError when there is none with that id."""
        from mlflow.exceptions import MlflowException

        tracked = cls(tracking_uri, run_id)
        try:
            tracked.client.get_run(run_id)
        except MlflowException:
            raise InputError(f"no MLflow run {run_id} in {tracking_uri}") from None
        return tracked

    @property
    def status(self) -> str:
        return self.client.get_run(self.run_id).info.status

    def read_text(self, artifact: str) -> str:
        import mlflow
        import mlflow.artifacts

        with fluent_tracking_uri(self.tracking_uri):
            return mlflow.artifacts.load_text(f"runs:/{self.run_id}/{artifact}")

    def reopen(self) -> None:
        self.client.update_run(self.run_id, status="RUNNING")
        self.client.set_tag(self.run_id, RESUMED_TAG, "true")

    @property
    def tags(self) -> dict[str, str]:
        return self.client.get_run(self.run_id).data.tags

    @property
    def experiment_id(self) -> str:
        return self.client.get_run(self.run_id).info.experiment_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def metric_history(self, key: str) -> list:
        return self.client.get_metric_history(self.run_id, key)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_text(self, text: str, artifact: str) -> None:
        self.client.log_text(self.run_id, text, artifact)

    def log_model(self, model, input_example) -> str:
        """Log a torch model as `model`; return its model URI.

        Pickled, with the resplat modules its class needs bundled as code, so
        `mlflow.pytorch.load_model` gives back the nn.Module in any process with mlflow and
        torch. Its metadata holds the class names and eval transform (model_card).
        """
        from resplat.tracking.model_card import model_metadata

        metadata = model_metadata(self.read_text(RESOLVED_SPEC))
        return self._log_torch_model(model, input_example, metadata, name=MODEL_ARTIFACT)

    def log_epoch_model(self, weights: dict, epoch: int) -> str:
        """Log the network of a checkpointed epoch (its state dict) as a LoggedModel of this run at
        step `epoch`, serialised as `log_model` does; return its model URI.

        Call it after the epoch's metrics are logged: MLflow links the run's metrics of that step
        to the model, which is how the best epoch is found (tracking/registry.epoch_models).
        """
        from resplat.models import resnet

        model_spec, example, metadata = self._inputs_for_epoch_models()
        model = resnet(**model_spec)
        model.load_state_dict(weights)
        return self._log_torch_model(model.eval(), example, metadata, name=epoch_model_name(epoch), step=epoch,
                                     tags={EPOCH_MODEL_TAG: str(epoch)})

    def _inputs_for_epoch_models(self):
        if self._epoch_model_inputs is None:
            import numpy as np
            import yaml

            from resplat.spec import JobSpec, parse

            text = self.read_text(RESOLVED_SPEC)
            spec = parse(JobSpec, yaml.safe_load(text), f"run {self.run_id} ({RESOLVED_SPEC})")
            resolution = spec.data.resolution
            example = np.zeros((1, 3, resolution, resolution), dtype=np.float32)  # as submit.input_example
            self._epoch_model_inputs = (spec.model.model_dump(), example, self._metadata_on_this_node(text))
        return self._epoch_model_inputs

    def _metadata_on_this_node(self, resolved_spec_text: str) -> dict:
        """The model card; on a node without the driver's .beton files, from this node's copy of them
        (object storage: the worker fetched the train set by its hash)."""
        import yaml

        from resplat.errors import DataError
        from resplat.storage import node_cache_dir
        from resplat.tracking.model_card import model_metadata

        try:
            return model_metadata(resolved_spec_text)
        except DataError:
            resolved = yaml.safe_load(resolved_spec_text)
            resolved["data"]["train"] = str(node_cache_dir() / f"{self.tags[TRAIN_SHA256_TAG]}.beton")
            return model_metadata(yaml.safe_dump(resolved))

    def _log_torch_model(self, model, input_example, metadata: dict, *, name: str, step: int = 0,
                         tags: dict[str, str] | None = None) -> str:
        import tempfile

        import mlflow
        import mlflow.pytorch

        from resplat.tracking.model_card import bundle_model_code, model_requirements

        # run_id, not mlflow.start_run: leaving start_run's block would mark the run FINISHED mid-training.
        # Without an active run MLflow puts the LoggedModel in the current experiment, not the run's.
        with (_environment(MLFLOW_EXPERIMENT_ID=self.experiment_id, MLFLOW_EXPERIMENT_NAME=None),
              fluent_tracking_uri(self.tracking_uri), tempfile.TemporaryDirectory() as folder):
            info = mlflow.pytorch.log_model(
                model, name=name, input_example=input_example, serialization_format="pickle",
                code_paths=[str(bundle_model_code(Path(folder)))], metadata=metadata, step=step, tags=tags,
                run_id=self.run_id, pip_requirements=model_requirements(),
            )
        return info.model_uri

    def register(self, model_uri: str, name: str) -> str:
        """Register the model under `name`; return the new version."""
        from resplat.tracking.registry import register

        return register(self.tracking_uri, model_uri, name)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def ui_hint(self) -> str:
        return f"resplat ui, then open #/experiments/{self.experiment_id}/runs/{self.run_id}"

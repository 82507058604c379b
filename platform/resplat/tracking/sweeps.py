"""Reading sweeps from the MLflow store: the parent run, its trial runs and their per-epoch metrics.

A sweep (recorded by `resplat tune`) is a parent MLflow run tagged `resplat.kind=sweep`
whose trials are child runs (tag `mlflow.parentRunId`). Every search here pages to the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from resplat.errors import InputError, ResplatError
from resplat.paper import PaperResult, paper_result
from resplat.tracking.client import open_store
from resplat.tracking.names import (
    DEPTH_PARAM,
    FAMILY_PARAM,
    KIND_SWEEP,
    KIND_TAG,
    LR_PARAM,
    METRIC_TAG,
    MODE_TAG,
    PARENT_TAG,
    SHORTCUT_PARAM,
    SWEEP_TAG,
    TRAIN_TOP1_METRIC,
    TRIAL_STATUS_TAG,
    TRIAL_TAG,
    VAL_TOP1_METRIC,
    VAL_TOP5_METRIC,
)

CURVE_METRICS = [TRAIN_TOP1_METRIC, VAL_TOP1_METRIC, VAL_TOP5_METRIC]
MAX_LISTED_SWEEPS = 10


@dataclass
class Trial:
    run_id: str
    trial_id: str
    family: str
    depth: int | None
    shortcut: str
    lr: str
    status: str
    histories: dict[str, dict[int, float]]  # metric -> {epoch: value}

    @property
    def is_plain(self) -> bool:
        return self.shortcut == "none"

    @property
    def label(self) -> str:
        depth = "?" if self.depth is None else str(self.depth)
        return f"plain-{depth}" if self.is_plain else f"ResNet-{depth} ({self.shortcut})"

    @property
    def epochs_run(self) -> int:
        return max((max(h) for h in self.histories.values() if h), default=0)

    def final(self, metric: str) -> float | None:
        """The metric's value at the last epoch it was logged, or None."""
        history = self.histories.get(metric)
        return history[max(history)] if history else None

    def final_error_percent(self, accuracy_metric: str) -> float | None:
        accuracy = self.final(accuracy_metric)
        return None if accuracy is None else 100.0 * (1.0 - accuracy)

    def error_curve(self, accuracy_metric: str) -> tuple[list[int], list[float]]:
        history = self.histories.get(accuracy_metric, {})
        epochs = sorted(history)
        return epochs, [100.0 * (1.0 - history[e]) for e in epochs]

    def paper(self) -> PaperResult | None:
        return None if self.depth is None else paper_result(self.family, self.depth, self.shortcut)


@dataclass
class Sweep:
    run_id: str
    name: str
    experiment_id: str
    metric: str
    mode: str
    start_ms: int | None
    end_ms: int | None
    status: str
    tracking_uri: str
    trials: list[Trial]

    def ranked_trials(self) -> list[Trial]:
        """Best first by the sweep metric's final value; trials without it last."""
        sign = -1.0 if self.mode == "max" else 1.0
        return sorted(self.trials, key=lambda t: (t.final(self.metric) is None,
                                                  sign * (t.final(self.metric) or 0.0), t.trial_id))


# ---------------------------------------------------------------- paging


def all_pages(fetch: Callable[[str | None], list]) -> Iterator:
    """Every item of a paged MLflow search; `fetch(page_token)` returns one page."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def _runs_tagged(client, experiment_ids: list[str], tag: str, value: str) -> list:
    return list(all_pages(lambda token: client.search_runs(
        experiment_ids, filter_string=f"tags.`{tag}` = '{value}'", page_token=token)))


# ---------------------------------------------------------------- sweeps and their children


def sweep_parent_runs(client) -> list:
    """Every sweep parent run in every active experiment, newest first."""
    experiment_ids = [e.experiment_id for e in all_pages(
        lambda token: client.search_experiments(page_token=token))]
    if not experiment_ids:
        return []
    runs = _runs_tagged(client, experiment_ids, KIND_TAG, KIND_SWEEP)
    return sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)


def sweep_name(run) -> str:
    return run.data.tags.get(SWEEP_TAG) or run.info.run_name or run.info.run_id


def find_sweep_run(client, sweep: str, tracking_uri: str):
    """The parent run with this run id, else the newest one with this sweep name."""
    parents = sweep_parent_runs(client)
    for run in parents:
        if run.info.run_id == sweep:
            return run
    for run in parents:
        if sweep_name(run) == sweep:
            return run
    raise InputError(_unknown_sweep_message(sweep, parents, tracking_uri))


def find_sweep(tracking_uri: str, sweep: str):
    """The sweep's parent run (by run id or name) in an existing store; InputError when there is none."""
    return find_sweep_run(open_store(tracking_uri), sweep, tracking_uri)


def _unknown_sweep_message(sweep: str, parents: list, tracking_uri: str) -> str:
    names = list(dict.fromkeys(sweep_name(run) for run in parents))
    if not names:
        return (f"no sweep {sweep!r}: no sweeps are recorded in {tracking_uri} "
                "(run `resplat tune` first)")
    listed = ", ".join(names[:MAX_LISTED_SWEEPS])
    more = f" and {len(names) - MAX_LISTED_SWEEPS} more" if len(names) > MAX_LISTED_SWEEPS else ""
    return f"no sweep named (or with run id) {sweep!r}; sweeps in {tracking_uri}: {listed}{more}"


def _children_of(client, experiment_id: str, parent_run_id: str) -> list:
    return _runs_tagged(client, [experiment_id], PARENT_TAG, parent_run_id)


def child_runs(tracking_uri: str, parent_run_id: str) -> list:
    """Every child run of `parent_run_id` (all pages), in its experiment."""
    from resplat.tracking.client import client_for

    client = client_for(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return _children_of(client, experiment_id, parent_run_id)


def find_child(tracking_uri: str, parent_run_id: str, trial_id: str):
    """The child run recording trial `trial_id`, or None."""
    return next((r for r in child_runs(tracking_uri, parent_run_id)
                 if r.data.tags.get(TRIAL_TAG) == trial_id), None)


# ---------------------------------------------------------------- a sweep as a record


def _metric_history(client, run_id: str, metric: str) -> dict[int, float]:
    """epoch -> value; if an epoch was logged twice the later value wins."""
    latest: dict[int, tuple[int, float]] = {}
    for point in client.get_metric_history(run_id, metric):
        if point.step not in latest or point.timestamp >= latest[point.step][0]:
            latest[point.step] = (point.timestamp, point.value)
    return {step: value for step, (_, value) in latest.items()}


def _parse_depth(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _trial_from_run(client, run, metrics: list[str]) -> Trial:
    params, tags = run.data.params, run.data.tags
    logged = [m for m in metrics if m in run.data.metrics]
    return Trial(
        run_id=run.info.run_id,
        trial_id=tags.get(TRIAL_TAG) or run.info.run_name or run.info.run_id[:8],
        family=params.get(FAMILY_PARAM, "?"),
        depth=_parse_depth(params.get(DEPTH_PARAM)),
        shortcut=params.get(SHORTCUT_PARAM, "?"),
        lr=params.get(LR_PARAM, "?"),
        status=tags.get(TRIAL_STATUS_TAG) or run.info.status.lower(),
        histories={m: _metric_history(client, run.info.run_id, m) for m in logged},
    )


def _sweep_from_parent(client, parent, tracking_uri: str) -> Sweep:
    tags = parent.data.tags
    metric = tags.get(METRIC_TAG) or VAL_TOP1_METRIC
    mode = tags.get(MODE_TAG) if tags.get(MODE_TAG) in ("max", "min") else "max"
    children = _children_of(client, parent.info.experiment_id, parent.info.run_id)
    wanted = list(dict.fromkeys([*CURVE_METRICS, metric]))
    return Sweep(
        run_id=parent.info.run_id,
        name=sweep_name(parent),
        experiment_id=parent.info.experiment_id,
        metric=metric,
        mode=mode,
        start_ms=parent.info.start_time,
        end_ms=parent.info.end_time,
        status=parent.info.status.lower(),
        tracking_uri=tracking_uri,
        trials=[_trial_from_run(client, run, wanted) for run in children],
    )


def load_sweep(tracking_uri: str, sweep: str) -> Sweep:
    """Read a sweep and its trials (with per-epoch metrics) from the MLflow store."""
    client = open_store(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        parent = find_sweep_run(client, sweep, tracking_uri)
        record = _sweep_from_parent(client, parent, tracking_uri)
    except MlflowException as e:
        raise ResplatError(f"cannot read the MLflow store {tracking_uri}: {e.message}") from e
    if not record.trials:
        raise InputError(f"sweep {record.name!r} (run {record.run_id}) has no trial runs yet; "
                         "nothing to report")
    return record

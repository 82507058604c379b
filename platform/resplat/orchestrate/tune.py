"""`resplat tune`: a Ray Tune sweep whose trials are resplat jobs, tracked as nested MLflow runs.

The sweep is one MLflow parent run (tags `resplat.kind=sweep`, `resplat.sweep`, metric, mode);
each trial is a child run (tag `mlflow.parentRunId`) that reports every epoch to Tune, so a
scheduler (ASHA) can stop weak trials. A one-worker trial trains in Tune's trial process itself
(`train_in_trial`); a trial of several workers fits its own TorchTrainer (`run_training` with
Tune's report callback), the Ray Train V2 way.
At the end the best finished trial's model is logged, registered, and made `champion` when
it beats the current champion.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from resplat.errors import InputError, Interrupted, RunError
from resplat.orchestrate.metrics import TRIAL_STATES, SweepMetrics
from resplat.spec import flatten, to_yaml
from resplat.storage import join, remove_tree, tune_storage_path
from resplat.sweep import LoadedSweep, validate_trial
from resplat.tracking import TrackedRun, tracking_uri_for
from resplat.tracking.names import (
    BASE_JOB_ARTIFACT,
    BEST_RUN_TAG,
    BEST_TRIAL_TAG,
    JOB_TAG,
    KIND_SWEEP,
    KIND_TAG,
    METRIC_TAG,
    MODE_TAG,
    PARENT_TAG,
    RESOLVED_SPEC,
    RESULTS_CSV,
    RESULTS_TXT,
    SCHEDULER_TAG,
    SPACE_ARTIFACT,
    SWEEP_TAG,
    TRIAL_STATUS_TAG,
    TRIAL_TAG,
    WALL_SECONDS_METRIC,
    sweep_count_tag,
)
from resplat.tracking.sweeps import child_runs, find_child


@dataclass
class TrialView:
    """One trial as the live display shows it."""

    trial_id: str
    params: dict[str, Any]
    status: str = "pending"
    epoch: int = 0
    metric: float | None = None
    final: bool = False  # the last result was the trial's last epoch


@dataclass
class TrialOutcome:
    trial_id: str
    run_id: str | None
    params: dict[str, Any]
    status: str  # finished, stopped_early, failed
    epochs: int
    metric: float | None
    checkpoint: object | None = None  # the trial's latest checkpoint (Ray Train's or Tune's)
    error: str | None = None


@dataclass
class SweepResult:
    name: str
    parent_run_id: str
    metric: str
    mode: str
    trials: list[TrialOutcome]  # best first
    wall_seconds: float
    ui_hint: str
    best: TrialOutcome | None = None
    model_uri: str | None = None
    registered_as: str | None = None
    registered_version: str | None = None
    champion_moved: bool = False
    previous_champion: dict = field(default_factory=dict)


SweepUpdate = Callable[[list[TrialView]], None]
# The display's trial states as the sweeps dashboard counts them.
GAUGE_STATE = {"stopped early": "stopped", "failed": "errored"}


def tune_dir(sweep_name: str, storage_uri: str | None = None) -> str:
    """Where Tune keeps the sweep's state and its in-place trials' checkpoints: beside the base job's
    Ray Train results (`storage.uri`, default RESPLAT_HOME), so every node of a cluster reaches them."""
    return join(tune_storage_path(storage_uri), sweep_name)


def trains_in_place(spec) -> bool:
    """A trial of one worker trains in its Tune trial process; more workers need a worker group."""
    return spec.scaling.max_workers == 1


def trial_resources(spec) -> dict[str, float]:
    """The bundle a trial's own process reserves."""
    if trains_in_place(spec):
        return {"CPU": spec.scaling.cpus_per_worker, **({"GPU": 1} if spec.scaling.use_gpu else {})}
    # The trial only drives a TorchTrainer whose workers reserve the CPUs.
    return {"CPU": 0, "memory": 1}  # a non-empty bundle Tune accepts; the bytes are nominal


# ---------------------------------------------------------------- the trainable (runs in a trial actor)


def make_trainable(base_raw: dict, *, sweep_name: str, tracking_uri: str, experiment: str, parent_run_id: str,
                   data_sources: dict[str, tuple[str, str]] | None = None):
    """The function Tune runs per trial: apply the sampled values, train, track as a child run.
    `data_sources`: the .beton files in object storage, which a trial copies to its node."""

    def trial(config: dict) -> None:
        from ray import tune

        trial_id = tune.get_context().get_trial_id()
        spec = validate_trial(base_raw, config, f"trial {trial_id}")
        child = _child_run(tracking_uri, experiment, parent_run_id, trial_id, spec)
        # A failure (or a stop by the scheduler, which can surface here as one) leaves the run to the
        # driver: it settles every child from Tune's view of the trial once the sweep ends.
        if trains_in_place(spec):
            from resplat.orchestrate.worker import on_this_node, train_in_trial

            train_in_trial(on_this_node(spec, data_sources), run=child, trial_id=trial_id)
            finished = True  # a trial the scheduler stops never returns from its last report
        else:
            from ray.tune.integration.ray_train import TuneReportCallback

            from resplat.orchestrate.trainer import run_training

            outcome = run_training(spec, run=child, run_name=f"{sweep_name}-{parent_run_id[:8]}-{trial_id}",
                                   callbacks=[TuneReportCallback()], trial_id=trial_id, data_sources=data_sources)
            # A trial the scheduler stops may also end here normally, after its last report.
            finished = bool(outcome.metrics.get("final"))
        child.set_tags({TRIAL_STATUS_TAG: "finished" if finished else "stopped_early"})
        child.end("FINISHED" if finished else "KILLED")

    return trial


def _child_run(tracking_uri: str, experiment: str, parent_run_id: str, trial_id: str, spec) -> TrackedRun:
    """The trial's MLflow run: reopened when a resumed sweep restarts the trial, else created."""
    existing = find_child(tracking_uri, parent_run_id, trial_id)
    if existing is not None:
        run = TrackedRun(tracking_uri, existing.info.run_id)
        run.reopen()
        return run
    return TrackedRun.create(
        tracking_uri, experiment, run_name=trial_id, params=flatten(spec),
        texts={RESOLVED_SPEC: to_yaml(spec)},
        tags={PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, TRIAL_STATUS_TAG: "running",
              JOB_TAG: spec.name},
    )


# ---------------------------------------------------------------- live progress (driver side)


class TrialProgress(Callback):
    """Keeps one TrialView per trial from Tune's driver-side events and hands them to `on_update`."""

    def __init__(self, metric: str, on_update: SweepUpdate, sweep_name: str):
        self.metric = metric
        self.on_update = on_update
        self.views: dict[str, TrialView] = {}
        self.gauge = SweepMetrics(sweep_name)  # the sweeps dashboard's trial states

    def __getstate__(self) -> dict:
        # Tune pickles its run config into the sweep's storage; a live display cannot be pickled.
        return {"metric": self.metric, "on_update": None, "views": {}, "gauge": None}

    def _view(self, trial) -> TrialView:
        if trial.trial_id not in self.views:
            self.views[trial.trial_id] = TrialView(trial.trial_id, dict(trial.config))
        return self.views[trial.trial_id]

    def _publish(self) -> None:
        if self.gauge is not None:
            states = [GAUGE_STATE.get(view.status, view.status) for view in self.views.values()]
            self.gauge.set_counts({state: states.count(state) for state in set(states) if state in TRIAL_STATES})
        if self.on_update is not None:
            self.on_update(list(self.views.values()))

    def on_trial_start(self, iteration, trials, trial, **info):
        for other in trials:
            self._view(other)
        self._view(trial).status = "running"
        self._publish()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        view = self._view(trial)
        view.epoch = int(result.get("epoch", view.epoch))
        view.metric = result.get(self.metric, view.metric)
        view.final = bool(result.get("final"))
        self._publish()

    def on_trial_complete(self, iteration, trials, trial, **info):
        view = self._view(trial)
        view.status = "finished" if view.final else "stopped early"
        self._publish()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._view(trial).status = "failed"
        self._publish()


# ---------------------------------------------------------------- the sweep (driver side)


def run_sweep(
    sweep: LoadedSweep,
    *,
    address: str | None = None,
    verbose: bool = False,
    on_update: SweepUpdate | None = None,
    resume: str | None = None,
    progress=None,
    on_parent: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run (or with `resume`, continue) the sweep to the end; rank the trials; promote the best."""
    from resplat.orchestrate.runtime import start_ray
    from resplat.orchestrate.submit import check_runnable, prepare_data, publish_data

    started = time.perf_counter()
    space, base = sweep.space, sweep.base_spec
    uri = tracking_uri_for(base.tracking)
    storage = tune_dir(space.name, base.storage.uri)
    if resume:
        parent = _reopen_parent(uri, resume, space.name, storage)
    check_runnable(base, address=address)
    prepared = prepare_data(base.data, num_classes=base.model.num_classes, progress=progress)
    base_raw = {**sweep.base_raw, "data": {**sweep.base_raw["data"],
                                           "train": str(prepared.data.train), "val": str(prepared.data.val)}}
    sweep = LoadedSweep(space, sweep.source, sweep.text, base.model_copy(update={"data": prepared.data}), base_raw)
    if not resume:
        parent = _create_parent(uri, sweep)
        remove_tree(storage)  # a new sweep of this name replaces the old resumable state
    if on_parent is not None:
        on_parent(parent.run_id)
    try:
        start_ray(address=address, verbose=verbose)
        results, interrupted = _fit(sweep, parent, uri, storage, resumed=bool(resume), on_update=on_update,
                                    data_sources=publish_data(sweep.base_spec))
        if interrupted:
            _mark_unfinished_children(parent)
            raise Interrupted(f"sweep {space.name} stopped; finished trials are kept. "
                              f"Continue with: resplat tune --space {sweep.source} --resume {space.name}")
        trials = _settle_trials(sweep, parent, results)
        result = SweepResult(name=space.name, parent_run_id=parent.run_id, metric=space.metric, mode=space.mode,
                             trials=trials, wall_seconds=0.0, ui_hint=parent.ui_hint())
        _record_results(parent, result)
        _promote_best(sweep, result, parent)
        result.wall_seconds = time.perf_counter() - started
        parent.log_metrics({WALL_SECONDS_METRIC: result.wall_seconds}, step=0)
    except BaseException as error:
        parent.end("KILLED" if isinstance(error, (KeyboardInterrupt, Interrupted)) else "FAILED")
        raise
    parent.end("FINISHED")
    return result


def _create_parent(uri: str, sweep: LoadedSweep) -> TrackedRun:
    space = sweep.space
    return TrackedRun.create(
        uri, sweep.base_spec.tracking.experiment, run_name=space.name,
        params=flatten(space),
        texts={SPACE_ARTIFACT: sweep.text, BASE_JOB_ARTIFACT: to_yaml(sweep.base_spec)},
        tags={KIND_TAG: KIND_SWEEP, SWEEP_TAG: space.name, METRIC_TAG: space.metric, MODE_TAG: space.mode,
              SCHEDULER_TAG: space.scheduler.kind},
    )


def _reopen_parent(uri: str, sweep_ref: str, sweep_name: str, storage: str) -> TrackedRun:
    """The unfinished sweep `--resume` names (its name or parent run id), checked before anything starts."""
    from ray.tune import Tuner

    from resplat.tracking.sweeps import find_sweep

    found = find_sweep(uri, sweep_ref)
    if found.data.tags.get(SWEEP_TAG) != sweep_name:
        raise InputError(f"--resume {sweep_ref}: that is sweep {found.data.tags.get(SWEEP_TAG)!r}, "
                         f"but --space is sweep {sweep_name!r}")
    if found.info.status == "FINISHED":
        raise InputError(f"--resume {sweep_ref}: that sweep already finished; run it again without --resume")
    if not Tuner.can_restore(storage):
        raise InputError(f"--resume {sweep_ref}: no resumable Tune state in {storage}")
    parent = TrackedRun(uri, found.info.run_id)
    parent.reopen()
    return parent


def _fit(sweep: LoadedSweep, parent: TrackedRun, uri: str, storage: str, *, resumed: bool, on_update,
         data_sources: dict[str, tuple[str, str]] | None):
    from ray import tune

    base = sweep.base_spec
    trainable = tune.with_resources(
        make_trainable(sweep.base_raw, sweep_name=sweep.space.name, tracking_uri=uri,
                       experiment=base.tracking.experiment, parent_run_id=parent.run_id, data_sources=data_sources),
        lambda config: tune.PlacementGroupFactory(
            [trial_resources(validate_trial(sweep.base_raw, config, "a trial's resources"))]),
    )
    callbacks = [TrialProgress(sweep.space.metric, on_update, sweep.space.name)]
    if resumed:
        tuner = tune.Tuner.restore(storage, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
        # The run config (callbacks included) is restored from storage; attach this process's display.
        tuner._local_tuner._run_config.callbacks = callbacks
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=sweep.space.tune_param_space(),
            tune_config=tune.TuneConfig(
                metric=sweep.space.metric, mode=sweep.space.mode, num_samples=sweep.space.samples,
                max_concurrent_trials=sweep.space.max_concurrent, scheduler=_scheduler(sweep),
                # An in-place trial's process goes on to the next trial: its imports (torch, FFCV,
                # MLflow) and compiled loader stages are paid once per process, not once per trial.
                reuse_actors=trains_in_place(base),
            ),
            run_config=tune.RunConfig(
                name=sweep.space.name, storage_path=tune_storage_path(base.storage.uri), callbacks=callbacks,
                verbose=0,
                # What in-place trials keep and how often Tune restarts one; a TorchTrainer trial
                # applies the job's own settings to its worker group instead.
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=base.checkpoint.keep,
                    checkpoint_score_attribute="val_top1" if base.checkpoint.keep_by == "best" else None,
                    checkpoint_score_order="max",
                ),
                failure_config=tune.FailureConfig(
                    max_failures=base.failure.max_failures if trains_in_place(base) else 0),
            ),
        )
    return _fit_noticing_ctrl_c(tuner)


def _fit_noticing_ctrl_c(tuner):
    """`tuner.fit()`, and whether Ctrl-C cut it short.

    Tune's graceful stop (SIGUSR1: stop the trials, save the sweep's state for a restore) returns
    from fit() like a finished sweep. So Ctrl-C is caught here, remembered, and passed on as that
    stop; a second Ctrl-C stops at once.
    """
    from resplat.orchestrate.runtime import ctrl_c_as_flag

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    with ctrl_c_as_flag(on_first=lambda: os.kill(os.getpid(), signal.SIGUSR1)) as interrupted:
        results = tuner.fit()
    return results, interrupted.is_set()


def _scheduler(sweep: LoadedSweep):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    options = sweep.space.scheduler
    if options.kind == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", max_t=sweep.space.max_epochs(sweep.base_spec),
                         grace_period=options.grace_period, reduction_factor=options.reduction_factor)


# ---------------------------------------------------------------- after the trials


def _settle_trials(sweep: LoadedSweep, parent: TrackedRun, results) -> list[TrialOutcome]:
    """Every trial's outcome, best first; children a scheduler stopped are marked stopped_early."""
    children = {r.data.tags.get(TRIAL_TAG): r for r in child_runs(parent.tracking_uri, parent.run_id)}
    outcomes = [_outcome(sweep, result, children) for result in results]
    for outcome in outcomes:
        _settle_child(parent.tracking_uri, outcome, children.get(outcome.trial_id))
    return rank(outcomes, sweep.space.mode)


def _outcome(sweep: LoadedSweep, result, children: dict) -> TrialOutcome:
    """A trial as Tune saw it: failed (an error), finished (its last report was its last epoch), or
    stopped early by the scheduler."""
    metrics = result.metrics or {}
    trial_id = metrics.get("trial_id") or Path(result.path).name
    child = children.get(trial_id)
    if result.error is not None:
        status = "failed"
    else:
        status = "finished" if metrics.get("final") else "stopped_early"
    return TrialOutcome(
        trial_id=trial_id, run_id=child.info.run_id if child else None, params=dict(result.config),
        status=status, epochs=int(metrics.get("epoch", 0)), metric=metrics.get(sweep.space.metric),
        checkpoint=_checkpoint(result),
        error=None if result.error is None else str(result.error).strip().splitlines()[-1:][0][:300],
    )


def _checkpoint(result):
    """An in-place trial's checkpoints are Tune's; a TorchTrainer trial's reach Tune as a path."""
    if result.checkpoint is not None:
        return result.checkpoint
    path = (result.metrics or {}).get("checkpoint_path")
    if path is None:
        return None
    from ray.train import Checkpoint

    return Checkpoint(path)


def _settle_child(tracking_uri: str, outcome: TrialOutcome, child) -> None:
    """Make the child run say what Tune saw. Trials the scheduler kills (ASHA stops even a trial at
    its last epoch) or that fail never end their own run, or end it with the wrong status."""
    if child is None:
        return
    status = {"finished": "FINISHED", "failed": "FAILED"}.get(outcome.status, "KILLED")
    run = TrackedRun(tracking_uri, child.info.run_id)
    if child.data.tags.get(TRIAL_STATUS_TAG) != outcome.status:
        run.set_tags({TRIAL_STATUS_TAG: outcome.status})
    if child.info.status != status:
        run.end(status)


def _mark_unfinished_children(parent: TrackedRun) -> None:
    """Trials cut off by an interruption: KILLED until `--resume` reopens them."""
    for child in child_runs(parent.tracking_uri, parent.run_id):
        if child.info.status == "RUNNING":
            run = TrackedRun(parent.tracking_uri, child.info.run_id)
            run.set_tags({TRIAL_STATUS_TAG: "interrupted"})
            run.end("KILLED")


def rank(trials: list[TrialOutcome], mode: str) -> list[TrialOutcome]:
    """Best first by the sweep metric; trials without it last."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(trials, key=lambda t: (t.metric is None, sign * (t.metric or 0.0), t.trial_id))


def results_csv(result: SweepResult) -> str:
    params = sorted({key for trial in result.trials for key in trial.params})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "trial", *params, "status", "epochs", result.metric, "run_id"])
    for i, t in enumerate(result.trials, 1):
        writer.writerow([i, t.trial_id, *(t.params.get(p, "") for p in params), t.status, t.epochs,
                         "" if t.metric is None else f"{t.metric:.6g}", t.run_id or ""])
    return out.getvalue()


def results_text(result: SweepResult) -> str:
    lines = [f"sweep {result.name}: {len(result.trials)} trials ranked by {result.metric} ({result.mode})"]
    for i, t in enumerate(result.trials, 1):
        params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
        value = "-" if t.metric is None else f"{t.metric:.4f}"
        lines.append(f"{i:>3}. {t.trial_id}  {params}  {t.status}  epochs {t.epochs}  {result.metric} {value}")
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _record_results(parent: TrackedRun, result: SweepResult) -> None:
    parent.log_text(results_csv(result), RESULTS_CSV)
    parent.log_text(results_text(result), RESULTS_TXT)
    counts = {s: sum(t.status == s for t in result.trials) for s in ("finished", "stopped_early", "failed")}
    parent.set_tags({sweep_count_tag(s): str(n) for s, n in counts.items()})


def _promote_best(sweep: LoadedSweep, result: SweepResult, parent: TrackedRun) -> None:
    """Log and register the best finished trial's model; move `champion` to it if it is better."""
    best = next((t for t in result.trials if t.status == "finished" and t.checkpoint and t.run_id), None)
    if best is None:
        if not any(t.status == "finished" for t in result.trials):
            raise RunError(f"sweep {result.name}: no trial finished "
                           f"({', '.join(f'{t.trial_id}: {t.error or t.status}' for t in result.trials)})")
        return
    from resplat.orchestrate.submit import final_model, input_example
    from resplat.orchestrate.worker import load_state
    from resplat.tracking.registry import maybe_move_champion

    result.best = best
    parent.set_tags({BEST_TRIAL_TAG: best.trial_id, BEST_RUN_TAG: best.run_id})
    spec = validate_trial(sweep.base_raw, best.params, best.trial_id)
    state = load_state(best.checkpoint)
    child = TrackedRun(parent.tracking_uri, best.run_id)
    result.model_uri = child.log_model(final_model(spec, state), input_example(spec))
    result.registered_as = sweep.base_spec.tracking.register_as or sweep.space.name
    result.registered_version = child.register(result.model_uri, result.registered_as)
    result.previous_champion, result.champion_moved = maybe_move_champion(
        child.tracking_uri, result.registered_as, result.registered_version, result.metric, result.mode, best.metric)


__all__ = ["SweepResult", "TrialOutcome", "TrialView", "make_trainable", "rank", "run_sweep", "tune_dir"]

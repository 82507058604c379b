"""`resplat submit`: prepare the data, open the MLflow run, train under Ray, log the model.

Every input check runs before anything is started or written: a bad spec, missing
data or a job too big for this machine fails with an InputError and no side effects.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from resplat import paths
from resplat.data import (
    BetonInfo,
    WriteOptions,
    cached_beton,
    count_images,
    read_beton_info,
    train_batches_per_epoch,
)
from resplat.errors import DataError, InputError, Interrupted
from resplat.spec import DataSpec, JobSpec, flatten, to_yaml
from resplat.tracking.names import (
    JOB_TAG,
    LAST_CHECKPOINT_EPOCH_TAG,
    MODEL_URI_TAG,
    RESOLVED_SPEC,
    SUBMITTED_SPEC,
    TRAIN_SHA256_TAG,
    VAL_SHA256_TAG,
    WALL_SECONDS_METRIC,
    WORKER_GROUP_RESTARTS_TAG,
)
from resplat.train.schedule import plan_steps

ProgressFactory = Callable[[str], Callable[[int, int], None]]


def timing(event: str, **fields) -> None:
    """With RESPLAT_TIMING=1, one JSON line per start-up phase on stderr (bench/first_step.py reads them)."""
    if os.environ.get("RESPLAT_TIMING"):
        print(json.dumps({"resplat_timing": event, "t": time.time(), **fields}), file=sys.stderr, flush=True)


@dataclass
class PreparedData:
    data: DataSpec  # with .beton sources
    train: BetonInfo
    val: BetonInfo


@dataclass
class JobResult:
    run_id: str
    metrics: dict[str, float]
    wall_seconds: float
    ui_hint: str
    model_uri: str
    registered_version: str | None = None
    epochs: list[dict] = field(default_factory=list)
    restarts: int = 0


def _options(data: DataSpec) -> WriteOptions:
    p = data.prepare
    return WriteOptions(
        max_resolution=p.max_resolution,
        storage=p.storage,
        jpeg_quality=p.jpeg_quality,
        compress_probability=p.compress_probability,
    )


def prepare_data(data: DataSpec, *, num_classes: int, progress: ProgressFactory | None = None) -> PreparedData:
    """Turn folder sources into cached .beton files (once); check classes agree with the model."""
    timing("data")

    def source(path: Path, label: str, classes=None) -> BetonInfo:
        if path.suffix == ".beton":
            return read_beton_info(path)
        return cached_beton(
            path, paths.beton_cache_dir(), _options(data), classes=classes,
            progress=progress(f"preparing {label} ({path.name})") if progress else None,
        )

    train = source(data.train, "data.train")
    val = source(data.val, "data.val", classes=train.classes)
    if tuple(val.classes) != tuple(train.classes):
        raise DataError(
            f"data.val ({data.val}) has classes {list(val.classes)} but data.train has {list(train.classes)}"
        )
    if len(train.classes) != num_classes:
        raise DataError(
            f"data.train ({data.train}) has {len(train.classes)} classes but model.num_classes is "
            f"{num_classes}; set model.num_classes: {len(train.classes)}"
        )
    timing("data_ready")
    return PreparedData(data=data.model_copy(update={"train": train.path, "val": val.path}), train=train, val=val)


def plan(spec: JobSpec) -> dict[str, str]:
    """What a submit of `spec` would do, for --dry-run."""
    s = spec.scaling
    warmup = spec.schedule.warmup
    warmup_text = (f", {spec.schedule.warmup_shape} warmup over {warmup:g} {spec.schedule.unit} from "
                   f"{spec.effective_lr * spec.schedule.warmup_start:g}" if warmup else "")
    low, high = s.min_workers, s.max_workers
    follows = ", following the workers" if s.elastic else ""
    return {
        "job": spec.name,
        "model": f"{spec.model.family} ResNet-{spec.model.depth}, shortcut {spec.model.shortcut}, "
        f"{spec.model.num_classes} classes",
        "workers": f"{s.describe_workers()} x ({s.cpus_per_worker} CPU{', 1 GPU' if s.use_gpu else ''}), "
        f"placement {s.placement}" + (f"; starts with the workers that fit (at least {low}), looks for room "
                                      f"to grow to {high} every {s.resize_check_seconds:g} s" if s.elastic else ""),
        "batch": f"{spec.optim.batch_size} per worker, "
        f"{_span(spec.global_batch_size(low), spec.global_batch_size(high))} global{follows}",
        "lr": _span(spec.peak_lr(low), spec.peak_lr(high)) + (follows if spec.peak_lr(low) != spec.peak_lr(high) else "")
        + f" ({spec.schedule.kind} schedule{warmup_text})",
        "length": f"{spec.schedule.epochs} epochs" + (f", at most {spec.schedule.max_steps} steps"
                                                      if spec.schedule.max_steps else ""),
        "steps": _steps(spec),
        "data": f"train {spec.data.train}, val {spec.data.val} ({spec.data.pipeline} pipeline, "
        f"{spec.data.resolution} px)",
        "memory": f"~{_memory_gib(spec):.1f} GiB per worker {'GPU' if s.use_gpu else 'process'} "
        f"(estimate: weights, gradients, momentum, activations at {s.precision})",
    }


def _span(low: float, high: float) -> str:
    """"0.1", or "0.1..0.4" for what an elastic job's size changes."""
    return f"{low:g}" if low == high else f"{low:g}..{high:g}"


def _steps(spec: JobSpec) -> str:
    try:
        images = count_images(spec.data.train)
    except DataError as error:  # the plan still shows the rest; a submit would stop on this
        return f"unknown: {error}"
    s = spec.scaling
    per_epoch, total = [], []
    for workers in dict.fromkeys((s.min_workers, s.max_workers)):
        steps = train_batches_per_epoch(images, workers, spec.optim.batch_size)
        if steps == 0:
            return (f"none: {images:,} train images give each of {workers} workers "
                    f"less than one batch of {spec.optim.batch_size}")
        per_epoch.append(f"{steps:,}")
        total.append(f"{plan_steps(spec.schedule, steps).total_steps:,}")
    if not s.elastic:
        return f"{per_epoch[0]} per epoch ({images:,} train images), {total[0]} in all"
    return (f"{'..'.join(per_epoch)} per epoch with {s.min_workers}..{s.max_workers} workers ({images:,} train "
            f"images), {'..'.join(total)} in all at one size")


def _memory_gib(spec: JobSpec) -> float:
    from resplat.models import resnet
    from resplat.models.memory import estimate_training_bytes

    model = resnet(**spec.model.model_dump())
    return estimate_training_bytes(
        model, batch_size=spec.optim.batch_size, resolution=spec.data.resolution, precision=spec.scaling.precision
    ) / 2**30


def problems_before_start(spec: JobSpec, *, local: bool) -> list[str]:
    """Everything that would stop `spec` and costs no conversion, no Ray and no MLflow run:
    this machine's size (local runs), the data's classes against the model, a training set
    smaller than one batch per worker."""
    from resplat.orchestrate.runtime import local_capacity_problems

    problems = local_capacity_problems(spec.scaling) if local else []
    try:
        train_images, train_classes = _source_summary(spec.data.train)
        _, val_classes = _source_summary(spec.data.val)
    except DataError as error:
        return [*problems, str(error)]
    if len(train_classes) != spec.model.num_classes:
        problems.append(f"data.train ({spec.data.train}) has {len(train_classes)} classes but model.num_classes "
                        f"is {spec.model.num_classes}; set model.num_classes: {len(train_classes)}")
    unknown = sorted(set(val_classes) - set(train_classes))
    if unknown:
        problems.append(f"data.val ({spec.data.val}) has classes that data.train lacks: {', '.join(unknown[:5])}")
    most = spec.scaling.max_workers  # an elastic job may grow to them
    if train_batches_per_epoch(train_images, most, spec.optim.batch_size) == 0:
        problems.append(f"data.train ({spec.data.train}) has {train_images:,} images: less than one batch of "
                        f"{spec.optim.batch_size} for each of {most} workers; lower "
                        "optim.batch_size or scaling.num_workers")
    return problems


def _source_summary(source: Path) -> tuple[int, list[str]]:
    """(images, classes) of a .beton (its sidecar) or an image folder (listed, not read)."""
    from resplat.data.image_folder import list_image_folder

    if Path(source).suffix == ".beton":
        info = read_beton_info(source)
        return info.num_images, list(info.classes)
    samples, classes = list_image_folder(Path(source))
    return len(samples), list(classes)


def check_runnable(spec: JobSpec, *, address: str | None) -> None:
    """Raise one InputError listing every problem of `problems_before_start` (local when no address)."""
    from resplat.tracking import tracking_uri_for
    from resplat.tracking.server import check_tracking_reachable

    timing("checks")
    check_tracking_reachable(tracking_uri_for(spec.tracking))
    problems = problems_before_start(spec, local=address is None)
    if problems:
        raise InputError(f"job {spec.name} cannot run:\n" + "\n".join(f"  - {p}" for p in problems))


def submit(
    spec: JobSpec,
    *,
    prepared: PreparedData,
    spec_text: str,
    address: str | None = None,
    verbose: bool = False,
    on_update: Callable[[object, list[dict]], None] | None = None,
    on_run: Callable[[str], None] | None = None,
) -> JobResult:
    """Run `spec` (its data already prepared) to the end; raises ResplatError subclasses.
    `address` None starts a local Ray; "auto" joins the cluster this process runs in."""
    from resplat.tracking import TrackedRun, tracking_uri_for

    spec = spec.model_copy(update={"data": prepared.data})
    started = time.perf_counter()
    timing("mlflow_run")
    run = TrackedRun.create(
        tracking_uri_for(spec.tracking),
        spec.tracking.experiment,
        run_name=spec.name,
        params=flatten(spec),
        texts={SUBMITTED_SPEC: spec_text, RESOLVED_SPEC: to_yaml(spec)},
        tags={
            JOB_TAG: spec.name,
            TRAIN_SHA256_TAG: prepared.train.sha256,
            VAL_SHA256_TAG: prepared.val.sha256,
        },
    )
    if on_run is not None:
        on_run(run.run_id)
    return _train_and_log(spec, run, started=started, address=address, verbose=verbose, on_update=on_update)


def resume(
    run_id: str,
    *,
    tracking_uri: str | None = None,
    expect_job: str | None = None,
    address: str | None = None,
    verbose: bool = False,
    on_update: Callable[[object, list[dict]], None] | None = None,
) -> JobResult:
    """Continue a stopped or failed run from its latest checkpoint, in the same MLflow run."""
    from resplat.spec import JobSpec as Spec
    from resplat.spec import parse
    from resplat.tracking import TrackedRun

    run = TrackedRun.open(tracking_uri or paths.default_tracking_uri(), run_id)
    if run.status == "FINISHED":
        raise InputError(f"--resume {run_id}: that run already finished; submit the job again for a new run")
    spec = parse(Spec, yaml.safe_load(run.read_text(RESOLVED_SPEC)), f"run {run_id} ({RESOLVED_SPEC})")
    if expect_job is not None and spec.name != expect_job:
        raise InputError(f"--resume {run_id}: that run is of job {spec.name!r}, not {expect_job!r}")
    check_runnable(spec, address=address)
    run.reopen()
    return _train_and_log(spec, run, started=time.perf_counter(), address=address, verbose=verbose,
                          on_update=on_update)


def publish_data(spec: JobSpec) -> dict[str, tuple[str, str]] | None:
    """With object storage, the prepared .beton files go there for every node to copy; else None."""
    from resplat.storage import is_object_store, publish

    if not is_object_store(spec.storage.uri):
        return None
    sources = {}
    for split in ("train", "val"):
        info = read_beton_info(getattr(spec.data, split))
        sources[split] = (publish(info.path, info.sha256, spec.storage.uri), info.sha256)
    return sources


def _train_and_log(spec: JobSpec, run, *, started: float, address, verbose, on_update) -> JobResult:
    from resplat.orchestrate.runtime import start_ray
    from resplat.orchestrate.trainer import run_training

    seen: list[dict] = []  # epochs reported so far, for the tag a stopped run gets
    first_step_seen = False

    def update(progress, epochs: list[dict]) -> None:
        nonlocal first_step_seen
        if progress is not None and progress.global_step and not first_step_seen:
            first_step_seen = True  # step_seconds then spans the epoch's start to the first step's end
            timing("first_step", step=progress.step, phase=progress.phase, step_seconds=progress.step_seconds,
                   data_wait_fraction=progress.data_wait_fraction)
        for epoch in epochs[len(seen):]:
            timing("epoch", **epoch)
        seen[:] = epochs
        if on_update is not None:
            on_update(progress, epochs)

    try:
        timing("ray")
        start_ray(address=address, verbose=verbose)
        timing("ray_ready")
        outcome = run_training(spec, run=run, run_name=f"{spec.name}-{run.run_id[:8]}", on_update=update,
                               data_sources=publish_data(spec))
        model_uri = run.log_model(final_model(spec, outcome.final_state), input_example(spec))
        run.set_tags({MODEL_URI_TAG: model_uri})
        version = run.register(model_uri, spec.tracking.register_as) if spec.tracking.register_as else None
        wall = time.perf_counter() - started
        run.log_metrics({WALL_SECONDS_METRIC: wall}, step=outcome.final_state["epoch"])
        run.set_tags({WORKER_GROUP_RESTARTS_TAG: str(outcome.restarts)})
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (Ray's handler exits after ray.init)
        checkpointed = [e["epoch"] for e in seen if e["epoch"] % spec.checkpoint.every_epochs == 0]
        run.set_tags({LAST_CHECKPOINT_EPOCH_TAG: str(max(checkpointed, default=0))})
        run.end("KILLED")
        raise Interrupted(f"run {run.run_id} stopped; its checkpoints are kept. "
                          f"Continue it with: resplat submit JOB.yaml --resume {run.run_id}") from None
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
    return JobResult(
        run_id=run.run_id, metrics=outcome.metrics, wall_seconds=wall, ui_hint=run.ui_hint(),
        model_uri=model_uri, registered_version=version, epochs=outcome.epochs, restarts=outcome.restarts,
    )


def final_model(spec: JobSpec, state: dict):
    from resplat.models import resnet

    model = resnet(**spec.model.model_dump())
    model.load_state_dict(state["model"])
    return model.eval()


def input_example(spec: JobSpec):
    import numpy as np

    return np.zeros((1, 3, spec.data.resolution, spec.data.resolution), dtype=np.float32)


__all__ = ["JobResult", "PreparedData", "check_runnable", "plan", "prepare_data", "resume", "submit"]

"""What trains under Ray: the plain training loop with a Ray-aware reporter, either in each worker
of a Ray Train worker group (`train_loop_per_worker`) or, for a one-worker sweep trial, in Tune's
own trial process (`train_in_trial`)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import torch

from resplat.orchestrate import metrics as m
from resplat.spec import JobSpec
from resplat.tracking import TrackedRun
from resplat.tracking.names import (
    LOST_EPOCHS_METRIC,
    LOST_STEPS_METRIC,
    PREEMPTION_CHECKPOINT_STEP_METRIC,
    PREEMPTIONS_TAG,
    RESIZES_TAG,
    RESTORED_FROM_EPOCH_METRIC,
    RESTORED_FROM_EPOCH_TAG,
    RESTORED_FROM_STEP_METRIC,
    WORLD_SIZE_METRIC,
)
from resplat.train import EpochReport, Progress, StepCheckpoint, train

STATE_FILE = "state.pt"
# ray.train.get_preemption_info() is a collective (rank 0's view, broadcast): every worker must ask
# at the same steps, so it is polled by step count, not by the clock. Ray's own watcher reads the
# drain state every 5 s; a notice gives 30 s (GCP) to 2 min (AWS).
PREEMPTION_POLL_STEPS = 5


def load_state(checkpoint) -> dict:
    """The training state in a checkpoint of Ray Train or Ray Tune."""
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class RaySession:
    """Where a reporter's results and checkpoints go: Ray Train's session, or a Tune trial's."""

    report: Callable[..., None]  # report(metrics, checkpoint=...)
    checkpoint_type: type
    preemption_info: Callable[[], object]  # None, or a notice with preempted_node_ids and deadline_ms


TRAIN_SESSION = RaySession(ray.train.report, ray.train.Checkpoint, ray.train.get_preemption_info)


def tune_session() -> RaySession:
    from ray import tune

    # A trial has no view of a node's drain: a preempted trial restarts from its latest checkpoint.
    return RaySession(tune.report, tune.Checkpoint, lambda: None)


class RayReporter:
    """Reports to Ray (metrics + checkpoints, through `session`), Ray's Prometheus metrics, the
    driver's progress board (rank 0, when there is one) and MLflow (rank 0)."""

    def __init__(self, rank: int, board, run: TrackedRun | None, gauges: m.TrainMetrics, *, use_gpu: bool,
                 session: RaySession = TRAIN_SESSION):
        self.rank = rank
        self.board = board
        self.run = run
        self.gauges = gauges
        self.use_gpu = use_gpu
        self.session = session
        self.answered_notice = None  # the preemption notice a checkpoint has already answered

    def progress(self, update: Progress) -> None:
        if self.rank == 0 and self.board is not None:
            self.board.post.remote(update)
        g = self.gauges
        g.set(m.EPOCH, update.epoch)
        g.set(m.STEP, update.global_step)
        g.set(m.LEARNING_RATE, update.lr)
        g.set(m.IMAGES_PER_SECOND, update.worker_images_per_sec)
        if update.phase == "train":
            g.set(m.LOSS, update.loss)
            g.set(m.STEP_SECONDS, update.step_seconds)
            g.set(m.DATA_WAIT_RATIO, update.data_wait_fraction)
        if self.use_gpu:
            g.set(m.GPU_MEMORY_BYTES, torch.cuda.memory_allocated())

    def epoch_end(self, report: EpochReport) -> None:
        metrics = {**report.metrics, "epoch": report.epoch, "global_step": report.global_step,
                   "final": report.final}
        for metric, key in ((m.VAL_TOP1, "val_top1"), (m.VAL_TOP5, "val_top5"), (m.VAL_LOSS, "val_loss")):
            if key in report.metrics:
                self.gauges.set(metric, report.metrics[key])
        # Log before reporting: at the report, Tune may stop the trial (ASHA) and end this process.
        if self.rank == 0:
            if self.board is not None:
                # Waited for: a fire-and-forget call may be lost when the worker exits after the last epoch.
                ray.get(self.board.post_epoch.remote(report.epoch, report.metrics))
            if self.run is not None:
                self.run.log_metrics(report.metrics, step=report.epoch)
        self._report(metrics, report.state)
        # After the checkpoint: logging the network takes seconds, and a job stopped meanwhile must
        # still find this epoch's checkpoint (the driver tags the run with it). A trial that Tune
        # stops at the report may lose this epoch's model, never its checkpoint.
        if self.rank == 0 and self.run is not None and report.state is not None:
            self.run.log_epoch_model(report.state["model"], report.epoch)  # linked to the metrics above
        if report.preemption:
            self._note_preemption(report.global_step)

    def checkpoint_requested(self, global_step: int) -> bool:
        if global_step % PREEMPTION_POLL_STEPS:
            return False
        info = self.session.preemption_info()
        if info is None:
            return False
        notice = (tuple(info.preempted_node_ids), info.deadline_ms)
        if notice == self.answered_notice:
            return False
        self.answered_notice = notice
        return True

    def _note_preemption(self, global_step: int) -> None:
        """Recorded once the just-in-time checkpoint is saved."""
        if self.rank != 0:
            return
        preemptions = ray.get(self.board.note_preemption.remote())
        self.gauges.set(m.PREEMPTIONS, preemptions)
        if self.run is not None:
            self.run.set_tags({PREEMPTIONS_TAG: str(preemptions)})
            self.run.log_metrics({PREEMPTION_CHECKPOINT_STEP_METRIC: global_step}, step=preemptions)

    def step_checkpoint(self, saved: StepCheckpoint) -> None:
        # "epoch" stays the last finished one: Tune's schedulers count epochs by it.
        metrics = {**saved.metrics, "epoch": saved.epoch - 1, "epoch_step": saved.step,
                   "global_step": saved.global_step, "final": False}
        self._report(metrics, saved.state)
        if saved.preemption:
            self._note_preemption(saved.global_step)

    def _report(self, metrics: dict, state: dict | None) -> None:
        if state is None:
            self.session.report(metrics)
            return
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / STATE_FILE
            torch.save(state, path)
            size = path.stat().st_size
            self.session.report(metrics, checkpoint=self.session.checkpoint_type.from_directory(directory))
        self.gauges.set(m.CHECKPOINT_SECONDS, time.perf_counter() - started)
        self.gauges.set(m.CHECKPOINT_BYTES, size)
        self.gauges.inc(m.CHECKPOINTS)


def _note_start(run: TrackedRun, resume: dict | None, world_size: int) -> None:
    if resume is not None:
        run.set_tags({RESTORED_FROM_EPOCH_TAG: str(resume["epoch"])})
        run.log_metrics({RESTORED_FROM_EPOCH_METRIC: resume["epoch"],
                         RESTORED_FROM_STEP_METRIC: resume["global_step"]}, step=resume["epoch"])
    # Every start (of a worker group, or of an in-place trial), so each elastic resize is one more point.
    run.log_metrics({WORLD_SIZE_METRIC: world_size}, step=resume["global_step"] if resume else 0)


def on_this_node(spec: JobSpec, sources: dict[str, tuple[str, str]] | None) -> JobSpec:
    """The spec with its .beton files copied from object storage to this node's cache (as it is
    when there are none there)."""
    if not sources:
        return spec
    from resplat.storage import localize

    local = {split: localize(uri, sha256) for split, (uri, sha256) in sources.items()}
    return spec.model_copy(update={"data": spec.data.model_copy(update=local)})


def train_loop_per_worker(config: dict) -> None:
    context = ray.train.get_context()
    rank = context.get_world_rank()
    spec = on_this_node(JobSpec.model_validate(config["spec"]), config.get("data_sources"))
    run = TrackedRun(config["tracking_uri"], config["run_id"]) if rank == 0 and config.get("run_id") else None
    checkpoint = ray.train.get_checkpoint()
    resume = load_state(checkpoint) if checkpoint is not None else None
    start_epoch, start_step = (resume["epoch"], resume["global_step"]) if resume else (0, 0)
    world_size = context.get_world_size()
    joined = ray.get(config["board"].join.remote(
        rank, ray.get_runtime_context().get_node_id(), start_epoch=start_epoch, start_step=start_step,
        world_size=world_size))
    gauges = m.TrainMetrics(
        job=spec.name or ray.get_runtime_context().get_job_id(),
        run=config.get("run_id") or "",
        trial=config.get("trial_id") or "",
        worker=rank,
    )
    gauges.set(m.RESTARTS, joined["restarts"])
    gauges.set(m.PREEMPTIONS, joined["preemptions"])
    gauges.set(m.LOST_STEPS, joined["lost_steps"])
    if run is not None:
        _note_start(run, resume, world_size)
        if joined["resize"]:
            run.set_tags({RESIZES_TAG: str(joined["resizes"])})
        if joined["restart"] or joined["resize"]:  # a resize also redoes the steps since the checkpoint
            run.log_metrics({LOST_STEPS_METRIC: joined["lost_steps"], LOST_EPOCHS_METRIC: joined["lost_epochs"]},
                            step=joined["restarts"] + joined["resizes"])
    reporter = RayReporter(rank, config["board"], run, gauges, use_gpu=spec.scaling.use_gpu)
    train(spec, reporter, resume=resume, local_rank=context.get_local_rank())


def train_in_trial(spec: JobSpec, *, run: TrackedRun, trial_id: str) -> dict[str, float]:
    """Train a one-worker sweep trial in Tune's trial process itself, from Tune's latest checkpoint
    of the trial when it restarts. Under Ray Train each trial would start a controller, a worker
    group of one and their helper actors: most of a short trial's time, for nothing one worker needs."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    resume = load_state(checkpoint) if checkpoint is not None else None
    earlier_starts = len(run.metric_history(WORLD_SIZE_METRIC))
    _note_start(run, resume, world_size=1)
    gauges = m.TrainMetrics(job=spec.name, run=run.run_id, trial=trial_id, worker=0)
    # A trial restarted by Tune (a failure, a preemption, a resumed sweep) starts again here; the
    # steps it redoes are not counted (Tune's restart leaves no record of how far it had got).
    gauges.set(m.RESTARTS, earlier_starts)
    gauges.set(m.PREEMPTIONS, 0)
    gauges.set(m.LOST_STEPS, 0)
    reporter = RayReporter(0, None, run, gauges, use_gpu=spec.scaling.use_gpu, session=tune_session())
    return train(spec, reporter, resume=resume)

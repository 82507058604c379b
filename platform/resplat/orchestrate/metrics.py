"""The Prometheus metrics resplat exports through Ray: the one home of their names.

Workers set them through `ray.util.metrics`; Ray's metrics agent serves them with a
`ray_` prefix (and `_total` on counters), which is what `exported` returns and what the
dashboards query. Values are set a few times a second from the reporter, never per step.

Ray 2.60 forgets a gauge value soon after it is set: a process's exporter sends the agent only
what was recorded since its last export (every `metrics_report_interval_ms`, 10 s by default),
and the agent drops a series it has not heard of for two such intervals. A value set once (a
sweep's trial counts, a run's restarts, an epoch's accuracy) would vanish from Prometheus
seconds later, so every gauge value here is recorded again each second until its owner is gone.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

TRAIN_LABELS = ("job", "run", "trial", "worker")
SWEEP_LABELS = ("sweep", "state")


@dataclass(frozen=True)
class Metric:
    name: str  # as declared to Ray
    kind: str  # "gauge" or "counter"
    description: str
    labels: tuple[str, ...] = TRAIN_LABELS

    @property
    def exported(self) -> str:
        """The name Prometheus stores."""
        return f"ray_{self.name}" + ("_total" if self.kind == "counter" else "")


IMAGES_PER_SECOND = Metric("resplat_train_images_per_second", "gauge", "Training images per second of this worker.")
STEP_SECONDS = Metric("resplat_train_step_seconds", "gauge", "Mean wall time of one training step.")
DATA_WAIT_RATIO = Metric("resplat_train_data_wait_ratio", "gauge",
                         "Share of step time spent waiting for the data loader (0 to 1).")
LOSS = Metric("resplat_train_loss", "gauge", "Training loss of the latest batch on this worker.")
LEARNING_RATE = Metric("resplat_train_learning_rate", "gauge", "Current learning rate.")
VAL_TOP1 = Metric("resplat_train_val_top1_ratio", "gauge", "Validation top-1 accuracy of the latest epoch (0 to 1).")
VAL_TOP5 = Metric("resplat_train_val_top5_ratio", "gauge", "Validation top-5 accuracy of the latest epoch (0 to 1).")
VAL_LOSS = Metric("resplat_train_val_loss", "gauge", "Validation loss of the latest epoch.")
EPOCH = Metric("resplat_train_epoch", "gauge", "Current epoch (1-based).")
STEP = Metric("resplat_train_step", "gauge", "Optimiser steps done since the start of the run.")
CHECKPOINT_SECONDS = Metric("resplat_train_checkpoint_seconds", "gauge",
                            "Wall time of the latest checkpoint: saving and reporting it to Ray Train.")
CHECKPOINT_BYTES = Metric("resplat_train_checkpoint_bytes", "gauge", "Size of the latest checkpoint.")
CHECKPOINTS = Metric("resplat_train_checkpoints", "counter", "Checkpoints saved by this worker process.")
# Gauges, not counters: a restart replaces the worker processes, so a per-process counter would
# start again from nothing, and a run that never restarted would have no series at all.
RESTARTS = Metric("resplat_train_restarts", "gauge", "Worker-group restarts of this run so far.")
PREEMPTIONS = Metric("resplat_train_preemptions", "gauge", "Preemption notices this run has received so far.")
LOST_STEPS = Metric("resplat_train_lost_steps", "gauge",
                    "Steps trained and then lost to restarts in this run so far (redone after a restart).")
GPU_MEMORY_BYTES = Metric("resplat_train_gpu_memory_allocated_bytes", "gauge",
                          "GPU memory allocated by tensors on this worker (GPU workers only).")
SWEEP_TRIALS = Metric("resplat_sweep_trials", "gauge", "Trials of a sweep in each state.", SWEEP_LABELS)

TRAIN_METRICS = (
    IMAGES_PER_SECOND, STEP_SECONDS, DATA_WAIT_RATIO, LOSS, LEARNING_RATE, VAL_TOP1, VAL_TOP5, VAL_LOSS,
    EPOCH, STEP, CHECKPOINT_SECONDS, CHECKPOINT_BYTES, CHECKPOINTS, RESTARTS, PREEMPTIONS, LOST_STEPS,
    GPU_MEMORY_BYTES,
)
TRIAL_STATES = ("pending", "running", "finished", "stopped", "errored")


REFRESH_SECONDS = 1.0  # Ray exports at most once a second, whatever metrics_report_interval_ms says


class GaugeKeeper:
    """Records the latest value of every live gauge series again each second, from one daemon thread.

    Series are kept per owner (a TrainMetrics or SweepMetrics) and dropped when the owner is
    garbage collected, so a finished run's gauges leave Prometheus as its worker's do.
    """

    def __init__(self):
        # One lock for recording and remembering: a refresh must never re-record a value older
        # than one set at the same moment.
        self._lock = threading.Lock()
        self._latest: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._thread: threading.Thread | None = None

    def set(self, owner, gauge, value: float, tags: dict[str, str] | None = None) -> None:
        with self._lock:
            gauge.set(value, tags=tags)
            series = self._latest.setdefault(owner, {})
            series[(id(gauge), frozenset((tags or {}).items()))] = (gauge, value, tags)
            if self._thread is None:
                self._thread = threading.Thread(target=self._refresh, name="resplat-gauges", daemon=True)
                self._thread.start()

    def owners(self) -> int:
        with self._lock:
            return len(self._latest)

    @property
    def refreshing(self) -> bool:
        return self._thread is not None

    def set_again(self) -> None:
        """Record every kept value again."""
        with self._lock:
            for series in list(self._latest.values()):
                for gauge, value, tags in series.values():
                    gauge.set(value, tags=tags)

    def _refresh(self) -> None:
        while True:
            time.sleep(REFRESH_SECONDS)
            with self._lock:
                if not self._latest:
                    self._thread = None
                    return
            self.set_again()


keeper = GaugeKeeper()  # the one per process


def _declare(metric: Metric, default_tags: dict[str, str]):
    from ray.util import metrics

    cls = metrics.Counter if metric.kind == "counter" else metrics.Gauge
    declared = cls(metric.name, description=metric.description, tag_keys=metric.labels)
    declared.set_default_tags(default_tags)
    return declared


class TrainMetrics:
    """One worker's training metrics, labelled with its job, run, trial and rank."""

    def __init__(self, *, job: str, run: str, trial: str, worker: int):
        tags = {"job": job, "run": run, "trial": trial, "worker": str(worker)}
        self._by_name = {m.name: _declare(m, tags) for m in TRAIN_METRICS}

    def set(self, metric: Metric, value: float) -> None:
        keeper.set(self, self._by_name[metric.name], float(value))

    def inc(self, metric: Metric, value: float = 1.0) -> None:
        self._by_name[metric.name].inc(float(value))


class SweepMetrics:
    """Trial counts by state of one sweep, set by the sweep's driver whenever it sees them change."""

    def __init__(self, sweep: str):
        self.sweep = sweep
        self._gauge = _declare(SWEEP_TRIALS, {"sweep": sweep})

    def set_counts(self, counts: dict[str, int]) -> None:
        unknown = set(counts) - set(TRIAL_STATES)
        if unknown:
            raise ValueError(f"unknown trial states {sorted(unknown)}; known: {', '.join(TRIAL_STATES)}")
        for state in TRIAL_STATES:
            keeper.set(self, self._gauge, float(counts.get(state, 0)), tags={"state": state})

"""MLflow's vocabulary in resplat: every tag, param, metric, artifact and alias name, defined once.

The values are what is stored; changing one orphans the runs already recorded under it.
"""

# ---------------------------------------------------------------- tags of every job run

JOB_TAG = "resplat.job"
TRAIN_SHA256_TAG = "resplat.data.train_sha256"
VAL_SHA256_TAG = "resplat.data.val_sha256"
MODEL_URI_TAG = "resplat.model_uri"
WORKER_GROUP_RESTARTS_TAG = "resplat.worker_group_restarts"
RESTORED_FROM_EPOCH_TAG = "resplat.restored_from_epoch"
RESUMED_TAG = "resplat.resumed"
EVAL_VIEWS_TAG = "resplat.eval.views"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a run under another in the UI

# ---------------------------------------------------------------- lineage (tracking/lineage.py)

GIT_COMMIT_TAG = "resplat.git.commit"
GIT_DIRTY_TAG = "resplat.git.dirty"
HOST_TAG = "resplat.host"
DEVICES_TAG = "resplat.devices"
RAY_JOB_ID_TAG = "resplat.ray.job_id"
FROM_RUN_TAG = "resplat.from_run"
VERSION_TAG_PREFIX = "resplat.version."  # + a library: torch, ray, ffcv, mlflow, resplat

# ---------------------------------------------------------------- tags of sweeps and their trials

KIND_TAG = "resplat.kind"
KIND_SWEEP = "sweep"
SWEEP_TAG = "resplat.sweep"
METRIC_TAG = "resplat.sweep.metric"
MODE_TAG = "resplat.sweep.mode"
SCHEDULER_TAG = "resplat.sweep.scheduler"
BEST_TRIAL_TAG = "resplat.sweep.best_trial"
BEST_RUN_TAG = "resplat.sweep.best_run"
TRIAL_TAG = "resplat.trial"
TRIAL_STATUS_TAG = "resplat.trial.status"


def sweep_count_tag(trial_status: str) -> str:
    """The parent's tag counting its trials that ended with `trial_status` (finished, failed, ...)."""
    return f"{SWEEP_TAG}.{trial_status}"


# ---------------------------------------------------------------- params (flattened job spec keys)

FAMILY_PARAM = "model.family"
DEPTH_PARAM = "model.depth"
SHORTCUT_PARAM = "model.shortcut"
LR_PARAM = "optim.lr"

# ---------------------------------------------------------------- metrics logged beside the loop's own

WALL_SECONDS_METRIC = "wall_seconds"
RESTORED_FROM_EPOCH_METRIC = "restored_from_epoch"
# Work redone after worker-group restarts, cumulative over the run (step: the restart count).
LOST_STEPS_METRIC = "lost_steps"
LOST_EPOCHS_METRIC = "lost_epochs"
# Spot preemption: the global step of each just-in-time checkpoint (step: the preemption count),
# the count so far as a tag, and the global step a restarted worker group resumed from.
PREEMPTION_CHECKPOINT_STEP_METRIC = "preemption_checkpoint_step"
PREEMPTIONS_TAG = "resplat.preemptions"
RESTORED_FROM_STEP_METRIC = "restored_from_step"
# What the training loop reports per epoch and the sweep report draws.
TRAIN_TOP1_METRIC = "train_top1"
VAL_TOP1_METRIC = "val_top1"
VAL_TOP5_METRIC = "val_top5"

# ---------------------------------------------------------------- artifacts

SUBMITTED_SPEC = "spec/submitted.yaml"
RESOLVED_SPEC = "spec/resolved.yaml"
MODEL_ARTIFACT = "model"
SPACE_ARTIFACT = "sweep/space.yaml"
BASE_JOB_ARTIFACT = "sweep/base_job.yaml"
RESULTS_CSV = "sweep/results.csv"
RESULTS_TXT = "sweep/results.txt"

# ---------------------------------------------------------------- registry aliases

CHAMPION = "champion"
# On a run stopped before its end: the epoch of its latest checkpoint (what --resume continues from).
LAST_CHECKPOINT_EPOCH_TAG = "resplat.last_checkpoint_epoch"


# ---------------------------------------------------------------- elastic workers

# The world size of each worker group, logged by rank 0 when the group starts (step: the global step
# it starts from), so every resize is one more point; the number of resizes so far as a tag.
WORLD_SIZE_METRIC = "world_size"
RESIZES_TAG = "resplat.resizes"

# ---------------------------------------------------------------- epoch models (MLflow 3 LoggedModels)

# Each checkpointed epoch's network is a LoggedModel of the run, logged at step = epoch, with this
# tag holding the epoch; the run's metrics of that step are linked to it.
EPOCH_MODEL_TAG = "resplat.epoch"


def epoch_model_name(epoch: int) -> str:
    return f"{MODEL_ARTIFACT}-epoch-{epoch}"

"""The training loop on its own: a plain function, no Ray, no MLflow (as under torchrun or a notebook)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from resplat.spec import JobSpec
from resplat.train import PrintReporter, train


@pytest.fixture(scope="module")
def beton_spec(cifar_subset, tmp_path_factory):
    import os

    from resplat.orchestrate.submit import prepare_data

    os.environ["RESPLAT_HOME"] = str(tmp_path_factory.mktemp("home"))
    try:
        spec = JobSpec.model_validate({
            "name": "loop", "seed": 1,
            "model": {"family": "cifar", "depth": 8},
            "data": {"train": cifar_subset / "train", "val": cifar_subset / "test", "loader_workers": 1},
            "optim": {"lr": 0.05, "batch_size": 50},
            "schedule": {"kind": "constant", "epochs": 2},
        })
        prepared = prepare_data(spec.data, num_classes=10)
    finally:
        del os.environ["RESPLAT_HOME"]
    return spec.model_copy(update={"data": prepared.data})


def test_the_loop_imports_no_ray_mlflow_or_typer():
    code = ("import sys, resplat.train; "
            "print(sorted(m for m in ('ray', 'mlflow', 'typer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trains_and_checkpoints_in_a_plain_process(beton_spec, precision):
    spec = beton_spec.model_copy(update={"scaling": beton_spec.scaling.model_copy(update={"precision": precision})})
    reporter = PrintReporter()
    metrics = train(spec, reporter)
    assert [r.epoch for r in reporter.epochs] == [1, 2]
    assert reporter.epochs[-1].final and reporter.epochs[-1].state is not None
    assert all(math.isfinite(r.metrics["train_loss"]) for r in reporter.epochs)
    assert metrics["val_images"] == 100 and metrics["train_images"] == 400
    state = reporter.epochs[-1].state
    assert state["epoch"] == 2 and state["global_step"] == 16
    weight = next(v for k, v in state["model"].items() if k.endswith("conv1.weight"))
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_resuming_from_a_checkpoint_continues_where_it_stopped(beton_spec):
    spec = beton_spec.model_copy(update={"schedule": beton_spec.schedule.model_copy(update={"epochs": 3})})
    first = PrintReporter()
    train(spec.model_copy(update={"checkpoint": spec.checkpoint.model_copy(update={"every_epochs": 1})}), first)
    state = first.epochs[0].state  # after epoch 1
    resumed = PrintReporter()
    train(spec, resumed, resume=state)
    assert [r.epoch for r in resumed.epochs] == [2, 3]
    assert resumed.epochs[-1].global_step == first.epochs[-1].global_step


def test_plateau_schedule_divides_the_lr_from_the_next_epoch_and_resumes_with_it(beton_spec):
    # min_delta 10 in loss: no epoch counts as an improvement, so with patience 1 every epoch after
    # the first divides the lr by 10, effective from the first step of the next epoch.
    schedule = {"kind": "plateau", "epochs": 3, "monitor": "val_loss", "patience": 1, "min_delta": 10}
    spec = beton_spec.model_copy(update={"schedule": beton_spec.schedule.model_copy(update=schedule)})
    reporter = PrintReporter()
    train(spec, reporter)
    lrs = [r.metrics["lr"] for r in reporter.epochs]
    assert lrs == pytest.approx([0.05, 0.05, 0.005])
    assert reporter.epochs[-1].state["plateau"]["reductions"] == 2

    after_two = PrintReporter()
    train(spec.model_copy(update={"schedule": spec.schedule.model_copy(update={"epochs": 2})}), after_two)
    resumed = PrintReporter()
    train(spec, resumed, resume=after_two.epochs[-1].state)
    assert [r.metrics["lr"] for r in resumed.epochs] == pytest.approx([0.005])


class RecordingReporter(PrintReporter):
    """Records every progress snapshot; asks for a checkpoint at the given global steps (a stand-in
    for a preemption notice, which only Ray delivers)."""

    def __init__(self, request_at: tuple[int, ...] = ()):
        super().__init__()
        self.updates = []
        self.request_at = request_at

    def progress(self, update):
        self.updates.append(update)

    def checkpoint_requested(self, global_step):
        return global_step in self.request_at


def _label_batches(spec, epoch: int, skip: int = 0) -> list[list[int]]:
    from resplat.data import build_loader

    loader = build_loader(spec.data.train, pipeline=spec.data.pipeline, train=True, batch_size=spec.optim.batch_size,
                          resolution=spec.data.resolution, num_workers=1, seed=spec.seed)
    loader.next_epoch, loader.skip_batches = epoch, skip
    return [labels.tolist() for _, labels in loader]


def test_a_loader_resumed_mid_epoch_yields_the_rest_of_that_epochs_order(beton_spec):
    whole = _label_batches(beton_spec, epoch=1)
    assert len(whole) == 8
    assert _label_batches(beton_spec, epoch=1, skip=3) == whole[3:]
    assert _label_batches(beton_spec, epoch=0) != whole  # the order does depend on the epoch


def test_mid_epoch_checkpoints_resume_at_the_next_batch(beton_spec):
    spec = beton_spec.model_copy(update={"checkpoint": beton_spec.checkpoint.model_copy(update={"every_steps": 5})})
    whole = RecordingReporter()
    train(spec, whole)
    saved = [(c.epoch, c.step, c.global_step) for c in whole.checkpoints]
    assert saved == [(1, 5, 5), (2, 2, 10), (2, 7, 15)]  # mid-epoch only: 8 and 16 end epochs, which save
    state = whole.checkpoints[1].state
    assert (state["epoch"], state["epoch_step"], state["global_step"]) == (1, 2, 10)

    resumed = RecordingReporter()
    train(spec, resumed, resume=state)
    train_updates = [u for u in resumed.updates if u.phase == "train"]
    assert train_updates[0].epoch == 2 and train_updates[0].step > 2
    assert max(u.global_step for u in train_updates) == 16
    assert [r.epoch for r in resumed.epochs] == [2]
    assert resumed.epochs[0].global_step == whole.epochs[-1].global_step == 16
    assert resumed.epochs[0].metrics["train_images"] == 6 * 50  # only the batches after the checkpoint
    assert resumed.epochs[0].metrics["lr"] == whole.epochs[-1].metrics["lr"]


def test_the_reporter_can_ask_for_a_checkpoint_at_any_step(beton_spec):
    spec = beton_spec.model_copy(update={"schedule": beton_spec.schedule.model_copy(update={"epochs": 1})})
    reporter = RecordingReporter(request_at=(3, 8))
    train(spec, reporter)
    [asked] = reporter.checkpoints
    assert asked.preemption and asked.global_step == 3 and asked.state["epoch_step"] == 3
    [end] = reporter.epochs  # asked at the epoch's last step: the epoch's own checkpoint answers
    assert end.preemption and end.state["global_step"] == 8 and end.state["epoch_step"] == 0

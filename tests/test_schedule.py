"""Learning-rate schedules: the paper's steps, warmup, cosine and one-cycle."""

from __future__ import annotations

import pytest

from resplat.spec import ScheduleSpec
from resplat.train.schedule import Plateau, lr_factor, plan_steps


def factors(schedule: ScheduleSpec, steps_per_epoch: int, at: list[int]) -> list[float]:
    plan = plan_steps(schedule, steps_per_epoch)
    return [lr_factor(plan, s) for s in at]


def test_paper_cifar_steps_divide_by_ten_at_32k_and_48k():
    schedule = ScheduleSpec(kind="step", epochs=200, max_steps=64000, unit="steps", milestones=[32000, 48000])
    plan = plan_steps(schedule, 391)
    assert plan.total_steps == 64000
    assert factors(schedule, 391, [0, 31999, 32000, 47999, 48000, 63999]) == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


def test_paper_resnet110_warmup_holds_a_tenth_then_jumps():
    schedule = ScheduleSpec(kind="step", epochs=1, unit="steps", warmup=400, warmup_start=0.1,
                            warmup_shape="constant")
    assert factors(schedule, 1000, [0, 399, 400, 999]) == pytest.approx([0.1, 0.1, 1, 1])


def test_linear_warmup_ramps_up():
    schedule = ScheduleSpec(kind="cosine", epochs=1, unit="steps", warmup=400, warmup_start=0.1)
    assert factors(schedule, 1000, [0, 200, 400]) == pytest.approx([0.1, 0.55, 1])


def test_epoch_milestones_convert_to_steps():
    schedule = ScheduleSpec(kind="step", epochs=90, milestones=[30, 60])
    assert factors(schedule, 10, [299, 300, 600]) == pytest.approx([1, 0.1, 0.01])


def test_cosine_falls_to_zero_and_onecycle_peaks_then_falls():
    cosine = ScheduleSpec(kind="cosine", epochs=10)
    assert factors(cosine, 10, [0, 50, 100]) == pytest.approx([1, 0.5, 0])
    onecycle = ScheduleSpec(kind="onecycle", epochs=4, peak_at=0.25, warmup_start=0.1)
    assert factors(onecycle, 10, [0, 10, 25, 40]) == pytest.approx([0.1, 1, 0.5, 0])


def test_plateau_divides_after_patience_epochs_without_improvement():
    plateau = Plateau.of(ScheduleSpec(kind="plateau", patience=2, min_delta=0.01))
    top1 = [0.30, 0.40, 0.405, 0.41, 0.50, 0.50, 0.49]  # +0.005 and +0.01 count as no improvement
    reduced = [plateau.update({"val_top1": value}) for value in top1]
    assert reduced == [False, False, False, True, False, False, True]
    assert plateau.factor == pytest.approx(0.01)


def test_plateau_on_val_loss_wants_it_to_fall_and_survives_a_checkpoint():
    plateau = Plateau.of(ScheduleSpec(kind="plateau", monitor="val_loss", patience=1, min_delta=0))
    assert [plateau.update({"val_loss": v}) for v in (2.0, 1.5, 1.6)] == [False, False, True]
    restored = Plateau.of(ScheduleSpec(kind="plateau", monitor="val_loss", patience=1))
    restored.load_state_dict(plateau.state_dict())
    assert restored == plateau and restored.factor == pytest.approx(0.1)

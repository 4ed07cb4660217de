"""The training schedule: every image once per epoch, a minimum of optimizer steps, stages by count."""

import pytest

from ymir_runner_detection.recipe import plan_schedule


def test_a_small_set_gets_full_batches_and_enough_steps_and_the_log_says_why():
    # 36 images, batch 16: 3 steps (48 draws, 12 images twice); 15 epochs = 45 steps < 600 -> 200 epochs.
    schedule = plan_schedule(36, 16, epochs=15, min_steps=600, warmup_epochs=1.0, save_period=0)
    assert (schedule.steps_per_epoch, schedule.epochs, schedule.total_steps) == (3, 200, 600)
    assert schedule.images_per_epoch == 48
    assert schedule.warmup_steps == 30  # 1 epoch is 3 steps: raised to 5 % of the run
    assert schedule.stage_epochs == (20, 40, 60, 80, 100, 120, 140, 160, 180, 200)
    text = "\n".join(schedule.describe())
    assert "3 optimizer steps per epoch, every image once per epoch (12 drawn twice to fill the last batch)" in text
    assert "15 epochs would be 45 optimizer steps, fewer than config key 'min_steps' 600: training 200 epochs" in text
    assert "200 epochs = 600 optimizer steps, 9600 images seen" in text


def test_a_large_set_keeps_its_epochs_and_min_steps_zero_trains_exactly_epochs():
    schedule = plan_schedule(600, 16, epochs=30, min_steps=600, warmup_epochs=1.0, save_period=0)
    assert (schedule.steps_per_epoch, schedule.epochs, schedule.warmup_steps) == (38, 30, 57)  # 5 % of 1140
    assert schedule.stage_epochs == (3, 6, 9, 12, 15, 18, 21, 24, 27, 30)
    assert not any("would be" in line for line in schedule.describe())
    exact = plan_schedule(36, 16, epochs=15, min_steps=0, warmup_epochs=1.0, save_period=5)
    assert (exact.epochs, exact.stage_epochs, exact.warmup_steps) == (15, (5, 10, 15), 3)
    assert plan_schedule(36, 16, epochs=7, min_steps=0, warmup_epochs=0, save_period=5).stage_epochs == (5, 7)
    assert plan_schedule(10, 16, epochs=3, min_steps=0, warmup_epochs=0, save_period=0).stage_epochs == (1, 2, 3)
    # Warm-up at most 20 % of the run.
    assert plan_schedule(36, 16, epochs=10, min_steps=0, warmup_epochs=5.0, save_period=0).warmup_steps == 6


def test_ranks_share_the_images():
    schedule = plan_schedule(36, 16, epochs=10, min_steps=0, warmup_epochs=0, save_period=0, world_size=2)
    assert schedule.steps_per_epoch == 2 and schedule.images_per_epoch == 64


@pytest.mark.parametrize("kwargs", [dict(images=0), dict(batch_size=0), dict(epochs=0), dict(min_steps=-1),
                                    dict(save_period=-1), dict(world_size=0)])
def test_impossible_schedules_are_refused(kwargs):
    arguments = {**dict(images=36, batch_size=16, epochs=1, min_steps=0, warmup_epochs=0.0, save_period=0), **kwargs}
    images, batch_size = arguments.pop("images"), arguments.pop("batch_size")
    with pytest.raises(ValueError):
        plan_schedule(images, batch_size, **arguments)

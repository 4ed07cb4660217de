"""The training schedule: every image once per epoch; a number of epochs or warm-up epochs is exactly what runs;
``auto`` chooses (enough optimizer steps for a small set, a warm-up in proportion) and the log says what and why."""

import logging

import pytest

from ymir_runner import Param
from ymir_runner_detection.demo import DEMO_IMAGES, DEMO_STEPS, demo_epochs
from ymir_runner_detection.devices import cpu_share
from ymir_runner_detection.recipe import epochs_for_steps, plan_schedule
from ymir_runner_detection.templates import AUTO_EPOCHS, TRAINING_DEFAULTS


def test_the_template_leaves_epochs_warmup_and_workers_to_auto_by_default():
    for key in ("epochs", "warmup_epochs", "num_workers_per_gpu"):  # max_detections: the core's evaluation key
        assert TRAINING_DEFAULTS[key] == Param.AUTO
    assert TRAINING_DEFAULTS["min_steps"] == 600 and AUTO_EPOCHS == 30


def test_epochs_auto_on_a_small_set_trains_enough_steps_and_the_log_says_why():
    # 36 images, batch 16: 3 steps (48 draws, 12 images twice); 30 epochs = 90 steps < 600 -> 200 epochs.
    schedule = plan_schedule(36, 16, epochs="auto", min_steps=600, warmup_epochs="auto", save_period=0)
    assert (schedule.steps_per_epoch, schedule.epochs, schedule.total_steps) == (3, 200, 600)
    assert schedule.images_per_epoch == 48
    assert schedule.warmup_steps == 30  # 1 epoch is 3 steps: raised to 5 % of the run
    assert schedule.stage_epochs == (20, 40, 60, 80, 100, 120, 140, 160, 180, 200)
    assert schedule.describe() == [
        "36 training images, batch 16 x 1 rank(s): 3 optimizer steps per epoch, every image once per epoch (12 drawn "
        "twice to fill the last batch)",
        "epochs auto: 200 epochs (30 epochs would be 90 optimizer steps, fewer than min_steps 600)",
        "warmup_epochs auto: 30 steps (1 epoch = 3 steps, raised to 5% of the run's 600)",
        "200 epochs = 600 optimizer steps, 9600 images seen; warm-up 30 steps; 10 stages, after epochs 20, 40, ..., "
        "200"]
    assert schedule.warnings() == []


def test_epochs_auto_on_a_large_set_trains_30_epochs_and_says_so():
    schedule = plan_schedule(600, 16, epochs="auto", min_steps=600, warmup_epochs="auto", save_period=0)
    assert (schedule.steps_per_epoch, schedule.epochs, schedule.warmup_steps) == (38, 30, 57)  # 5 % of 1140
    assert schedule.stage_epochs == (3, 6, 9, 12, 15, 18, 21, 24, 27, 30)
    assert "epochs auto: 30 epochs (1140 optimizer steps, at least min_steps 600)" in schedule.describe()
    # A long run: one epoch of warm-up is less than a fifth of it and more than 5 %.
    long = plan_schedule(5000, 16, epochs="auto", min_steps=600, warmup_epochs="auto", save_period=0)
    assert long.warmup_steps == 470 and "warmup_epochs auto: 470 steps (1 epoch = 313 steps, raised to 5% of the " \
                                        "run's 9390)" in long.describe()
    short = plan_schedule(300, 16, epochs=2, min_steps=0, warmup_epochs="auto", save_period=0)
    assert short.warmup_steps == 7 and "warmup_epochs auto: 7 steps (1 epoch = 19 steps, lowered to 20% of the " \
                                       "run's 38)" in short.describe()


@pytest.mark.parametrize("min_steps", [0, 600, 100_000])
def test_a_number_of_epochs_is_exactly_what_trains_whatever_min_steps(min_steps):
    schedule = plan_schedule(24, 16, epochs=3, min_steps=min_steps, warmup_epochs="auto", save_period=0)
    assert (schedule.epochs, schedule.total_steps, schedule.stage_epochs) == (3, 6, (1, 2, 3))
    assert "3 epochs = 6 optimizer steps, 96 images seen; warm-up 1 steps; 3 stages, after epochs 1, 2, 3" in \
        schedule.describe()


def test_a_number_of_epochs_shorter_than_min_steps_says_what_auto_would_have_trained():
    text = plan_schedule(24, 16, epochs=3, min_steps=600, warmup_epochs="auto", save_period=0).describe()
    assert ("epochs 3, as set: 6 optimizer steps, fewer than min_steps 600, which only epochs: auto applies (it "
            "would train 300 epochs)") in text
    assert not any("as set" in line for line in plan_schedule(600, 16, epochs=30, min_steps=600, warmup_epochs="auto",
                                                              save_period=0).describe())


def test_a_number_of_warmup_epochs_is_exactly_the_warmup_and_a_warmup_longer_than_the_run_is_a_warning():
    assert plan_schedule(36, 16, epochs=15, min_steps=0, warmup_epochs=1.0, save_period=5).warmup_steps == 3
    assert plan_schedule(36, 16, epochs=10, min_steps=0, warmup_epochs=5.0, save_period=0).warmup_steps == 15
    assert plan_schedule(36, 16, epochs=10, min_steps=0, warmup_epochs=0, save_period=0).warmup_steps == 0
    longer = plan_schedule(24, 16, epochs=3, min_steps=0, warmup_epochs=5.0, save_period=0)
    assert longer.warmup_steps == 10 and not any("warmup_epochs auto" in line for line in longer.describe())
    assert longer.warnings() == ["config key 'warmup_epochs' 5: 10 warm-up steps, more than the run's 6: the "
                                 "learning rate never reaches config key 'learning_rate'"]


def test_stages_and_ranks():
    assert plan_schedule(36, 16, epochs=15, min_steps=0, warmup_epochs=1.0, save_period=5).stage_epochs == (5, 10, 15)
    assert plan_schedule(36, 16, epochs=7, min_steps=0, warmup_epochs=0, save_period=5).stage_epochs == (5, 7)
    schedule = plan_schedule(36, 16, epochs=10, min_steps=0, warmup_epochs=0, save_period=0, world_size=2)
    assert schedule.steps_per_epoch == 2 and schedule.images_per_epoch == 64


def test_epochs_for_steps_is_how_a_step_count_becomes_a_number_of_epochs():
    # The demo's defaults: 300 images, batch 16 -> 19 steps per epoch; 500 steps -> 27 epochs = 513 steps, what
    # epochs 1 + min_steps 500 trained before epochs took auto.
    assert epochs_for_steps(300, 16, 500) == 27 and demo_epochs(DEMO_IMAGES, DEMO_STEPS) == 27
    assert plan_schedule(300, 16, epochs=27, min_steps=600, warmup_epochs="auto", save_period=0).total_steps == 513
    assert epochs_for_steps(34, 16, 150) == 50 and epochs_for_steps(160, 16, 400) == 40
    assert epochs_for_steps(16, 16, 0) == 1


@pytest.mark.parametrize("kwargs", [dict(images=0), dict(batch_size=0), dict(epochs=0), dict(epochs=-1),
                                    dict(epochs="fast"), dict(warmup_epochs=-1.0), dict(warmup_epochs="slow"),
                                    dict(min_steps=-1), dict(save_period=-1), dict(world_size=0)])
def test_impossible_schedules_are_refused(kwargs):
    arguments = {**dict(images=36, batch_size=16, epochs=1, min_steps=0, warmup_epochs=0.0, save_period=0), **kwargs}
    images, batch_size = arguments.pop("images"), arguments.pop("batch_size")
    with pytest.raises(ValueError):
        plan_schedule(images, batch_size, **arguments)


def test_num_workers_auto_is_capped_to_the_cpus_and_a_number_is_exactly_used(monkeypatch, caplog):
    monkeypatch.setenv("YMIR_RUNNER_CPUS", "2")
    logger = logging.getLogger("test.workers")
    with caplog.at_level(logging.INFO, logger="test.workers"):
        auto = cpu_share(["cpu"], Param.AUTO, logger)
        assert (auto.workers, auto.threads) == (0, 2) and "config asked" not in auto.describe()
        assert caplog.messages[-1] == ("num_workers_per_gpu auto: 0 DataLoader workers per rank (2, capped at a "
                                       "quarter of the rank's 2 CPUs: the model computes on them)")
        one = cpu_share(["cpu"], 1, logger)
        assert (one.workers, one.threads) == (1, 1) and len(caplog.records) == 1  # fits: nothing to say
        four = cpu_share(["cpu"], 4, logger)
        assert (four.workers, four.threads) == (4, 1)
    assert caplog.records[-1].levelname == "WARNING"
    assert caplog.messages[-1] == ("config key 'num_workers_per_gpu' 4: 4 DataLoader workers + 1 compute thread per "
                                   "rank on 2 CPUs: they share CPUs and slow each other down (num_workers_per_gpu: "
                                   "auto would use 0)")
    monkeypatch.setenv("YMIR_RUNNER_CPUS", "16")
    assert cpu_share(["cpu"], Param.AUTO, logger).workers == 2  # not capped: 2 <= 16 // 4

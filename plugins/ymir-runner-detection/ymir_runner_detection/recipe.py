"""The training schedule of one run, from the dataset size and the config (no torch here).

Epochs mean little on a small dataset: 36 images with batch 16 are 3 optimizer steps per epoch, and 30
epochs are 90 updates, far too few to train a detector from scratch. So:

* every epoch shows every training image at least once, in full batches (the sampler draws
  ``ceil(N / batch) * batch`` indices from back-to-back permutations; nothing is left out by ``drop_last``);
* ``epochs: auto`` (the template's default) trains ``AUTO_EPOCHS`` epochs, or more on a small dataset so that
  the run has at least ``min_steps`` optimizer steps, and the log says what it chose and why; a number is exactly
  the epochs trained (``min_steps`` is not used);
* ``warmup_epochs: auto`` warms up for ``AUTO_WARMUP_EPOCHS`` epoch, but at least 5 % of the run and at most 20 %
  of it (logged); a number is exactly the warm-up;
* stages (evaluation + checkpoint) come at the epochs the core's rule names (``ymir_runner.stages.stage_epochs``:
  every ``save_period`` epochs, or with ``save_period`` 0 ten evenly spaced ones; the last epoch always).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Union

from ymir_runner import Param
from ymir_runner.stages import stage_epochs

from .templates import AUTO_EPOCHS, AUTO_WARMUP_EPOCHS, AUTO_WARMUP_SHARE

#: ``warmup_epochs: auto`` is at least this share of the run, and at most ``MAX_WARMUP_SHARE``.
MIN_WARMUP_SHARE, MAX_WARMUP_SHARE = AUTO_WARMUP_SHARE

#: A config value that is a number or ``auto`` (``Param.AUTO``).
Setting = Union[int, float, str]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A run's plan in optimizer steps. ``images_per_epoch`` counts samples drawn per epoch over all ranks
    (at least the dataset size: the last batch is filled with images drawn again). ``epochs_setting`` and
    ``warmup_setting`` are the config's values (a number or ``auto``), for the log."""

    images: int
    batch_size: int
    world_size: int
    steps_per_epoch: int
    epochs: int
    epochs_setting: Setting
    min_steps: int
    warmup_steps: int
    warmup_setting: Setting
    stage_epochs: tuple[int, ...]  # 1-based epoch numbers that end with a stage

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def images_per_epoch(self) -> int:
        return self.steps_per_epoch * self.batch_size * self.world_size

    def is_stage(self, epoch: int) -> bool:
        """Whether 1-based ``epoch`` ends with an evaluated stage."""
        return epoch in self.stage_epochs

    def describe(self) -> list[str]:
        """The log's account of the schedule: steps, images seen, and what ``auto`` chose and why."""
        repeated = self.images_per_epoch - self.images
        lines = [f"{self.images} training images, batch {self.batch_size} x {self.world_size} rank(s): "
                 f"{self.steps_per_epoch} optimizer steps per epoch, every image once per epoch"
                 + (f" ({repeated} drawn twice to fill the last batch)" if repeated else ""),
                 self._epochs_reason(), self._warmup_reason()]
        lines.append(f"{self.epochs} epochs = {self.total_steps} optimizer steps, "
                     f"{self.total_steps * self.batch_size * self.world_size} images seen; warm-up "
                     f"{self.warmup_steps} steps; {len(self.stage_epochs)} stages, after epochs "
                     f"{_ranges(self.stage_epochs)}")
        return [line for line in lines if line]

    def warnings(self) -> list[str]:
        """What the config asks for that the run will show (logged as warnings): a warm-up longer than the run."""
        if self.warmup_setting != Param.AUTO and self.warmup_steps > self.total_steps:
            return [f"config key 'warmup_epochs' {self.warmup_setting:g}: {self.warmup_steps} warm-up steps, more "
                    f"than the run's {self.total_steps}: the learning rate never reaches config key "
                    f"'learning_rate'"]
        return []

    def _epochs_reason(self) -> str:
        auto_steps = AUTO_EPOCHS * self.steps_per_epoch
        if self.epochs_setting == Param.AUTO:
            if self.epochs > AUTO_EPOCHS:
                return (f"epochs auto: {self.epochs} epochs ({AUTO_EPOCHS} epochs would be {auto_steps} optimizer "
                        f"steps, fewer than min_steps {self.min_steps})")
            return (f"epochs auto: {self.epochs} epochs ({auto_steps} optimizer steps, at least min_steps "
                    f"{self.min_steps})")
        if self.total_steps < self.min_steps:
            auto = max(AUTO_EPOCHS, math.ceil(self.min_steps / self.steps_per_epoch))
            return (f"epochs {self.epochs}, as set: {self.total_steps} optimizer steps, fewer than min_steps "
                    f"{self.min_steps}, which only epochs: auto applies (it would train {auto} epochs)")
        return ""

    def _warmup_reason(self) -> str:
        if self.warmup_setting != Param.AUTO:
            return ""
        base = round(AUTO_WARMUP_EPOCHS * self.steps_per_epoch)
        reason = f"{AUTO_WARMUP_EPOCHS:g} epoch = {base} steps"
        if self.warmup_steps > base:
            reason += f", raised to {MIN_WARMUP_SHARE:.0%} of the run's {self.total_steps}"
        elif self.warmup_steps < base:
            reason += f", lowered to {MAX_WARMUP_SHARE:.0%} of the run's {self.total_steps}"
        return f"warmup_epochs auto: {self.warmup_steps} steps ({reason})"


def steps_per_epoch(images: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps of one epoch: every image once, in full batches, the images split over the ranks."""
    return math.ceil(math.ceil(images / world_size) / batch_size)


def epochs_for_steps(images: int, batch_size: int, steps: int, world_size: int = 1) -> int:
    """The fewest epochs with at least ``steps`` optimizer steps (at least 1): how the demo and the benchmarks ask
    for a run of a given length with a number of epochs."""
    return max(1, math.ceil(steps / steps_per_epoch(images, batch_size, world_size)))


def plan_schedule(images: int, batch_size: int, *, epochs: Setting, min_steps: int, warmup_epochs: Setting,
                  save_period: int, world_size: int = 1) -> Schedule:
    """The schedule of a run on ``images`` training images (see the module docstring); ``epochs`` and
    ``warmup_epochs`` are numbers or ``auto``.

    Raises ValueError for a non-positive image count, batch size, epoch count or world size, or a negative
    ``min_steps`` / ``save_period`` / ``warmup_epochs``.
    """
    auto_epochs, auto_warmup = epochs == Param.AUTO, warmup_epochs == Param.AUTO
    if isinstance(epochs, str) and not auto_epochs or isinstance(warmup_epochs, str) and not auto_warmup:
        raise ValueError(f"epochs and warmup_epochs must be numbers or {Param.AUTO!r}: {epochs!r}, {warmup_epochs!r}")
    if images < 1 or batch_size < 1 or world_size < 1 or not auto_epochs and float(epochs) < 1:
        raise ValueError(f"images, batch_size, epochs and world_size must be >= 1: {images}, {batch_size}, "
                         f"{epochs}, {world_size}")
    if min_steps < 0 or save_period < 0 or not auto_warmup and float(warmup_epochs) < 0:
        raise ValueError(f"min_steps, save_period and warmup_epochs must be >= 0: {min_steps}, {save_period}, "
                         f"{warmup_epochs}")
    per_epoch = steps_per_epoch(images, batch_size, world_size)
    run_epochs = max(AUTO_EPOCHS, math.ceil(min_steps / per_epoch)) if auto_epochs else int(epochs)
    total = per_epoch * run_epochs
    if auto_warmup:
        warmup = round(AUTO_WARMUP_EPOCHS * per_epoch)
        warmup = min(max(warmup, round(MIN_WARMUP_SHARE * total)), int(MAX_WARMUP_SHARE * total))
    else:
        warmup = round(float(warmup_epochs) * per_epoch)
    return Schedule(images=images, batch_size=batch_size, world_size=world_size, steps_per_epoch=per_epoch,
                    epochs=run_epochs, epochs_setting=epochs, min_steps=min_steps, warmup_steps=warmup,
                    warmup_setting=warmup_epochs, stage_epochs=tuple(stage_epochs(run_epochs, save_period)))


def _ranges(numbers: tuple[int, ...]) -> str:
    """``4, 8, ..., 40`` for an evenly spaced series longer than 4, else the numbers."""
    if len(numbers) > 4:
        steps = {b - a for a, b in zip(numbers, numbers[1:])}
        if len(steps) == 1:
            return f"{numbers[0]}, {numbers[1]}, ..., {numbers[-1]}"
        return f"{numbers[0]}, {numbers[1]}, ..., {numbers[-2]}, {numbers[-1]}"
    return ", ".join(map(str, numbers))

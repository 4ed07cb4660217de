"""The training schedule of one run, from the dataset size and the config (no torch here).

Epochs mean little on a small dataset: 36 images with batch 16 are 3 optimizer steps per epoch, and 30
epochs are 90 updates, far too few to train a detector from scratch. So:

* every epoch shows every training image at least once, in full batches (the sampler draws
  ``ceil(N / batch) * batch`` indices from back-to-back permutations; nothing is left out by ``drop_last``);
* a run has at least ``min_steps`` optimizer steps: on a small dataset the epoch count is raised to reach it,
  and the log says so and why;
* the warm-up lasts ``warmup_epochs`` epochs but at least 5 % of the run and at most 20 % of it;
* stages (evaluation + checkpoint) come every ``save_period`` epochs, or, with ``save_period`` 0, at about
  ``AUTO_EVALUATIONS`` evenly spaced epochs, which suits a 3-step and a 300-step epoch alike. The last epoch
  is always a stage.
"""

from __future__ import annotations

import dataclasses
import math

#: Stages of a run with ``save_period`` 0 (the SDK convention keeps the best + the 10 latest stages).
AUTO_EVALUATIONS = 10
#: The warm-up is at least this share of the run, and at most ``MAX_WARMUP_SHARE``.
MIN_WARMUP_SHARE = 0.05
MAX_WARMUP_SHARE = 0.2


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A run's plan in optimizer steps. ``images_per_epoch`` counts samples drawn per epoch over all ranks
    (at least the dataset size: the last batch is filled with images drawn again)."""

    images: int
    batch_size: int
    world_size: int
    steps_per_epoch: int
    epochs: int
    requested_epochs: int
    min_steps: int
    warmup_steps: int
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
        """The log's account of the schedule: steps, images seen, and why the epochs changed if they did."""
        repeated = self.images_per_epoch - self.images
        lines = [f"{self.images} training images, batch {self.batch_size} x {self.world_size} rank(s): "
                 f"{self.steps_per_epoch} optimizer steps per epoch, every image once per epoch"
                 + (f" ({repeated} drawn twice to fill the last batch)" if repeated else "")]
        if self.epochs != self.requested_epochs:
            lines.append(f"{self.requested_epochs} epochs would be {self.requested_epochs * self.steps_per_epoch} "
                         f"optimizer steps, fewer than config key 'min_steps' {self.min_steps}: training "
                         f"{self.epochs} epochs instead (set 'min_steps' to 0 to train exactly 'epochs')")
        lines.append(f"{self.epochs} epochs = {self.total_steps} optimizer steps, "
                     f"{self.total_steps * self.batch_size * self.world_size} images seen; warm-up "
                     f"{self.warmup_steps} steps; {len(self.stage_epochs)} stages, after epochs "
                     f"{_ranges(self.stage_epochs)}")
        return lines


def plan_schedule(images: int, batch_size: int, *, epochs: int, min_steps: int, warmup_epochs: float,
                  save_period: int, world_size: int = 1) -> Schedule:
    """The schedule of a run on ``images`` training images (see the module docstring).

    Raises ValueError for a non-positive image count, batch size, epoch count or world size, or a negative
    ``min_steps`` / ``save_period`` / ``warmup_epochs``.
    """
    if images < 1 or batch_size < 1 or epochs < 1 or world_size < 1:
        raise ValueError(f"images, batch_size, epochs and world_size must be >= 1: {images}, {batch_size}, "
                         f"{epochs}, {world_size}")
    if min_steps < 0 or save_period < 0 or warmup_epochs < 0:
        raise ValueError("min_steps, save_period and warmup_epochs must be >= 0")
    per_rank = math.ceil(images / world_size)
    steps_per_epoch = math.ceil(per_rank / batch_size)
    run_epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    total = steps_per_epoch * run_epochs
    warmup = round(warmup_epochs * steps_per_epoch)
    warmup = min(max(warmup, round(MIN_WARMUP_SHARE * total)), int(MAX_WARMUP_SHARE * total))
    if save_period:
        stages = {epoch for epoch in range(1, run_epochs + 1) if epoch % save_period == 0}
    else:
        count = min(AUTO_EVALUATIONS, run_epochs)
        stages = {math.ceil(run_epochs * (index + 1) / count) for index in range(count)}
    stages.add(run_epochs)
    return Schedule(images=images, batch_size=batch_size, world_size=world_size, steps_per_epoch=steps_per_epoch,
                    epochs=run_epochs, requested_epochs=epochs, min_steps=min_steps, warmup_steps=warmup,
                    stage_epochs=tuple(sorted(stages)))


def _ranges(numbers: tuple[int, ...]) -> str:
    """``4, 8, ..., 40`` for an evenly spaced series longer than 4, else the numbers."""
    if len(numbers) > 4:
        steps = {b - a for a, b in zip(numbers, numbers[1:])}
        if len(steps) == 1:
            return f"{numbers[0]}, {numbers[1]}, ..., {numbers[-1]}"
        return f"{numbers[0]}, {numbers[1]}, ..., {numbers[-2]}, {numbers[-1]}"
    return ", ".join(map(str, numbers))

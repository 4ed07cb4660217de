"""Stage evaluation for every engine, and the one rule that picks the deployed stage.

A training task writes model stages (result.yaml ``model_stages``); the platform deploys ``best_stage_name``. The
core owns both what a stage is measured by and which stage is the best, so the same validation numbers deploy the
same model whatever engine trained it:

- **When**: :func:`stage_epochs` (config key ``save_period``; the last epoch always).
- **What**: :class:`StageEvaluator` measures an engine's predictions on the validation set
  (:func:`ymir_runner.evaluation.evaluate_detections`: COCO mAP at ``map_iou_threshold``, COCO mAP50-95, tp/fp/fn
  at ``conf_threshold`` or each stage's F1-optimal score), writes its tensorboard scalars and pictures, and adds the
  stage to result.yaml with the deployed stage's pictures as ``attachments``.
- **Which stage is deployed**: the highest :func:`fitness`, ``0.1 * mAP + 0.9 * mAP50_95`` of the stage's own
  metrics (ultralytics' ``Metric.fitness``); of equal fitness, the later stage (trained longer). The training result
  (:class:`ymir_runner.protocol.results.TrainingResult`) ranks every stage by it: ``add_stage`` takes no fitness
  of an engine's own. Segmentation (object_type 3 / 4): the fitness is the main metric alone, ``mIoU`` / ``maskAP``
  (:func:`ymir_runner.protocol.results.main_metric`), the figure the platform shows as the model's; the same tie
  rule applies.

The built-in detector used to rank a stage by the mean fitness of itself and the two stages before it, on the
argument that one evaluation on a small validation set can be lucky by several points and three in a row rarely
are. That window is NOT the core's rule because it was never measured: no run compared the stages it picks with
the single stage's on data held out from both (stage noise on the real-photo benchmark). It also deploys a stage
by the merit of earlier, different weights. Measure it before adopting it, for every engine at once.

Engines call the API in this order (names are the template keys the core adds with
``ExecutorSpec(stage_evaluation=True)``)::

    evaluator = StageEvaluator(context, ground_truths, image_sizes, images)
    for epoch in stage_epochs(epochs, context.hyper.save_period):
        ...                                                  # train up to epoch, write the stage's files
        result = evaluator.evaluate(epoch, predictions)      # Prediction per validation image, stored pixels
        context.logger.info(evaluator.add_stage(f"epoch_{epoch}", files, result))
"""

from __future__ import annotations

import math
import os
import shutil
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from .evaluation import EvaluationResult, evaluate_detections
from .prediction import Prediction
from .protocol.results import STAGE_CONF_THR, fitness
from .records import AUTO_MAX_DETECTIONS, Param, evaluation_params

if TYPE_CHECKING:
    from .context import TaskContext

__all__ = ["fitness", "stage_epochs", "EVAL_COST", "evaluation_params", "StageEvaluator"]

#: An evaluated validation image costs about this many trained images (forward pass only: no augmentation, no
#: backward pass): the weight of the stage evaluations in a training task's progress.
EVAL_COST = 0.35
#: Stages of a run with ``save_period`` 0 (the SDK convention keeps the best + the 10 latest stages).
STAGE_COUNT = 10
#: The result.yaml ``attachments`` section that holds the deployed stage's pictures.
ATTACHMENT_SECTION = "images"


def stage_epochs(epochs: int, save_period: int) -> list[int]:
    """The epochs (1-based, ascending) that end with a stage: every ``save_period``-th, or with ``save_period`` 0
    ``STAGE_COUNT`` evenly spaced ones (``ceil(epochs * k / 10)``, k = 1..10: every epoch of a run of at most 10);
    the last epoch always.

    Raises:
        ValueError: ``epochs`` below 1 or ``save_period`` below 0.
    """
    if epochs < 1 or save_period < 0:
        raise ValueError(f"epochs must be at least 1 and save_period at least 0, got {epochs} and {save_period}")
    if save_period:
        chosen = set(range(save_period, epochs + 1, save_period))
    else:
        chosen = {math.ceil(epochs * k / STAGE_COUNT) for k in range(1, STAGE_COUNT + 1)}
    return sorted(chosen | {epochs})


class StageEvaluator:
    """Evaluates a training task's stages on its validation set and records them in result.yaml.

    ``ground_truths[i] = (boxes [N,4], classes [N])``: image i's objects, boxes ``x1, y1, x2, y2`` in pixel-edge
    coordinates of the STORED image, class ids into ``context.class_names``; ``image_sizes[i] = (width, height)``
    stored pixels; ``images[i]`` its path (for the pictures of validation images; may be empty).

    Reads config keys ``conf_threshold`` (0: each stage's F1-optimal score), ``map_iou_threshold`` and
    ``max_detections`` (``auto``: ``AUTO_MAX_DETECTIONS``, or the object count of the densest validation image
    when it has more; logged; a number below that count is warned about).

    Raises:
        ValueError: the lengths of ``ground_truths``, ``image_sizes`` and (when given) ``images`` differ.
    """

    #: Predictions given to :meth:`evaluate` should keep every box scoring at least this (ultralytics validates at
    #: 0.001): COCO's mAP integrates over the whole precision-recall curve.
    SCORE_FLOOR: ClassVar[float] = 0.001

    def __init__(self, context: TaskContext, ground_truths: Sequence[tuple[Any, Any]],
                 image_sizes: Sequence[tuple[int, int]], images: Sequence[str] = ()) -> None:
        if len(image_sizes) != len(ground_truths) or images and len(images) != len(ground_truths):
            raise ValueError(f"{len(ground_truths)} ground truths, {len(image_sizes)} image sizes and "
                             f"{len(images)} image paths: one each per validation image")
        self.context = context
        self.ground_truths = [(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64).reshape(-1))
                              for boxes, classes in ground_truths]
        self.image_sizes = [(int(width), int(height)) for width, height in image_sizes]
        self.images = tuple(images)
        self.class_names = list(context.class_names)
        defaults = {param.name: param.default for param in evaluation_params()}
        hyper = context.hyper
        conf_threshold = float(hyper.get("conf_threshold", defaults["conf_threshold"]))
        #: The score tp/fp/fn are counted at; None: each stage's F1-optimal score.
        self.score_threshold: float | None = conf_threshold or None
        self.iou_threshold = float(hyper.get("map_iou_threshold", defaults["map_iou_threshold"]))
        self.max_detections = self._max_detections(hyper.get("max_detections", defaults["max_detections"]))
        self._figures: tuple[EvaluationResult, Any] | None = None

    def _max_detections(self, setting: Any) -> int:
        densest = max((len(classes) for _, classes in self.ground_truths), default=0)
        logger = self.context.logger
        if setting == Param.AUTO:
            chosen = max(AUTO_MAX_DETECTIONS, densest)
            logger.info("max_detections auto: %d per validation image (at least %d; the densest validation image has "
                        "%d objects)", chosen, AUTO_MAX_DETECTIONS, densest)
            return chosen
        chosen = int(setting)
        if chosen < densest:
            logger.warning("config key 'max_detections' %d: the densest validation image has %d objects, so no stage "
                           "can find them all there (max_detections: auto would keep %d)", chosen, densest,
                           max(AUTO_MAX_DETECTIONS, densest))
        return chosen

    def evaluate(self, epoch: int, predictions: Sequence[Any]) -> EvaluationResult:
        """Measure one stage: ``predictions[i]`` (a :class:`ymir_runner.prediction.Prediction`, or anything with
        ``boxes [M,4]``, ``scores [M]``, ``classes [M]``) are image i's boxes in STORED pixels, down to
        :attr:`SCORE_FLOOR`; each image's ``max_detections`` best count.

        Writes the stage's tensorboard scalars (step ``epoch``) and its pictures (precision-recall curves, confusion
        matrix, validation images: :mod:`ymir_runner.pictures`) as optional outputs: their failure is counted, never
        raised. Returns the metrics, to give to :meth:`add_stage`.

        Raises:
            ValueError: not one prediction per validation image, or a class id outside ``context.class_names``.
        """
        context = self.context
        result = evaluate_detections(self.ground_truths, predictions, len(self.class_names),
                                     score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
                                     max_detections=self.max_detections, class_names=self.class_names,
                                     image_sizes=self.image_sizes)
        with context.optional_output("tensorboard metrics"):
            for tag, value in result.tensorboard_scalars(self.class_names).items():
                context.tensorboard.add_scalar(tag, value, epoch)
        self._figures = None
        with context.optional_output("stage pictures"):
            from . import pictures  # Pillow: imported only when a stage is evaluated

            # each image's max_detections best, as evaluate_detections counts them: the curves' AP is the metric's
            kept = [Prediction(p.boxes, p.scores, p.classes).best(self.max_detections) for p in predictions]
            figures = pictures.stage_figures(self.ground_truths, kept, class_names=self.class_names,
                                             score_threshold=result.score_threshold,
                                             iou_threshold=self.iou_threshold, images=self.images)
            self._figures = (result, figures)
            figures.to_tensorboard(context.tensorboard, epoch)
        return result

    def add_stage(self, name: str, files: Sequence[str], result: EvaluationResult) -> str:
        """Record stage ``name`` (its ``files`` already written in ``context.training_result.stage_dir(name)``)
        with ``result``'s metrics: ``mAP``, ``mAR``, ``mAP50_95``, ``conf_thr`` (the score its counts were made
        at) and ``tp``/``fp``/``fn``; ``evaluate_config.iou_thr`` is ``map_iou_threshold``. When the stage is now
        the deployed one (:func:`fitness`), its pictures replace the previous best's as result.yaml
        ``attachments`` (section ``images``; an optional output).

        Returns the summary line for the log, e.g.
        ``mAP@0.50 0.612 mAP50-95 0.401 tp/fp/fn 10/2/3 at score 0.310 -> epoch_5``.

        Raises:
            ValueError / OutputError: as ``TrainingResult.add_stage`` (bad name, missing files, disk).
        """
        results = self.context.training_result
        metrics = {**result.stage_metrics(), STAGE_CONF_THR: result.score_threshold}
        # evaluate_config labels mAP with its IoU; conf_thr comes from the best stage's conf_thr metric.
        results.set_evaluate_config(iou_thr=self.iou_threshold)
        results.add_stage(name, files, metrics, result.stage_counts())
        best = results.best
        if best is not None and best.name == name:
            self._attach(name, result)
        return (f"mAP@{self.iou_threshold:.2f} {metrics['mAP']:.3f} mAP50-95 {metrics['mAP50_95']:.3f} "
                f"tp/fp/fn {result.true_positives}/{result.false_positives}/{result.false_negatives} at score "
                f"{result.score_threshold:.3f} -> {name}")

    def _attach(self, name: str, result: EvaluationResult) -> None:
        """The deployed stage's pictures as the ``images`` attachments; none when its pictures failed (the previous
        best's would describe a stage that is not deployed)."""
        figures = self._figures[1] if self._figures is not None and self._figures[0] is result else None
        with self.context.optional_output("attachments"):
            folder = os.path.join(self.context.work_dir, "stage-pictures")
            shutil.rmtree(folder, ignore_errors=True)
            paths = figures.save(folder) if figures is not None else []
            self.context.training_result.replace_attachments(ATTACHMENT_SECTION, paths)

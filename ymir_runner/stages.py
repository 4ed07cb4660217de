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

Segmentation (config ``object_type`` 3 or 4) uses the same three calls: ``ground_truths[i]`` is image i's objects
as :class:`~ymir_runner.seg_evaluation.SegObject` (:func:`seg_ground_truth` makes them from a validation
:class:`~ymir_runner.protocol.dataset.Item`; an ``Item`` itself is taken too), and ``predictions[i]`` what the
inference writer (:class:`~ymir_runner.protocol.results.SegInferResult`) takes for that image: a label map
``[H, W]`` (type 3, as ``add_label_map``), :class:`~ymir_runner.protocol.results.InstanceMask` objects (type 4, as
``add``), or :class:`~ymir_runner.protocol.results.EncodedMask` / ``SegObject`` objects (as ``add_encoded``). Each
stage's predictions are encoded by that writer and read back as the platform reads infer-result.json, then scored
by :mod:`ymir_runner.seg_evaluation` as the platform scores them: a stage's metrics are exactly what
``ymir-runner evaluate`` gives for the same model's inference output on the validation set.
"""

from __future__ import annotations

import math
import os
import shutil
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from .errors import ConfigError
from .evaluation import EvaluationResult, evaluate_detections
from .prediction import Prediction
from .protocol.results import (
    DETECTION,
    INSTANCE_SEGMENTATION,
    SEGMENTATION_TYPES,
    STAGE_CONF_THR,
    EncodedMask,
    InstanceMask,
    SegInferResult,
    fitness,
)
from .records import AUTO_MAX_DETECTIONS, Param, evaluation_params
from .seg_evaluation import (
    InstanceScores,
    SegObject,
    SemanticScores,
    asset_key,
    coco_rle,
    instance_scores,
    read_coco_objects,
    semantic_scores,
)

if TYPE_CHECKING:
    from .context import TaskContext
    from .protocol.dataset import Item

__all__ = ["fitness", "stage_epochs", "EVAL_COST", "evaluation_params", "StageEvaluator", "seg_ground_truth"]

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

    Detection (config ``object_type`` 2): ``ground_truths[i] = (boxes [N,4], classes [N])``: image i's objects,
    boxes ``x1, y1, x2, y2`` in pixel-edge coordinates of the STORED image, class ids into ``context.class_names``.
    Segmentation (3 or 4): ``ground_truths[i]`` image i's objects as :class:`~ymir_runner.seg_evaluation.SegObject`
    (:func:`seg_ground_truth`), or the validation :class:`~ymir_runner.protocol.dataset.Item` itself.
    ``image_sizes[i] = (width, height)`` stored pixels; ``images[i]`` its path (for the pictures of validation
    images; may be empty).

    Reads config keys ``conf_threshold`` (0: each stage's F1-optimal score; segmentation: 0 keeps every
    prediction), ``map_iou_threshold`` (segmentation: the IoU of ``maskAP`` / ``boxAP`` and tp/fp/fn; semantic
    scores use none) and ``max_detections`` (detection only: ``auto``: ``AUTO_MAX_DETECTIONS``, or the object
    count of the densest validation image when it has more; logged; a number below that count is warned about;
    instance segmentation keeps the platform's 100 per image and class).

    Raises:
        ValueError: the lengths of ``ground_truths``, ``image_sizes`` and (when given) ``images`` differ; two
            validation images of one name (segmentation: the platform keys images by name).
        ConfigError: semantic segmentation of more than 254 classes (the platform's uint8 label map).
    """

    #: Predictions given to :meth:`evaluate` should keep every box scoring at least this (ultralytics validates at
    #: 0.001): COCO's mAP integrates over the whole precision-recall curve.
    SCORE_FLOOR: ClassVar[float] = 0.001

    def __init__(self, context: TaskContext, ground_truths: Sequence[Any],
                 image_sizes: Sequence[tuple[int, int]], images: Sequence[str] = ()) -> None:
        if len(image_sizes) != len(ground_truths) or images and len(images) != len(ground_truths):
            raise ValueError(f"{len(ground_truths)} ground truths, {len(image_sizes)} image sizes and "
                             f"{len(images)} image paths: one each per validation image")
        self.context = context
        config = getattr(context, "config", None)
        #: The task's object type (2 detection, 3 semantic, 4 instance segmentation).
        self.object_type = int(getattr(config, "object_type", DETECTION))
        self.image_sizes = [(int(width), int(height)) for width, height in image_sizes]
        self.images = tuple(images)
        self.class_names = list(context.class_names)
        defaults = {param.name: param.default for param in evaluation_params()}
        hyper = context.hyper
        conf_threshold = float(hyper.get("conf_threshold", defaults["conf_threshold"]))
        #: The score tp/fp/fn are counted at; None: each stage's F1-optimal score (detection).
        self.score_threshold: float | None = conf_threshold or None
        self.iou_threshold = float(hyper.get("map_iou_threshold", defaults["map_iou_threshold"]))
        self._figures: tuple[EvaluationResult, Any] | None = None
        if self.object_type in SEGMENTATION_TYPES:
            self.ground_truths: list[Any] = []
            self.max_detections = 0
            self._seg_setup(ground_truths, conf_threshold)
            return
        self.ground_truths = [(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64).reshape(-1))
                              for boxes, classes in ground_truths]
        self.max_detections = self._max_detections(hyper.get("max_detections", defaults["max_detections"]))

    def _seg_setup(self, ground_truths: Sequence[Any], conf_threshold: float) -> None:
        """Segmentation: the validation images keyed as the platform keys them (name without extension), their
        ground truth as it imports the seg-coco file, and the thresholds of ``evaluate_config``."""
        from .protocol.masks import IGNORE_LABEL  # faster-coco-eval: imported when a seg task evaluates

        if self.object_type != INSTANCE_SEGMENTATION and len(self.class_names) >= IGNORE_LABEL:
            raise ConfigError(f"config key 'class_names': {len(self.class_names)} classes, and the platform scores "
                              f"semantic segmentation on a uint8 label map of at most {IGNORE_LABEL - 1} classes "
                              f"({IGNORE_LABEL}: unlabelled): no stage could be measured")
        #: The conf_thr predictions are filtered at before instance scoring (the platform's order), 0: none.
        self.conf_threshold = conf_threshold
        #: ``maskAP`` / ``boxAP`` IoU thresholds as the platform labels them (``evaluate_config.iou_thr``).
        self.iou_thrs = str(self.iou_threshold)
        self.names = ([os.path.basename(image) for image in self.images] if self.images else
                      [f"{index:06d}.png" for index in range(len(self.image_sizes))])
        keys = [asset_key(name) for name in self.names]
        if len(set(keys)) != len(keys):
            twice = sorted({key for key in keys if keys.count(key) > 1})
            raise ValueError(f"validation images of the same name {twice[:3]}: the platform keys images by name")
        self.keys = keys
        self.seg_sizes = {key: (height, width) for key, (width, height) in zip(keys, self.image_sizes)}
        self.seg_truth = {key: (seg_ground_truth(truth) if hasattr(truth, "segments") else list(truth))
                          for key, truth in zip(keys, ground_truths)}

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

    def evaluate(self, epoch: int, predictions: Sequence[Any]) -> Any:
        """Measure one stage: ``predictions[i]`` (a :class:`ymir_runner.prediction.Prediction`, or anything with
        ``boxes [M,4]``, ``scores [M]``, ``classes [M]``) are image i's boxes in STORED pixels, down to
        :attr:`SCORE_FLOOR`; each image's ``max_detections`` best count. Segmentation: see :meth:`evaluate_seg`.

        Writes the stage's tensorboard scalars (step ``epoch``) and its pictures (precision-recall curves, confusion
        matrix, validation images: :mod:`ymir_runner.pictures`) as optional outputs: their failure is counted, never
        raised. Returns the metrics, to give to :meth:`add_stage`.

        Raises:
            ValueError: not one prediction per validation image, or a class id outside ``context.class_names``.
        """
        if self.object_type in SEGMENTATION_TYPES:
            return self.evaluate_seg(epoch, predictions)
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

    def evaluate_seg(self, epoch: int, predictions: Sequence[Any]) -> SemanticScores | InstanceScores:
        """Measure one stage of a segmentation task: ``predictions[i]`` is image i's result in STORED pixels as the
        inference writer takes it: a label map ``[H, W]`` of class ids, 255 unlabelled (type 3), a sequence of
        :class:`~ymir_runner.protocol.results.InstanceMask` (type 4), or of
        :class:`~ymir_runner.protocol.results.EncodedMask` / :class:`~ymir_runner.seg_evaluation.SegObject`
        (either type; type 3 merges a class's objects). They are encoded as infer-result.json holds them and read
        back as the platform reads it (an empty mask left out, of one class and int bbox the best only), then
        scored over every class: type 3 ``mIoU``, ``mAcc``, ``aAcc``; type 4 ``maskAP``, ``boxAP``,
        ``maskAP50_95`` and tp/fp/fn at ``map_iou_threshold``, predictions scoring below ``conf_threshold`` left
        out first. Never -1 or NaN: an evaluation with nothing to measure scores 0 (logged). Writes the scores as
        tensorboard scalars (``val/<metric>``, an optional output).

        Raises:
            ValueError: not one prediction per validation image, or one the writer refuses (a mask of another
                size, a class id outside the class names, a score outside [0, 1]).
        """
        if len(predictions) != len(self.keys):
            raise ValueError(f"{len(predictions)} predictions for {len(self.keys)} validation images: one each")
        writer = SegInferResult(os.devnull, self.class_names, self.object_type)  # encodes, never written
        for name, (width, height), found in zip(self.names, self.image_sizes, predictions):
            self._add_prediction(writer, name, width, height, found)
        predicted, _ = read_coco_objects(writer.to_json(), self.class_names, image_sizes=self.seg_sizes,
                                         source="stage predictions")
        class_ids = list(range(len(self.class_names)))
        result: SemanticScores | InstanceScores
        if self.object_type == INSTANCE_SEGMENTATION:
            result = instance_scores(self.seg_truth, predicted, class_ids, iou_thrs=self.iou_thrs,
                                     conf_thr=self.conf_threshold, class_names=self.class_names)
        else:
            result = semantic_scores(self.seg_truth, predicted, self.seg_sizes, class_ids, self.class_names)
        with self.context.optional_output("tensorboard metrics"):
            scalars = {**result.stage_metrics(),
                       **(result.stage_counts() if isinstance(result, InstanceScores) else {})}
            for key, value in scalars.items():
                self.context.tensorboard.add_scalar(f"val/{key}", float(value), epoch)
        return result

    def _add_prediction(self, writer: SegInferResult, name: str, width: int, height: int, found: Any) -> None:
        if isinstance(found, np.ndarray):
            writer.add_label_map(name, found, width, height)
            return
        objects = list(found)
        if not objects:
            writer.add_empty(name, width, height)
        elif all(isinstance(item, InstanceMask) for item in objects):
            writer.add(name, objects, width, height)
        elif all(isinstance(item, (EncodedMask, SegObject)) for item in objects):
            writer.add_encoded(name, [item if isinstance(item, EncodedMask) else
                                      EncodedMask(dict(item.rle), item.score, item.class_id) for item in objects],
                               width, height)
        else:
            raise ValueError(f"{name}: predictions of a segmentation stage are a label map, InstanceMask objects, "
                             f"or EncodedMask / SegObject objects, not {sorted({type(i).__name__ for i in objects})}")

    def add_stage(self, name: str, files: Sequence[str], result: Any) -> str:
        """Record stage ``name`` (its ``files`` already written in ``context.training_result.stage_dir(name)``)
        with ``result``'s metrics: ``mAP``, ``mAR``, ``mAP50_95``, ``conf_thr`` (the score its counts were made
        at) and ``tp``/``fp``/``fn``; ``evaluate_config.iou_thr`` is ``map_iou_threshold``. When the stage is now
        the deployed one (:func:`fitness`), its pictures replace the previous best's as result.yaml
        ``attachments`` (section ``images``; an optional output). Segmentation: type 3 ``mIoU``, ``mAcc`` and
        ``aAcc`` (kept in the model package; the platform lists the first two); type 4 ``maskAP``, ``boxAP``,
        ``maskAP50_95``, ``conf_thr`` (predictions below it were left out) and ``tp``/``fp``/``fn``, with
        ``evaluate_config.iou_thr`` ``map_iou_threshold``; no pictures.

        Returns the summary line for the log, e.g.
        ``mAP@0.50 0.612 mAP50-95 0.401 tp/fp/fn 10/2/3 at score 0.310 -> epoch_5``,
        ``mIoU 0.612 mAcc 0.700 aAcc 0.910 -> epoch_5`` or
        ``maskAP@0.5 0.512 boxAP@0.5 0.601 maskAP50-95 0.330 tp/fp/fn 10/2/3 at conf_thr 0.000 -> epoch_5``.

        Raises:
            ValueError / OutputError: as ``TrainingResult.add_stage`` (bad name, missing files, disk).
        """
        if isinstance(result, (SemanticScores, InstanceScores)):
            return self._add_seg_stage(name, files, result)
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

    def _add_seg_stage(self, name: str, files: Sequence[str], result: SemanticScores | InstanceScores) -> str:
        results = self.context.training_result
        metrics = {key: _never_undefined(key, value, self.context) for key, value in result.stage_metrics().items()}
        if isinstance(result, SemanticScores):
            results.add_stage(name, files, metrics)
            return f"mIoU {metrics['mIoU']:.3f} mAcc {metrics['mAcc']:.3f} aAcc {metrics['aAcc']:.3f} -> {name}"
        metrics[STAGE_CONF_THR] = result.conf_thr
        results.set_evaluate_config(iou_thr=self.iou_threshold)
        results.add_stage(name, files, metrics, result.stage_counts())
        return (f"maskAP@{result.iou_thrs} {metrics['maskAP']:.3f} boxAP@{result.iou_thrs} {metrics['boxAP']:.3f} "
                f"maskAP50-95 {metrics['maskAP50_95']:.3f} tp/fp/fn {result.tp}/{result.fp}/{result.fn} at "
                f"conf_thr {result.conf_thr:.3f} -> {name}")

    def _attach(self, name: str, result: EvaluationResult) -> None:
        """The deployed stage's pictures as the ``images`` attachments; none when its pictures failed (the previous
        best's would describe a stage that is not deployed)."""
        figures = self._figures[1] if self._figures is not None and self._figures[0] is result else None
        with self.context.optional_output("attachments"):
            folder = os.path.join(self.context.work_dir, "stage-pictures")
            shutil.rmtree(folder, ignore_errors=True)
            paths = figures.save(folder) if figures is not None else []
            self.context.training_result.replace_attachments(ATTACHMENT_SECTION, paths)


def _never_undefined(key: str, value: float, context: Any) -> float:
    """A stage metric as the platform accepts it: a -1 or NaN fails the whole model, so 0 (and the log says so).
    :mod:`ymir_runner.seg_evaluation` already scores an empty evaluation 0: this is the last guard."""
    if math.isfinite(value) and 0.0 <= value <= 1.0:
        return float(value)
    context.logger.warning("stage metric %s is %r: written as 0 (the platform rejects a model with -1 or NaN)",
                           key, value)
    return 0.0


def seg_ground_truth(item: Item) -> list[SegObject]:
    """A validation item's objects (object_type 3 or 4, :attr:`~ymir_runner.protocol.dataset.Item.segments`) as
    the platform imports the seg-coco file it came from, for :class:`StageEvaluator`: in file order, each mask the
    compressed RLE the platform decodes (an RLE at the stored size; polygon points truncated to ints, then COCO's
    rasteriser), crowd flags kept, the int ``bbox`` of the file (boxes are ints in the platform's export; the
    reader's clipped box when it left the image), and of one class and int box in an image the first object only
    (the platform drops the later one)."""
    from .protocol.masks import MaskProblem, rle_area

    objects: list[SegObject] = []
    seen: set[tuple[int, tuple[int, int, int, int]]] = set()
    for box, segment in zip(item.boxes, item.segments):
        # int() as the platform truncates; the epsilon undoes (x + w) - x rounding below an int w
        bbox = (int(box.x1), int(box.y1), int(box.width + 1e-9), int(box.height + 1e-9))
        if bbox[2] <= 0 or bbox[3] <= 0 or (segment.class_id, bbox) in seen:
            continue
        try:
            rle = coco_rle(segment.segmentation, item.height, item.width)
        except MaskProblem:  # the reader checked every mask: nothing is left to skip here
            continue
        seen.add((segment.class_id, bbox))
        objects.append(SegObject(segment.class_id, rle, bbox, rle_area(rle), int(segment.iscrowd)))
    return objects

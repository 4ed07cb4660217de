"""Detection metrics for a model stage: COCO mAP (faster-coco-eval) plus tp/fp/fn at an operating point.

For any plugin: give ground truth and predictions per validation image, get an :class:`EvaluationResult`
whose :meth:`~EvaluationResult.stage_metrics` and :meth:`~EvaluationResult.stage_counts` go straight into
``context.training_result.add_stage(name, files, metrics, counts)``.

Ground truth per image: ``(boxes [N,4], classes [N])``; predictions per image:
:class:`~.decode.Detections` or ``(boxes [M,4], scores [M], classes [M])``.
Boxes are ``x1, y1, x2, y2`` pixel-edge coordinates of the same image space.

Definitions (COCO's, from pycocotools' ``COCOeval``, computed by faster-coco-eval): AP is the area under the
101-point interpolated precision/recall curve of one class, mAP its mean over the classes that have ground
truth. ``map`` / ``mar`` are AP / recall at ONE IoU threshold (``iou_threshold``, 0.5 by default: the value
YMIR labels its ``mAP`` with), ``map50_95`` the mean of AP over the IoU thresholds 0.50, 0.55, ..., 0.95.
Each image contributes at most ``max_detections`` predictions, its best whatever their class (100 by default:
raise it for scenes with more objects; COCO's maxDets, which limits each image and class, is set alike).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["EvaluationResult", "evaluate_detections", "coco_metrics", "match_predictions", "match_counts",
           "f1_optimal_threshold", "box_iou", "COCO_IOU_THRESHOLDS", "DEFAULT_MAX_DETECTIONS",
           "DEFAULT_SCORE_THRESHOLD", "PRCurve", "pr_curves", "confusion_matrix"]

GroundTruth = tuple[np.ndarray, np.ndarray]
Prediction = tuple[np.ndarray, np.ndarray, np.ndarray]

#: COCO's IoU thresholds for mAP50-95: 0.50, 0.55, ..., 0.95.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
DEFAULT_MAX_DETECTIONS = 100
#: The operating point of tp/fp/fn when nothing better is known (no ground truth to choose one from).
DEFAULT_SCORE_THRESHOLD = 0.25


@dataclass
class EvaluationResult:
    """Detection metrics; ``None`` means undefined (no ground truth to measure against)."""

    map: float | None  # AP at iou_threshold, mean over classes
    mar: float | None  # recall at iou_threshold with max_detections per image, mean over classes
    map50_95: float | None
    map50: float | None
    mar50_95: float | None  # recall averaged over the IoUs 0.50:0.95, max_detections per image
    per_class_ap: dict[int, float | None]  # AP@[.50:.95] per class id; None = class has no GT
    per_class_ap50: dict[int, float | None]
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    score_threshold: float
    num_images: int
    iou_threshold: float = 0.5
    max_detections: int = DEFAULT_MAX_DETECTIONS
    class_names: list[str] = field(default_factory=list)

    def stage_metrics(self) -> dict[str, float]:
        """The metrics of a model stage in result.yaml: ``mAP`` and ``mAR`` at ``iou_threshold`` (the IoU the
        platform labels ``mAP`` with: record it with ``set_evaluate_config(iou_thr=...)``) and COCO
        ``mAP50_95``; an undefined value (no ground truth) is 0."""
        return {"mAP": self.map or 0.0, "mAR": self.mar or 0.0, "mAP50_95": self.map50_95 or 0.0}

    def stage_counts(self) -> dict[str, int]:
        """``tp``, ``fp`` and ``fn`` at ``score_threshold`` and ``iou_threshold``, for result.yaml."""
        return {"tp": self.true_positives, "fp": self.false_positives, "fn": self.false_negatives}

    def tensorboard_scalars(self, class_names: Sequence[str] | None = None) -> dict[str, float]:
        """``tag -> value`` of this evaluation for a stage's tensorboard scalars: ``val/mAP`` and ``val/mAR`` (at
        ``iou_threshold``), ``val/mAP50``, ``val/mAP50_95``, ``val/mAR50_95``, ``val/precision`` and
        ``val/recall`` (at ``score_threshold``), and ``val_AP50_95/<class name>`` per class (names from
        ``class_names``, else this result's, else the class id). Undefined values (no ground truth) are left out."""
        names = list(class_names or self.class_names)
        scalars = {"mAP": self.map, "mAR": self.mar, "mAP50": self.map50, "mAP50_95": self.map50_95,
                   "mAR50_95": self.mar50_95, "precision": self.precision, "recall": self.recall}
        tags = {f"val/{key}": float(value) for key, value in scalars.items() if value is not None}
        for class_id, ap in self.per_class_ap.items():
            if ap is not None:
                tags[f"val_AP50_95/{names[class_id] if class_id < len(names) else class_id}"] = float(ap)
        return tags

    def to_dict(self) -> dict:
        """Plain-Python dict (JSON-serialisable; per-class keys are class names when known)."""
        result = asdict(self)
        if self.class_names:
            for key in ("per_class_ap", "per_class_ap50"):
                result[key] = {self.class_names[c]: ap for c, ap in result[key].items()}
        return result


def _as_prediction(prediction: Any) -> Prediction:
    if hasattr(prediction, "boxes"):
        return prediction.boxes, prediction.scores, prediction.classes
    return prediction


def _xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _build_coco(ground_truths: Sequence[GroundTruth], predictions: Sequence[Any], class_ids: Sequence[int],
                image_sizes: Sequence[tuple[int, int]] | None) -> tuple[Any, Any]:
    images: list[dict[str, Any]] = []
    gt_anns: list[dict[str, Any]] = []
    dt_anns: list[dict[str, Any]] = []
    for image_id, ((gt_boxes, gt_classes), prediction) in enumerate(zip(ground_truths, predictions), start=1):
        width, height = image_sizes[image_id - 1] if image_sizes else (100000, 100000)
        images.append({"id": image_id, "width": int(width), "height": int(height)})
        for box, cls in zip(_xywh(gt_boxes), np.asarray(gt_classes).reshape(-1)):
            gt_anns.append({
                "id": len(gt_anns) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0,
            })
        boxes, scores, classes = _as_prediction(prediction)
        for box, score, cls in zip(_xywh(boxes), np.asarray(scores).reshape(-1), np.asarray(classes).reshape(-1)):
            dt_anns.append({"image_id": image_id, "category_id": int(cls) + 1, "bbox": box.tolist(),
                            "score": float(score)})
    from faster_coco_eval import COCO

    categories = [{"id": c + 1, "name": str(c)} for c in class_ids]
    coco_gt = COCO({"images": images, "annotations": gt_anns, "categories": categories})
    return coco_gt, coco_gt.loadRes(dt_anns)


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def coco_metrics(
    ground_truths: Sequence[GroundTruth], predictions: Sequence[Any], num_classes: int,
    image_sizes: Sequence[tuple[int, int]] | None = None, *,
    iou_threshold: float = 0.5, max_detections: int = DEFAULT_MAX_DETECTIONS,
) -> dict:
    """AP / recall at ``iou_threshold``, mAP@[.5:.95], mAP@.5, recall@[.5:.95] and per-class APs (COCO
    definitions, at most ``max_detections`` predictions per image, all object sizes).

    Only the classes present in the ground truth or the predictions are evaluated: any other class has no
    ground truth, so COCO leaves it out of every mean anyway (its AP is None), while its time and memory would
    grow with the number of classes times the images (10,000 ``class_names`` took 293 s and 4.3 GB).

    Raises ``ValueError`` for an ``iou_threshold`` outside (0, 1) or ``max_detections`` < 1.
    """
    if not 0.0 < iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
    if max_detections < 1:
        raise ValueError(f"max_detections must be at least 1, got {max_detections}")
    from faster_coco_eval import COCOeval_faster

    labels = [np.asarray(truth[1]).reshape(-1) for truth in ground_truths]
    labels += [np.asarray(_as_prediction(prediction)[2]).reshape(-1) for prediction in predictions]
    present = np.unique(np.concatenate(labels).astype(np.int64)).tolist() if labels else []
    present = present or [0]  # nothing at all: one class without ground truth, every value undefined
    column = {c: k for k, c in enumerate(present)}  # class id -> its place on COCO's class axis
    coco_gt, coco_dt = _build_coco(ground_truths, predictions, present, image_sizes)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *args, **kwargs: None)
    evaluator.params.catIds = [c + 1 for c in present]
    thresholds = np.round(np.union1d(COCO_IOU_THRESHOLDS, [iou_threshold]), 10)
    evaluator.params.iouThrs = thresholds
    evaluator.params.maxDets = sorted({1, 10, int(max_detections)})
    evaluator.evaluate()
    evaluator.accumulate()
    # precision: [iou T, recall R, class K, area A, maxDets M]; -1 marks "no GT" entries.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    recall = evaluator.eval["recall"][:, :, 0, -1]
    coco = np.isin(thresholds, np.round(COCO_IOU_THRESHOLDS, 10))
    at = int(np.argmin(np.abs(thresholds - iou_threshold)))
    at_50 = int(np.argmin(np.abs(thresholds - 0.5)))
    return {
        "map": _mean_valid(precision[at]),
        "mar": _mean_valid(recall[at]),
        "map50_95": _mean_valid(precision[coco]),
        "map50": _mean_valid(precision[at_50]),
        "mar50_95": _mean_valid(recall[coco]),
        "per_class_ap": {c: _mean_valid(precision[coco][:, :, column[c]]) if c in column else None
                         for c in range(num_classes)},
        "per_class_ap50": {c: _mean_valid(precision[at_50, :, column[c]]) if c in column else None
                           for c in range(num_classes)},
    }


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[N,M]`` of pixel-edge boxes ``a [N,4]`` and ``b [M,4]`` (``x1, y1, x2, y2``)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def match_predictions(
    ground_truths: Sequence[GroundTruth], predictions: Sequence, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, int]:
    """Every prediction's score and whether it is a true positive, and the number of ground-truth boxes.

    Per image and class, predictions are matched greedily in decreasing score order to the unmatched ground
    truth box of highest IoU, when that IoU is at least ``iou_threshold`` (COCO's and the VOC devkit's rule).
    A prediction's match never depends on lower-scored ones, so the tp/fp/fn of any score threshold follow
    from one matching: see :func:`match_counts` and :func:`f1_optimal_threshold`.

    Returns ``(scores [P], true_positive [P] bool, ground_truth_count)``.
    """
    all_scores, all_flags, total_gt = [], [], 0
    for (gt_boxes, gt_classes), prediction in zip(ground_truths, predictions):
        boxes, scores, classes = (np.asarray(a) for a in _as_prediction(prediction))
        boxes, scores, classes = boxes.reshape(-1, 4), scores.reshape(-1), classes.reshape(-1)
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        gt_classes = np.asarray(gt_classes).reshape(-1)
        total_gt += len(gt_classes)
        for cls in np.unique(classes):
            cls_gt = gt_boxes[gt_classes == cls]
            cls_scores = scores[classes == cls]
            order = np.argsort(-cls_scores, kind="stable")
            cls_pred = boxes[classes == cls][order].astype(np.float64)
            flags = np.zeros(len(cls_pred), dtype=bool)
            if len(cls_gt):
                matched = np.zeros(len(cls_gt), dtype=bool)
                iou = box_iou(cls_pred, cls_gt)
                for p in range(len(cls_pred)):
                    candidates = np.where(matched, -1.0, iou[p])
                    best = int(np.argmax(candidates))
                    if candidates[best] >= iou_threshold:
                        matched[best] = flags[p] = True
            all_scores.append(cls_scores[order].astype(np.float64))
            all_flags.append(flags)
    if not all_scores:
        return np.zeros(0), np.zeros(0, dtype=bool), total_gt
    return np.concatenate(all_scores), np.concatenate(all_flags), total_gt


def match_counts(
    ground_truths: Sequence[GroundTruth], predictions: Sequence, score_threshold: float, iou_threshold: float = 0.5
) -> tuple[int, int, int]:
    """(tp, fp, fn) of the predictions scoring at least ``score_threshold`` (matching: :func:`match_predictions`)."""
    scores, true_positive, total_gt = match_predictions(ground_truths, predictions, iou_threshold)
    kept = scores >= score_threshold
    tp = int(true_positive[kept].sum())
    return tp, int(kept.sum()) - tp, total_gt - tp


def f1_optimal_threshold(
    ground_truths: Sequence[GroundTruth], predictions: Sequence, iou_threshold: float = 0.5,
    default: float = DEFAULT_SCORE_THRESHOLD,
) -> tuple[float, float]:
    """The score threshold that maximises F1 = 2 tp / (2 tp + fp + fn) over the images, and that F1.

    The candidates are the predictions' own scores (a box counts when its score >= the threshold); of equal
    F1, the highest threshold wins (fewer boxes, same quality). ``(default, 0.0)`` when there is no ground
    truth or no true positive at all: then no threshold is better than another.
    """
    scores, true_positive, total_gt = match_predictions(ground_truths, predictions, iou_threshold)
    if total_gt == 0 or not true_positive.any():
        return float(default), 0.0
    order = np.argsort(-scores, kind="stable")
    scores, true_positive = scores[order], true_positive[order]
    tp = np.cumsum(true_positive)
    kept = np.arange(1, len(scores) + 1)
    # Only the last box of a run of equal scores is a threshold: the others cannot be kept without it.
    last_of_score = np.append(scores[1:] != scores[:-1], True)
    f1 = np.where(last_of_score, 2.0 * tp / (kept + total_gt), -1.0)
    best = int(np.argmax(f1))
    return float(scores[best]), float(f1[best])


def evaluate_detections(
    ground_truths: Sequence[GroundTruth],
    predictions: Sequence,
    num_classes: int,
    *,
    score_threshold: float | None = DEFAULT_SCORE_THRESHOLD,
    iou_threshold: float = 0.5,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    class_names: Sequence[str] | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
) -> EvaluationResult:
    """COCO metrics (see :func:`coco_metrics`) plus tp/fp/fn (at ``score_threshold``, IoU ``iou_threshold``)
    over a set of images. Only each image's ``max_detections`` best predictions count, whatever their class (as
    the decoder keeps them; COCO's own maxDets limits each image AND class). ``score_threshold=None`` counts
    tp/fp/fn at the F1-optimal threshold of these images (:func:`f1_optimal_threshold`); the result's
    ``score_threshold`` is the one used."""
    if len(ground_truths) != len(predictions):
        raise ValueError(f"{len(ground_truths)} ground truths but {len(predictions)} predictions")
    for prediction in predictions:
        classes = np.asarray(_as_prediction(prediction)[2]).reshape(-1)
        if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
            raise ValueError(f"predicted class ids must be in [0, {num_classes})")
    predictions = [_best(prediction, max_detections) for prediction in predictions]
    coco = coco_metrics(ground_truths, predictions, num_classes, image_sizes, iou_threshold=iou_threshold,
                        max_detections=max_detections)
    if score_threshold is None:
        score_threshold = f1_optimal_threshold(ground_truths, predictions, iou_threshold)[0]
    tp, fp, fn = match_counts(ground_truths, predictions, score_threshold, iou_threshold)
    return EvaluationResult(
        **coco,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / (tp + fn) if tp + fn else 0.0,
        score_threshold=score_threshold,
        num_images=len(ground_truths),
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        class_names=list(class_names or []),
    )


def _best(prediction: Any, max_detections: int) -> Prediction:
    """The ``max_detections`` highest-scoring predictions of one image, whatever their class."""
    boxes, scores, classes = (np.asarray(a) for a in _as_prediction(prediction))
    scores = scores.reshape(-1)
    if scores.size <= max_detections:
        return boxes, scores, classes
    keep = np.argsort(-scores, kind="stable")[:max_detections]
    return boxes.reshape(-1, 4)[keep], scores[keep], classes.reshape(-1)[keep]


@dataclass(frozen=True)
class PRCurve:
    """The precision-recall curve of one class at one IoU threshold: one point per prediction of the class.

    ``scores [K]`` the class's prediction scores in decreasing order (ties in image order, as COCO sorts them);
    ``true_positives [K]`` int64, how many of the first ``k + 1`` predictions are true positives (the matching of
    :func:`match_predictions`); ``ground_truth`` the class's number of ground-truth boxes. Keeping the
    predictions that score at least ``scores[k]`` gives point ``k``.
    """

    class_id: int
    ground_truth: int
    scores: np.ndarray
    true_positives: np.ndarray

    @property
    def false_positives(self) -> np.ndarray:
        """``[K]`` int64: how many of the first ``k + 1`` predictions are false positives."""
        return np.arange(1, len(self.scores) + 1, dtype=np.int64) - self.true_positives

    @property
    def precision(self) -> np.ndarray:
        """``[K]`` float64: tp / (tp + fp) at each point."""
        return self.true_positives / np.arange(1, len(self.scores) + 1, dtype=np.float64)

    @property
    def recall(self) -> np.ndarray:
        """``[K]`` float64: tp / ground truth at each point; 0 when the class has no ground truth."""
        return self.true_positives / max(self.ground_truth, 1)

    def counts(self, score_threshold: float) -> tuple[int, int, int]:
        """``(tp, fp, fn)`` of this class's predictions scoring at least ``score_threshold``: summed over the
        classes, :func:`match_counts` at the same thresholds."""
        kept = int(np.searchsorted(-self.scores, -score_threshold, side="right"))
        tp = int(self.true_positives[kept - 1]) if kept else 0
        return tp, kept - tp, self.ground_truth - tp

    def sampled_precision(self) -> np.ndarray:
        """``[101]``: COCO's interpolated precision at the recalls 0, 0.01, ..., 1 (the highest precision at
        that recall or beyond; 0 where the recall is never reached), the points its AP is the mean of
        (pycocotools ``COCOeval.accumulate``)."""
        if not self.ground_truth or not len(self.scores):
            return np.zeros(len(_RECALL_POINTS))
        envelope = np.maximum.accumulate(self.precision[::-1])[::-1]
        index = np.searchsorted(self.recall, _RECALL_POINTS, side="left")
        return np.where(index < len(envelope), envelope[np.minimum(index, len(envelope) - 1)], 0.0)

    def average_precision(self) -> float | None:
        """COCO's 101-point interpolated AP of this curve (its :func:`coco_metrics` AP at the same IoU and
        predictions); None when the class has no ground truth."""
        return float(self.sampled_precision().mean()) if self.ground_truth else None


#: The recalls COCO samples precision at: 0, 0.01, ..., 1.
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _check_lengths(ground_truths: Sequence[GroundTruth], predictions: Sequence) -> None:
    if len(ground_truths) != len(predictions):
        raise ValueError(f"{len(ground_truths)} ground truths but {len(predictions)} predictions")


def _predicted_classes(predictions: Sequence, num_classes: int) -> list[np.ndarray]:
    """Every image's predicted class ids (int64); ``ValueError`` for an id outside ``[0, num_classes)``."""
    per_image = [np.asarray(_as_prediction(prediction)[2]).reshape(-1).astype(np.int64) for prediction in predictions]
    for classes in per_image:
        if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
            raise ValueError(f"predicted class ids must be in [0, {num_classes})")
    return per_image


def pr_curves(
    ground_truths: Sequence[GroundTruth], predictions: Sequence, num_classes: int, *, iou_threshold: float
) -> dict[int, PRCurve]:
    """The precision-recall curve of each class that has ground truth or predictions, at ``iou_threshold``.

    Ground truth per image ``(boxes [N,4], classes [N])``, predictions per image a :class:`~.prediction.Prediction`
    (or anything with ``boxes``, ``scores``, ``classes``) or ``(boxes [M,4], scores [M], classes [M])``, boxes
    ``x1, y1, x2, y2`` pixel-edge coordinates of one image space. The matching is :func:`match_predictions`
    (COCO's greedy rule), so each curve's :meth:`PRCurve.counts` sum to :func:`match_counts` and its
    :meth:`PRCurve.average_precision` is COCO's AP for the same predictions (give each image's
    ``max_detections`` best, as :func:`evaluate_detections` does).

    Returns ``{class id: PRCurve}`` in class order. Raises ``ValueError`` when the two lists differ in length or
    a predicted class id is outside ``[0, num_classes)``.
    """
    _check_lengths(ground_truths, predictions)
    per_image = _predicted_classes(predictions, num_classes)
    scores, true_positive, _ = match_predictions(ground_truths, predictions, iou_threshold)
    # match_predictions lists each image's predictions class by class, in np.unique's order of its classes
    blocks = [np.repeat(*np.unique(classes, return_counts=True)) for classes in per_image if classes.size]
    classes = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
    by_score = np.argsort(-scores, kind="stable")  # ties keep image order, as COCO's accumulate sorts them
    order = by_score[np.argsort(classes[by_score], kind="stable")]
    scores, true_positive, classes = scores[order], true_positive[order], classes[order]
    labels = [np.asarray(truth[1]).reshape(-1).astype(np.int64) for truth in ground_truths]
    truth = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    truth_counts = np.bincount(truth[(truth >= 0) & (truth < num_classes)], minlength=num_classes)
    starts = np.searchsorted(classes, np.arange(num_classes + 1))
    curves = {}
    for class_id in range(num_classes):
        start, end = starts[class_id], starts[class_id + 1]
        if end > start or truth_counts[class_id]:
            curves[class_id] = PRCurve(class_id, int(truth_counts[class_id]), scores[start:end],
                                       np.cumsum(true_positive[start:end], dtype=np.int64))
    return curves


def confusion_matrix(
    ground_truths: Sequence[GroundTruth], predictions: Sequence, num_classes: int, *, score_threshold: float,
    iou_threshold: float,
) -> np.ndarray:
    """The detection confusion matrix ``[C+1, C+1]`` int64 of the predictions scoring at least ``score_threshold``.

    Rows are the predicted class, columns the true class (C = ``num_classes``); the last row counts the objects
    no prediction matched (missed, "background" predicted), the last column the predictions that matched no
    object (false detections, "background" true). Each image's objects and predictions are matched one to one
    whatever their class, pairs of IoU at least ``iou_threshold`` taken in decreasing IoU order; a matched pair
    counts at (predicted class, true class). This is ultralytics' ``ConfusionMatrix.process_batch``
    (``ultralytics/utils/metrics.py``), but for three details: the thresholds are inclusive (as
    :func:`match_counts`: a prediction scoring exactly the operating point counts in both), the one-to-one
    matching is plain greedy (ultralytics' two unique-filters can drop a pair the greedy rule keeps), and an
    image's unmatched predictions are false detections even when nothing in it matched. Because the matching
    ignores the class, the diagonal may be below :func:`match_counts`' tp (which matches each class alone).

    Inputs as :func:`pr_curves`. Raises ``ValueError`` when the two lists differ in length or a predicted class
    id is outside ``[0, num_classes)``; a ground-truth box of a class id outside it is left out.
    """
    _check_lengths(ground_truths, predictions)
    per_image = _predicted_classes(predictions, num_classes)
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for (gt_boxes, gt_classes), prediction, classes in zip(ground_truths, predictions, per_image):
        boxes = np.asarray(_as_prediction(prediction)[0], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(_as_prediction(prediction)[1], dtype=np.float64).reshape(-1)
        kept = scores >= score_threshold
        boxes, classes = boxes[kept], classes[kept]
        truth = np.asarray(gt_classes).reshape(-1).astype(np.int64)
        known = (truth >= 0) & (truth < num_classes)
        truth = truth[known]
        iou = box_iou(np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)[known], boxes)
        truth_of = np.full(len(boxes), -1)  # the object each prediction matched
        rows, columns = np.nonzero(iou >= iou_threshold)
        order = np.argsort(-iou[rows, columns], kind="stable")
        matched_truth = np.zeros(len(truth), dtype=bool)
        for row, column in zip(rows[order], columns[order]):
            if not matched_truth[row] and truth_of[column] < 0:
                matched_truth[row], truth_of[column] = True, row
        hit = truth_of >= 0
        np.add.at(matrix, (classes[hit], truth[truth_of[hit]]), 1)
        matrix[num_classes, :num_classes] += np.bincount(truth[~matched_truth], minlength=num_classes)
        matrix[:num_classes, num_classes] += np.bincount(classes[~hit], minlength=num_classes)
    return matrix

"""Segmentation metrics exactly as the platform computes them: semantic (object type 3) and instance (type 4).

The definitions are the platform's own (IndustryEssentials/ymir 694446846, YMIR 2.5.0,
``ymir/command/mir/tools/eval/``), reproduced to 1e-6 on every case of ``tests/data/seg_platform_cases.json``
(values computed by that code). ``segmentation.md`` section 5 states them; in short:

Semantic (``sem_seg_eval_mm.py``): each image with an object is a 255 ("ignore") canvas per side, objects of the
evaluated classes painted in file order (a later object covers an earlier one); pixels whose ground truth is 255
are dropped; per class, intersection, union and ground-truth area are SUMMED OVER THE DATASET; IoU = inter / union,
Acc = inter / ground truth, ``mIoU`` / ``mAcc`` their means over the classes where they are defined, ``aAcc`` =
sum inter / sum ground truth. A class predicted on labelled pixels but absent from the ground truth has IoU 0.

Instance (``ins_seg_eval_coco.py`` over ``eval_coco.py``): COCO's matching twice, on the masks (``maskAP``) and
on the int boxes (``boxAP``); the IoU thresholds of ``iou_thrs`` (``"0.5"`` or ``"0.5:0.95:0.05"``, 0.95
included); 101 recall points; at most 100 predictions per image AND class; one area range; predictions scoring
below ``conf_thr`` removed first. Unlike pycocotools, crowd ground truth is NOT ignored: it is a positive, its IoU
is the intersection over the prediction's area, and any number of predictions may match it, each a true
positive (the matching loop below is a port of the platform's, on faster-coco-eval's IoU). A class AP is the
mean precision with "no value" entries set to 0; the dataset figure the mean over ALL evaluated class ids (a class
without ground truth counts 0). tp/fp/fn are per threshold, summed over the thresholds of a range (a class
without ground truth counts no fp, one without predictions no fn: the platform's accumulate skips both).

A stage metric is never -1 or NaN (the platform rejects a model with one): an evaluation with nothing to measure
scores 0 and the log says why. Masks are faster-coco-eval's (pycocotools' codec and polygon rasteriser), read
through :mod:`.protocol.masks`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["SegObject", "SemanticScores", "InstanceScores", "semantic_scores", "instance_scores",
           "iou_thresholds", "read_coco_objects", "score_coco", "platform_evaluation_notes"]

log = logging.getLogger(__name__)

#: The platform evaluates at most this many classes / assets itself (its default evaluation after training).
PLATFORM_MAX_CLASSES = 20
PLATFORM_MAX_ASSETS = 50_000
#: COCO's per image and class limit, and the platform's single area range.
MAX_DETECTIONS = 100
AREA_RANGE = (0.0, 1e5 ** 2)
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
_IGNORE = 255


@dataclass(frozen=True)
class SegObject:
    """One ground-truth or predicted object as the platform keeps it.

    ``rle``: the compressed RLE ``{"size": [H, W], "counts": str | bytes}`` of the mask at the image's stored
    size; ``bbox``: int ``x, y, w, h`` (the file's, truncated by ``int()``); ``area``: the file's (never
    recomputed: it only places the object in the area range); ``score``: the confidence (-1 when absent)."""

    class_id: int
    rle: Mapping[str, Any]
    bbox: tuple[int, int, int, int]
    area: int
    iscrowd: int = 0
    score: float = -1.0

    @classmethod
    def from_mask(cls, class_id: int, mask: Any, score: float = -1.0, iscrowd: int = 0) -> SegObject:
        """An object of a ``[H, W]`` mask (bool, or ``!= 0``) at the image's stored size, as a plugin predicts
        it: the compressed RLE, tight int box and pixel area the infer-result.json writer records for it."""
        from .protocol.masks import encode_mask, rle_area, rle_bbox

        rle = encode_mask(mask)
        x, y, w, h = rle_bbox(rle)
        return cls(int(class_id), rle, (x, y, w, h), rle_area(rle), int(iscrowd), float(score))


#: asset key (the file's basename without extension, as the platform keys assets) -> objects in file order.
Objects = Mapping[str, Sequence[SegObject]]


def _f32(value: float) -> float:
    """A value as the platform's protobuf float fields store it."""
    return float(np.float32(value))


def _f32_mean(values: Sequence[float]) -> float:
    """``eval_utils._get_average_ee``: one value is copied; several summed and divided in float32 fields."""
    if len(values) == 1:
        return values[0]
    total = 0.0
    for value in values:
        total = _f32(total + value)
    return _f32(total / len(values))


# --- semantic ---------------------------------------------------------------------------------------------------


@dataclass
class SemanticScores:
    """Semantic segmentation metrics; per-class ``None`` means undefined (no pixel of that class on either side
    for IoU, none in the ground truth for Acc)."""

    mIoU: float
    mAcc: float
    aAcc: float
    iou: dict[int, float | None]
    acc: dict[int, float | None]
    num_images: int
    class_names: list[str] = field(default_factory=list)

    def stage_metrics(self) -> dict[str, float]:
        """The metrics of a model stage in result.yaml (never -1 or NaN)."""
        return {"mIoU": self.mIoU, "mAcc": self.mAcc, "aAcc": self.aAcc}

    def to_dict(self) -> dict[str, Any]:
        """result.yaml's keys plus ``IoU`` and ``Acc`` per class (keyed by class name when known)."""
        return {**self.stage_metrics(), "IoU": _by_name(self.iou, self.class_names),
                "Acc": _by_name(self.acc, self.class_names), "num_images": self.num_images}


def _by_name(values: Mapping[int, Any], names: Sequence[str]) -> dict[str, Any]:
    return {names[key] if 0 <= key < len(names) else str(key): value for key, value in values.items()}


def _paint(objects: Iterable[SegObject], order: Mapping[int, int], canvas: np.ndarray) -> None:
    from faster_coco_eval.core import mask as coco_mask

    from .protocol.masks import decode_rle

    for obj in objects:
        if obj.class_id in order:
            rle = _checked(obj.rle)
            x, y, w, h = (int(v) for v in coco_mask.toBbox(rle))  # copy only the mask's box: most of it is 0
            mask = decode_rle(rle)  # Fortran-ordered, as the canvas
            np.copyto(canvas[y:y + h, x:x + w], order[obj.class_id], where=mask[y:y + h, x:x + w])


def semantic_scores(ground_truth: Objects, predictions: Objects, image_sizes: Mapping[str, tuple[int, int]],
                    class_ids: Sequence[int], class_names: Sequence[str] = ()) -> SemanticScores:
    """mIoU, mAcc, aAcc and per-class IoU / Acc of ``predictions`` against ``ground_truth`` over the evaluated
    ``class_ids``, as ``sem_seg_eval_mm.evaluate`` computes them (module docstring). ``image_sizes``: asset key ->
    stored ``(height, width)``; an image with predictions but no ground truth changes nothing (all its pixels are
    ignored), and one missing from ``image_sizes`` is left out as the platform leaves out an unknown asset.
    Raises ``ValueError`` for no class id or more than 254."""
    class_ids = list(class_ids)
    if not 0 < len(class_ids) < _IGNORE:
        raise ValueError(f"semantic scores need 1 to {_IGNORE - 1} class ids (a uint8 label map with {_IGNORE} "
                         f"for unlabelled pixels, as the platform's), got {len(class_ids)}")
    platform_evaluation_notes(3, class_ids, len(image_sizes))
    order = {class_id: k for k, class_id in enumerate(class_ids)}
    num_classes = len(class_ids)
    inter = np.zeros(num_classes, np.int64)
    truth_area = np.zeros(num_classes, np.int64)
    predicted_area = np.zeros(num_classes, np.int64)
    images = 0
    for key in sorted(ground_truth):
        if key not in image_sizes or not ground_truth[key]:
            continue
        images += 1
        truth = np.full(image_sizes[key], _IGNORE, np.uint8, order="F")
        _paint(ground_truth[key], order, truth)
        labelled = truth != _IGNORE
        if not labelled.any():
            continue
        predicted = np.full(image_sizes[key], _IGNORE, np.uint8, order="F")
        _paint(predictions.get(key, ()), order, predicted)
        gt, dt = truth[labelled], predicted[labelled]
        truth_area += np.bincount(gt, minlength=num_classes)[:num_classes]
        predicted_area += np.bincount(dt, minlength=_IGNORE + 1)[:num_classes]
        inter += np.bincount(gt[gt == dt], minlength=num_classes)[:num_classes]
    union = predicted_area + truth_area - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
        acc = inter / truth_area
    defined_iou, defined_acc = iou[union > 0], acc[truth_area > 0]
    if not defined_iou.size:
        log.warning("semantic evaluation: no pixel of the evaluated classes %s in the ground truth or the "
                    "predictions of %d images: mIoU, mAcc and aAcc are 0", class_ids, images)
    return SemanticScores(
        mIoU=float(defined_iou.mean()) if defined_iou.size else 0.0,
        mAcc=float(defined_acc.mean()) if defined_acc.size else 0.0,
        aAcc=float(inter.sum() / truth_area.sum()) if truth_area.sum() else 0.0,
        iou={c: float(iou[k]) if union[k] else None for k, c in enumerate(class_ids)},
        acc={c: float(acc[k]) if truth_area[k] else None for k, c in enumerate(class_ids)},
        num_images=images, class_names=list(class_names))


# --- instance ---------------------------------------------------------------------------------------------------


def iou_thresholds(interval: str) -> list[float]:
    """The IoU thresholds of an ``iou_thrs_interval``: ``"0.5"`` -> [0.5]; ``"0.5:0.95:0.05"`` -> the 10 values
    0.50 ... 0.95 (``eval_utils.get_iou_thrs_array``: end point included). Raises ``ValueError`` otherwise."""
    try:
        values = [float(part) for part in str(interval).split(":")]
    except ValueError:
        raise ValueError(f"invalid IoU thresholds {interval!r}: expected 0.5 or 0.5:0.95:0.05") from None
    if len(values) not in (1, 3) or not all(0.0 <= v <= 1.0 for v in values) or (
            len(values) == 3 and values[0] > values[1]):
        raise ValueError(f"invalid IoU thresholds {interval!r}: expected 0.5 or 0.5:0.95:0.05")
    start, stop = (values[0], values[1]) if len(values) == 3 else (values[0], values[0])
    if stop == start:
        return [start]
    if values[2] <= 0:
        raise ValueError(f"invalid IoU thresholds {interval!r}: the step must be positive")
    count = int(np.round((stop - start) / values[2])) + 1
    return [float(t) for t in np.linspace(start, stop, count, endpoint=True)]


@dataclass
class InstanceScores:
    """Instance segmentation metrics at the thresholds of ``iou_thrs``: ``maskAP`` / ``boxAP`` (the mean over
    every evaluated class id), per-class mask AP, tp/fp/fn (summed over the thresholds of a range), and the mask
    AP@[.50:.95] kept as ``maskAP50_95``."""

    maskAP: float
    boxAP: float
    maskAP50_95: float
    per_class_maskAP: dict[int, float]
    per_class_boxAP: dict[int, float]
    tp: int
    fp: int
    fn: int
    iou_thrs: str
    conf_thr: float
    num_images: int
    class_names: list[str] = field(default_factory=list)

    def stage_metrics(self) -> dict[str, float]:
        """The metrics of a model stage in result.yaml (never -1 or NaN)."""
        return {"maskAP": self.maskAP, "boxAP": self.boxAP, "maskAP50_95": self.maskAP50_95}

    def stage_counts(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn}

    def to_dict(self) -> dict[str, Any]:
        """result.yaml's keys plus per-class mask and box AP (keyed by class name when known)."""
        return {**self.stage_metrics(), **self.stage_counts(),
                "per_class_maskAP": _by_name(self.per_class_maskAP, self.class_names),
                "per_class_boxAP": _by_name(self.per_class_boxAP, self.class_names),
                "iou_thrs": self.iou_thrs, "conf_thr": self.conf_thr, "num_images": self.num_images}


@dataclass
class _Matches:
    """One image and class, after matching at every threshold (``eval_coco.CocoDetEval.evaluateImg``)."""

    scores: list[float]
    matched: np.ndarray  # [T, D] bool: the prediction matched a ground truth
    ignored: np.ndarray  # [T, D] bool
    truth_ignored: np.ndarray  # [G] bool


def _match(ious: np.ndarray, thresholds: Sequence[float], crowd: list[int], truth_ignored: list[bool],
           prediction_outside: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """The platform's matching loop (``eval_coco.py`` evaluateImg), predictions in score order, ground truth
    ignored-last: each prediction takes the eligible ground truth of highest IoU >= t (the LAST of equal IoUs);
    a matched ground truth is eligible again only when it is a crowd. Unlike pycocotools, crowd is not ignored."""
    num_dt, num_gt = ious.shape
    matched = np.zeros((len(thresholds), num_dt), bool)
    ignored = np.zeros((len(thresholds), num_dt), bool)
    rows = ious.tolist()
    for t_index, threshold in enumerate(thresholds):
        taken = [False] * num_gt
        for d in range(num_dt):
            best_iou, best = min(threshold, 1 - 1e-10), -1
            row = rows[d]
            for g in range(num_gt):
                if taken[g] and not crowd[g]:
                    continue
                if best > -1 and not truth_ignored[best] and truth_ignored[g]:
                    break
                if row[g] < best_iou:
                    continue
                best_iou, best = row[g], g
            if best == -1:
                ignored[t_index, d] = prediction_outside[d]
                continue
            ignored[t_index, d] = truth_ignored[best]
            matched[t_index, d] = True
            taken[best] = True
    return matched, ignored


def _outside(area: float) -> bool:
    return area < AREA_RANGE[0] or area > AREA_RANGE[1]


def _evaluate_image(truth: Sequence[SegObject], predicted: Sequence[SegObject], thresholds: Sequence[float],
                    iou_type: str) -> _Matches:
    from faster_coco_eval.core import mask as coco_mask

    truth_outside = [_outside(g.area) for g in truth]
    gt_order = np.argsort(truth_outside, kind="mergesort")  # ignored ground truth last
    truth = [truth[i] for i in gt_order]
    truth_ignored = [truth_outside[i] for i in gt_order]
    predicted = sorted(predicted, key=lambda d: -d.score)[:MAX_DETECTIONS]  # stable, as mergesort
    if truth and predicted:
        crowd = [int(g.iscrowd) for g in truth]
        if iou_type == "segm":
            ious = coco_mask.iou([_checked(d.rle) for d in predicted], [_checked(g.rle) for g in truth], crowd)
        else:
            ious = coco_mask.iou([list(map(float, d.bbox)) for d in predicted],
                                 [list(map(float, g.bbox)) for g in truth], crowd)
        matched, ignored = _match(np.asarray(ious, np.float64).reshape(len(predicted), len(truth)), thresholds,
                                  crowd, truth_ignored, [_outside(d.area) for d in predicted])
    else:
        matched = np.zeros((len(thresholds), len(predicted)), bool)
        ignored = np.tile(np.array([_outside(d.area) for d in predicted], bool), (len(thresholds), 1))
    return _Matches([d.score for d in predicted], matched, ignored, np.array(truth_ignored, bool))


def _accumulate(images: list[_Matches], num_thresholds: int) -> tuple[np.ndarray, np.ndarray]:
    """One class's ``[T, R]`` precision (-1 where undefined) and ``[T, 3]`` tp/fp/fn (``CocoDetEval.accumulate``)."""
    precision = -np.ones((num_thresholds, len(_RECALL_POINTS)))
    counts = np.zeros((num_thresholds, 3), np.int64)
    if not images:
        return precision, counts
    scores = np.concatenate([np.asarray(e.scores, np.float64) for e in images])
    if not scores.size:
        return precision, counts
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([e.matched for e in images], axis=1)[:, order]
    ignored = np.concatenate([e.ignored for e in images], axis=1)[:, order]
    positives = int(np.count_nonzero(~np.concatenate([e.truth_ignored for e in images])))
    if positives == 0:
        return precision, counts
    tp_sum = np.cumsum(matched & ~ignored, axis=1).astype(float)
    fp_sum = np.cumsum(~matched & ~ignored, axis=1).astype(float)
    counts[:, 0] = tp_sum[:, -1]
    counts[:, 1] = fp_sum[:, -1]
    counts[:, 2] = positives - counts[:, 0]
    for t in range(num_thresholds):
        recall = tp_sum[t] / positives
        pr = tp_sum[t] / (fp_sum[t] + tp_sum[t] + np.spacing(1))
        envelope = np.maximum.accumulate(pr[::-1])[::-1]
        index = np.searchsorted(recall, _RECALL_POINTS, side="left")
        q = np.zeros(len(_RECALL_POINTS))
        inside = index < len(envelope)
        q[inside] = envelope[index[inside]]
        # the platform stops at the first recall point past the end: the rest stay 0 (index is sorted)
        precision[t] = q
    return precision, counts


def _class_results(ground_truth: Objects, predictions: Objects, class_ids: Sequence[int],
                   thresholds: Sequence[float], iou_type: str) -> tuple[np.ndarray, np.ndarray]:
    """``[K, T]`` class AP (float32 as stored) and ``[K, T, 3]`` tp/fp/fn over every image, images in key order."""
    keys = sorted(set(ground_truth) | set(predictions))
    wanted = set(class_ids)
    per_class: dict[int, list[_Matches]] = {c: [] for c in class_ids}
    for key in keys:
        truth_by_class: dict[int, list[SegObject]] = {}
        predicted_by_class: dict[int, list[SegObject]] = {}
        for obj in ground_truth.get(key, ()):
            if obj.class_id in wanted:
                truth_by_class.setdefault(obj.class_id, []).append(obj)
        for obj in predictions.get(key, ()):
            if obj.class_id in wanted:
                predicted_by_class.setdefault(obj.class_id, []).append(obj)
        for class_id in truth_by_class.keys() | predicted_by_class.keys():
            per_class[class_id].append(_evaluate_image(truth_by_class.get(class_id, []),
                                                       predicted_by_class.get(class_id, []), thresholds, iou_type))
    ap = np.zeros((len(class_ids), len(thresholds)))
    counts = np.zeros((len(class_ids), len(thresholds), 3), np.int64)
    for k, class_id in enumerate(class_ids):
        precision, counts[k] = _accumulate(per_class[class_id], len(thresholds))
        precision[precision <= -1] = 0
        ap[k] = [_f32(value) for value in precision.mean(axis=1)]
    return ap, counts


def _averaged(ap: np.ndarray, at: Sequence[int]) -> tuple[float, dict[int, float]]:
    """The platform's dataset AP over thresholds ``at`` (mean of the per-threshold class means, float32 fields)
    and each class's AP over them."""
    dataset = _f32_mean([_f32_mean(list(ap[:, t])) for t in at])
    return dataset, {k: _f32_mean([ap[k, t] for t in at]) for k in range(ap.shape[0])}


def instance_scores(ground_truth: Objects, predictions: Objects, class_ids: Sequence[int], *,
                    iou_thrs: str = "0.5", conf_thr: float = 0.0,
                    class_names: Sequence[str] = ()) -> InstanceScores:
    """maskAP, boxAP, per-class AP and tp/fp/fn of ``predictions`` against ``ground_truth`` over the evaluated
    ``class_ids``, as ``ins_seg_eval_coco.evaluate`` computes them (module docstring); predictions scoring
    below ``conf_thr`` are left out first. Raises ``ValueError`` for bad ``iou_thrs`` or no class id."""
    class_ids = list(class_ids)
    if not class_ids:
        raise ValueError("no class id to evaluate")
    asked = iou_thresholds(iou_thrs)
    coco_range = iou_thresholds("0.5:0.95:0.05")
    thresholds = list(asked) + [t for t in coco_range if t not in asked]  # exact floats: a threshold may be hit
    at_asked = list(range(len(asked)))
    at_coco = [thresholds.index(t) for t in coco_range]
    kept = {key: [obj for obj in objs if obj.score >= conf_thr] for key, objs in predictions.items()}
    kept = {key: objs for key, objs in kept.items() if objs}
    num_images = len(set(ground_truth) | set(kept))
    platform_evaluation_notes(4, class_ids, num_images)
    if not any(ground_truth.values()) or not kept:
        log.warning("instance evaluation: %s: maskAP, boxAP and every count are 0 (the platform refuses to "
                    "evaluate it)", "no ground-truth object" if not any(ground_truth.values())
                    else f"no prediction scoring at least conf_thr {conf_thr}")
    mask_ap, mask_counts = _class_results(ground_truth, kept, class_ids, thresholds, "segm")
    box_ap, _ = _class_results(ground_truth, kept, class_ids, thresholds, "bbox")
    mask_ap_asked, per_class_mask = _averaged(mask_ap, at_asked)
    box_ap_asked, per_class_box = _averaged(box_ap, at_asked)
    tp, fp, fn = (int(v) for v in mask_counts[:, at_asked].sum(axis=(0, 1)))
    return InstanceScores(
        maskAP=mask_ap_asked, boxAP=box_ap_asked, maskAP50_95=_averaged(mask_ap, at_coco)[0],
        per_class_maskAP={class_ids[k]: v for k, v in per_class_mask.items()},
        per_class_boxAP={class_ids[k]: v for k, v in per_class_box.items()},
        tp=tp, fp=fp, fn=fn, iou_thrs=str(iou_thrs), conf_thr=float(conf_thr), num_images=num_images,
        class_names=list(class_names))


def platform_evaluation_notes(object_type: int, class_ids: Sequence[int], num_assets: int) -> list[str]:
    """Log (and return) why the platform will not evaluate this set on its own side, if it will not."""
    notes = []
    if len(class_ids) > PLATFORM_MAX_CLASSES:
        notes.append(f"{len(class_ids)} classes: the platform does not evaluate more than {PLATFORM_MAX_CLASSES}")
    if num_assets > PLATFORM_MAX_ASSETS:
        notes.append(f"{num_assets} images: the platform does not evaluate more than {PLATFORM_MAX_ASSETS}")
    if object_type == 3 and len(class_ids) <= 1:
        notes.append("one class: the platform does not evaluate semantic segmentation of fewer than 2 classes")
    for note in notes:
        log.info("the platform will not evaluate this set itself: %s", note)
    return notes


# --- masks ------------------------------------------------------------------------------------------------------


def _checked(rle: Mapping[str, Any]) -> dict[str, Any]:
    """A compressed RLE as faster-coco-eval takes it (``counts`` a str)."""
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def coco_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """The compressed RLE of a COCO ``segmentation`` at the image's stored ``height`` x ``width``, as the platform
    decodes it: an RLE dict's own ``size`` is ignored (its counts must still sum to H x W), list counts are read
    too; polygons have their points truncated to ints, then COCO's rasteriser (several polygons merged).
    Raises :class:`~.protocol.masks.MaskProblem` (its ``reason`` the skip reason) for an unusable one."""
    from .protocol.masks import check_segmentation, to_rle

    if isinstance(segmentation, dict) and "counts" in segmentation:
        segmentation = {**segmentation, "size": [height, width]}
    elif isinstance(segmentation, list):
        check_segmentation(segmentation, height, width)
        segmentation = [[int(value) for value in polygon] for polygon in segmentation]
    return to_rle(segmentation, height, width)


# --- COCO documents ---------------------------------------------------------------------------------------------


def asset_key(file_name: str) -> str:
    """How the platform keys an image: its basename without extension (the asset id)."""
    return os.path.splitext(os.path.basename(str(file_name)))[0]


def read_coco_objects(coco: Mapping[str, Any], class_names: Sequence[str], *,
                      image_sizes: Mapping[str, tuple[int, int]] | None = None, skips: Any = None,
                      source: str = "COCO json") -> tuple[dict[str, list[SegObject]], dict[str, tuple[int, int]]]:
    """The objects of a COCO document (ground truth as the platform exports seg-coco, or infer-result.json), as
    the platform imports them (``annotations.import_annotations_coco_json``): images keyed by basename without
    extension (an image id used twice: all its images ignored), classes by category NAME (lower-cased, stripped;
    a document without categories uses ids as indexes into ``class_names``), ``bbox`` truncated by ``int()`` (w or
    h <= 0: dropped), the same class and int box twice in an image: the later dropped; masks at the stored size:
    ``image_sizes`` (asset key -> (H, W), the ground truth's) or else the document's own width and height.

    Each object left out is counted by reason in ``skips`` (a :class:`~.protocol.dataset.SkipLog`) when given.
    Returns ``(objects by asset key in file order, stored size by asset key)``."""
    from .protocol.masks import MaskProblem

    def skip(reason: str, where: str, detail: str = "") -> None:
        if skips is not None:
            skips.skip(reason, where, detail)

    images = list(coco.get("images") or [])
    ids = [image.get("id") for image in images]
    twice = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
    key_of: dict[Any, str] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for number, image in enumerate(images):
        if image.get("id") in twice:
            skip("image id used twice", f"{source}:images[{number}]", f"id {image.get('id')!r}")
            continue
        key = asset_key(image.get("file_name", ""))
        key_of[image["id"]] = key
        if image_sizes is not None:
            if key in image_sizes:
                sizes[key] = image_sizes[key]
        elif image.get("height") and image.get("width"):
            sizes[key] = (int(image["height"]), int(image["width"]))
    lowered = {name.strip().lower(): k for k, name in enumerate(class_names)}
    categories = {c.get("id"): lowered.get(str(c.get("name", "")).strip().lower())
                  for c in coco.get("categories") or []}
    objects: dict[str, list[SegObject]] = {}
    signatures: set[tuple[Any, ...]] = set()
    for number, entry in enumerate(coco.get("annotations") or []):
        where = f"{source}:annotations[{number}] (id {entry.get('id')!r})" if isinstance(entry, Mapping) else \
            f"{source}:annotations[{number}]"
        try:
            category = entry["category_id"]
            class_id = categories.get(category) if categories else (
                category if isinstance(category, int) and 0 <= category < len(class_names) else None)
            if class_id is None:
                skip("class name outside class_names", where, f"category_id {category!r}")
                continue
            image_key = key_of.get(entry["image_id"])
            if image_key is None or image_key not in sizes:
                reason = ("image not in the ground truth" if image_sizes is not None else
                          "unknown image" if image_key is None else "image without width and height")
                skip(reason, where, f"image_id {entry['image_id']!r}")
                continue
            if len(entry["bbox"]) != 4:
                raise ValueError(f"bbox {entry['bbox']!r}")
            x, y, w, h = (int(float(v)) for v in entry["bbox"])
            bbox = (x, y, w, h)
            if bbox[2] <= 0 or bbox[3] <= 0:
                skip("empty box", where, f"bbox {entry['bbox']!r}")
                continue
            signature = (image_key, class_id, bbox)
            if signature in signatures:
                skip("same class and box twice in an image", where, f"bbox {list(bbox)}")
                continue
            rle = coco_rle(entry.get("segmentation"), *sizes[image_key])  # no key: the platform crashes
            signatures.add(signature)
            score = float(entry.get("confidence", -1.0))
            objects.setdefault(image_key, []).append(SegObject(
                class_id, rle, bbox, int(float(entry.get("area", 0))), int(entry.get("iscrowd", 0) or 0),
                score if math.isfinite(score) else -1.0))
        except MaskProblem as problem:
            skip(problem.reason, where, str(problem))
        except ValueError as error:
            skip("malformed object", where, str(error))
        except (KeyError, TypeError) as error:
            skip("malformed object", where, repr(error))
    return objects, sizes


def score_coco(object_type: int, ground_truth: Mapping[str, Any], predictions: Mapping[str, Any],
               class_names: Sequence[str], *, class_ids: Sequence[int] | None = None, iou_thrs: str = "0.5",
               conf_thr: float = 0.0, skips: Any = None) -> SemanticScores | InstanceScores:
    """Score an infer-result.json document against a seg-coco ground-truth document as the platform would:
    object type 3 -> :func:`semantic_scores`, 4 -> :func:`instance_scores`. ``class_ids``: the evaluated ids
    (default: every class)."""
    ids = list(range(len(class_names))) if class_ids is None else list(class_ids)
    truth, sizes = read_coco_objects(ground_truth, class_names, skips=skips, source="ground truth")
    predicted, _ = read_coco_objects(predictions, class_names, image_sizes=sizes, skips=skips,
                                     source="predictions")
    if object_type == 3:
        return semantic_scores(truth, predicted, sizes, ids, class_names)
    if object_type == 4:
        return instance_scores(truth, predicted, ids, iou_thrs=iou_thrs, conf_thr=conf_thr, class_names=class_names)
    raise ValueError(f"object type {object_type} is not a segmentation type (3 or 4)")

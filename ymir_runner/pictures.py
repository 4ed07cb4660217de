"""Pictures of a model stage, for every engine: precision-recall curves, a confusion matrix and validation images.

People would rather look than read. :func:`stage_figures` computes, from the ground truth and a stage's
predictions on the validation images, each class's precision-recall curve (:func:`~.evaluation.pr_curves`) and
the confusion matrix at the deployed operating point (:func:`~.evaluation.confusion_matrix` at ``conf_thr`` and
``iou_thr``), and draws a few validation images with the ground truth beside the predictions. The result goes to
tensorboard (:meth:`StageFigures.to_tensorboard`) and, for the deployed stage, into the model package as
result.yaml ``attachments`` (:meth:`StageFigures.save`).

Pictures are an optional output: the caller runs these inside ``context.optional_output(...)``. Drawing never
raises on what a model predicts (boxes of zero size, inverted, outside the image or NaN are drawn as what they
touch, or not at all) nor on an image that cannot be decoded (it is left out of the pictures). numpy and Pillow
only: the figures are drawn with ``PIL.ImageDraw`` (the layout follows ultralytics' ``plot_pr_curve`` and
``ConfusionMatrix.plot``, ``ultralytics/utils/metrics.py``), and every picture is bounded in size (about
:data:`PANEL_SIDE` pixels a panel) and in classes (:data:`MAX_PLOT_CLASSES`).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .evaluation import GroundTruth, PRCurve, _as_prediction, confusion_matrix, pr_curves
from .protocol.atomic import atomic_path
from .protocol.images import decode_image

#: The plugin API (ymir_runner/api_versions.py): the figures, and the drawing of a box for a plugin's own pictures.
__all__ = ["stage_figures", "StageFigures", "pixel_rectangle", "draw_box", "class_label", "PALETTE"]

#: The long side, in pixels, of a validation image's panel (a picture is two panels side by side) and of a plot.
PANEL_SIDE = 480
#: At most this many classes in a plot: the PR plot draws those with the most ground truth, the confusion matrix
#: those in the most pairs, the rest folded into one "other classes" row and column; each plot says so.
MAX_PLOT_CLASSES = 20
#: At most this many classes get a tensorboard PR curve (those with the most ground truth).
MAX_TENSORBOARD_CURVES = 100
#: The score thresholds of a tensorboard PR curve: 0, 0.01, ..., 1 (tensorboard's plugin spaces them evenly).
TENSORBOARD_THRESHOLDS = 101
#: Validation images tried at most, per picture asked for, before giving up on undecodable ones.
_TRIES_PER_PICTURE = 4

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 200, 200),
           (240, 50, 230), (150, 190, 40), (250, 160, 180), (0, 128, 128), (170, 110, 40), (128, 0, 0),
           (100, 170, 120), (128, 128, 0), (0, 0, 128), (128, 128, 128), (200, 170, 0), (90, 90, 200),
           (180, 60, 120), (40, 40, 40)]
#: matplotlib's "Blues" colour map, the confusion matrix's (0 white, 1 dark blue).
_BLUES = np.array([(247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
                   (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107)], dtype=np.float64)
_WHITE, _BLACK, _GRID = (255, 255, 255), (0, 0, 0), (225, 225, 225)


class StageFigures:
    """The pictures of one model stage (made by :func:`stage_figures`).

    ``curves``: ``{class id: PRCurve}`` at ``iou_threshold``; ``confusion``: ``[C+1, C+1]`` int64 counts at
    ``score_threshold`` and ``iou_threshold`` (rows predicted, columns true, last background);
    ``validation``: ``[H, W, 3]`` uint8 RGB pictures, ground truth on the left, predictions on the right.
    The two plots are drawn on first use.
    """

    def __init__(self, curves: dict[int, PRCurve], confusion: np.ndarray, class_names: Sequence[str],
                 score_threshold: float, iou_threshold: float, validation: Sequence[np.ndarray] = ()) -> None:
        self.curves = curves
        self.confusion = confusion
        self.class_names = list(class_names)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.validation = list(validation)

    @functools.cached_property
    def pr_curve_image(self) -> np.ndarray:
        """``[H, W, 3]`` uint8: every class's precision-recall curve (at most :data:`MAX_PLOT_CLASSES`), the
        mean over the classes, the operating point of each, and a legend with each class's AP."""
        return draw_pr_curves(self.curves, self.class_names, self.score_threshold, self.iou_threshold)

    @functools.cached_property
    def confusion_matrix_image(self) -> np.ndarray:
        """``[H, W, 3]`` uint8: the confusion matrix's counts, coloured by their share of the true class."""
        return draw_confusion_matrix(self.confusion, self.class_names, self.score_threshold, self.iou_threshold)

    def to_tensorboard(self, writer: Any, step: int) -> None:
        """Write the figures at ``step`` to ``writer`` (a tensorboardX ``SummaryWriter`` or the core's
        :class:`~.protocol.tensorboard.LazySummaryWriter`): ``pr_curve/<class name>`` per class with ground truth
        (``add_pr_curve_raw`` at :data:`TENSORBOARD_THRESHOLDS` score thresholds; the ones with the most ground
        truth, :data:`MAX_TENSORBOARD_CURVES` at most), and the images ``confusion_matrix``,
        ``val_predictions/<i>``."""
        shown = sorted((curve for curve in self.curves.values() if curve.ground_truth),
                       key=lambda curve: -curve.ground_truth)[:MAX_TENSORBOARD_CURVES]
        thresholds = np.linspace(0.0, 1.0, TENSORBOARD_THRESHOLDS)
        for curve in sorted(shown, key=lambda curve: curve.class_id):
            tp, fp, fn = np.array([curve.counts(threshold) for threshold in thresholds], dtype=np.float64).T
            precision = tp / np.maximum(tp + fp, 1)  # tensorboard's own pr_curve op: 0 where nothing is kept
            recall = tp / np.maximum(tp + fn, 1)
            writer.add_pr_curve_raw(f"pr_curve/{class_label(self.class_names, curve.class_id)}", tp, fp,
                                    np.zeros_like(tp), fn, precision, recall, step,
                                    num_thresholds=TENSORBOARD_THRESHOLDS)
        writer.add_image("confusion_matrix", self.confusion_matrix_image, step, dataformats="HWC")
        for index, picture in enumerate(self.validation):
            writer.add_image(f"val_predictions/{index}", picture, step, dataformats="HWC")

    def save(self, folder: str) -> list[str]:
        """Write ``pr_curve.png``, ``confusion_matrix.png`` and ``val_<i>.jpg`` (i = 0, 1, ...) into ``folder``
        (created if missing), each atomically (:func:`~.protocol.atomic.atomic_path`); returns their paths in
        that order. Raises :class:`~.errors.OutputError` when a file cannot be written."""
        os.makedirs(folder, exist_ok=True)
        files = [("pr_curve.png", self.pr_curve_image), ("confusion_matrix.png", self.confusion_matrix_image)]
        files += [(f"val_{index}.jpg", picture) for index, picture in enumerate(self.validation)]
        paths = []
        for name, pixels in files:
            path = os.path.join(folder, name)
            with atomic_path(path) as tmp:
                if name.endswith(".png"):
                    Image.fromarray(pixels).save(tmp, format="PNG", optimize=True)
                else:
                    Image.fromarray(pixels).save(tmp, format="JPEG", quality=90)
            paths.append(path)
        return paths


def stage_figures(
    ground_truths: Sequence[GroundTruth], predictions: Sequence, *, class_names: Sequence[str],
    score_threshold: float, iou_threshold: float, images: Sequence[str] = (), count: int = 4,
) -> StageFigures:
    """The pictures of a stage from its predictions on the validation images.

    ``ground_truths[i] = (boxes [N,4], classes [N])`` and ``predictions[i]`` (a
    :class:`~.prediction.Prediction` or ``(boxes [M,4], scores [M], classes [M])``) of validation image ``i``,
    boxes ``x1, y1, x2, y2`` pixel-edge coordinates in STORED pixels; predictions down to a low score (the PR
    curves use them all; the confusion matrix and the pictures those scoring at least ``score_threshold``).
    ``images[i]``: the path of image ``i``; the first ``count`` that decode (``protocol.images.decode_image``,
    reduced on decode) are drawn, the others left out. ``class_names`` gives the number of classes.

    Raises ``ValueError`` (from :mod:`~.evaluation`) when the lists differ in length or a predicted class id is
    outside ``class_names``; never for an image.
    """
    num_classes = len(class_names)
    curves = pr_curves(ground_truths, predictions, num_classes, iou_threshold=iou_threshold)
    confusion = confusion_matrix(ground_truths, predictions, num_classes, score_threshold=score_threshold,
                                 iou_threshold=iou_threshold)
    validation: list[np.ndarray] = []
    for path, truth, prediction in list(zip(images, ground_truths, predictions))[:count * _TRIES_PER_PICTURE]:
        if len(validation) >= count:
            break
        picture = draw_validation_image(path, truth, prediction, class_names, score_threshold)
        if picture is not None:
            validation.append(picture)
    return StageFigures(curves, confusion, class_names, score_threshold, iou_threshold, validation)


# ---------------------------------------------------------------------------------------------- drawing helpers

@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    """Pillow's own font at ``size`` pixels (its bitmap font, of one size, where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except Exception:  # Pillow without FreeType
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> int:
    return int(math.ceil(draw.textlength(text, font=font)))


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[:length - 1] + "…"


def class_label(class_names: Sequence[str], class_id: Any) -> str:
    """The class's name, or its number when a model predicts a class the task does not have."""
    index = int(class_id)
    return class_names[index] if 0 <= index < len(class_names) else f"class {index}"


def pixel_rectangle(box: Sequence[Any], width: int, height: int) -> tuple[int, int, int, int] | None:
    """The inclusive pixel rectangle ``(left, top, right, bottom)`` PIL draws for a box in pixel-edge coordinates
    (``x2`` exclusive) on a ``width`` x ``height`` image: corners put in order, every pixel the box touches, at
    least one pixel each way, clipped to the image. None for a box that cannot be drawn: a coordinate that is not
    a finite number, or no pixel of it inside the image."""
    try:
        x1, y1, x2, y2 = (float(value) for value in box)
    except (TypeError, ValueError):
        return None
    if width < 1 or height < 1 or not all(math.isfinite(value) for value in (x1, y1, x2, y2)):
        return None
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    left, top = math.floor(x1), math.floor(y1)
    right, bottom = max(left, math.ceil(x2) - 1), max(top, math.ceil(y2) - 1)
    if right < 0 or bottom < 0 or left >= width or top >= height:
        return None
    return max(left, 0), max(top, 0), min(right, width - 1), min(bottom, height - 1)


def draw_box(draw: ImageDraw.ImageDraw, box: Sequence[Any], label: str, color: tuple[int, int, int],
             size: tuple[int, int], line_width: int = 2) -> bool:
    """An outline and its label (on a filled strip, readable on any image) on ``draw``, an image of ``size`` =
    (width, height); False when the box cannot be drawn (see :func:`pixel_rectangle`), which is not an error."""
    rectangle = pixel_rectangle(box, *size)
    if rectangle is None:
        return False
    left, top, right, bottom = rectangle
    draw.rectangle(rectangle, outline=color, width=max(1, min(line_width, right - left + 1, bottom - top + 1)))
    font = _font(11)
    text_width, text_height = _text_width(draw, label, font) + 4, 13
    x = min(left, max(0, size[0] - text_width))
    y = top - text_height if top >= text_height else min(top + 1, max(0, size[1] - text_height))
    draw.rectangle((x, y, x + text_width - 1, y + text_height - 1), fill=color)
    draw.text((x + 2, y), label, fill=_WHITE if sum(color) < 450 else _BLACK, font=font)
    return True


def _panel(image: Image.Image, scale: float, boxes: np.ndarray, classes: np.ndarray, labels: Sequence[str],
           title: str) -> Image.Image:
    """One panel: the image at ``scale`` times its stored size, the boxes (stored pixels) drawn, a title strip."""
    picture = ImageDraw.Draw(image)
    for box, class_id, label in zip(boxes * scale, classes, labels):
        draw_box(picture, box, label, PALETTE[int(class_id) % len(PALETTE)], image.size)
    canvas = Image.new("RGB", (image.width, image.height + 18), _WHITE)
    canvas.paste(image, (0, 18))
    ImageDraw.Draw(canvas).text((4, 2), title, fill=_BLACK, font=_font(12))
    return canvas


def draw_validation_image(path: str, ground_truth: GroundTruth, prediction: Any, class_names: Sequence[str],
                          score_threshold: float) -> np.ndarray | None:
    """``[H, W, 3]`` uint8: the image at ``path`` twice, scaled to a long side of :data:`PANEL_SIDE`, its ground
    truth drawn on the left and its predictions scoring at least ``score_threshold`` on the right (class names,
    scores). None when the image cannot be decoded (any error of the decoder: a picture is never worth one)."""
    try:
        decoded = decode_image(path, min_side=PANEL_SIDE)
        scale = PANEL_SIDE / max(decoded.width, decoded.height)
        size = (max(1, round(decoded.width * scale)), max(1, round(decoded.height * scale)))
        image = decoded.image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    except Exception:
        return None
    gt_boxes = np.asarray(ground_truth[0], dtype=np.float64).reshape(-1, 4)
    gt_classes = np.asarray(ground_truth[1]).reshape(-1)
    boxes, scores, classes = (np.asarray(value) for value in _as_prediction(prediction))
    boxes, scores, classes = boxes.astype(np.float64).reshape(-1, 4), scores.reshape(-1), classes.reshape(-1)
    kept = np.argsort(-scores, kind="stable")
    kept = kept[scores[kept] >= score_threshold][::-1]  # the best drawn last: on top
    truth = _panel(image.copy(), scale, gt_boxes, gt_classes, [class_label(class_names, c) for c in gt_classes],
                   f"ground truth: {len(gt_classes)}")
    predicted = _panel(image, scale, boxes[kept], classes[kept],
                       [f"{class_label(class_names, classes[k])} {float(scores[k]):.2f}" for k in kept],
                       f"predictions >= {score_threshold:.3f}: {len(kept)}")
    canvas = Image.new("RGB", (truth.width * 2 + 8, truth.height), _WHITE)
    canvas.paste(truth, (0, 0))
    canvas.paste(predicted, (truth.width + 8, 0))
    return np.asarray(canvas)


def _ap_name(iou_threshold: float) -> str:
    return f"AP{iou_threshold * 100:.0f}" if abs(iou_threshold * 100 - round(iou_threshold * 100)) < 1e-9 \
        else f"AP@{iou_threshold:g}"


def draw_pr_curves(curves: dict[int, PRCurve], class_names: Sequence[str], score_threshold: float,
                   iou_threshold: float) -> np.ndarray:
    """``[H, W, 3]`` uint8 (about 820 x 520): precision against recall of each class with ground truth (COCO's
    interpolated precision, the one its AP is the mean of; the :data:`MAX_PLOT_CLASSES` classes with the most
    ground truth when there are more, which the plot says), a dot at each class's operating point
    (``score_threshold``), the mean over all those classes in bold, and a legend of each class's AP at
    ``iou_threshold`` and their mean (after ultralytics ``plot_pr_curve``)."""
    measured = [curve for curve in curves.values() if curve.ground_truth]
    shown = sorted(measured, key=lambda curve: (-curve.ground_truth, curve.class_id))[:MAX_PLOT_CLASSES]
    canvas = Image.new("RGB", (820, 520), _WHITE)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = 56, 36, 56 + PANEL_SIDE - 40, 36 + PANEL_SIDE - 40
    ap_name = _ap_name(iou_threshold)
    draw.text((left, 8), f"precision-recall at IoU {iou_threshold:g} (dots: score >= {score_threshold:.3f})",
              fill=_BLACK, font=_font(14))

    def point(recall: float, precision: float) -> tuple[float, float]:
        return left + recall * (right - left), bottom - precision * (bottom - top)

    for tick in np.linspace(0.0, 1.0, 6):
        x, y = point(tick, tick)
        draw.line((x, top, x, bottom), fill=_GRID)
        draw.line((left, y, right, y), fill=_GRID)
        draw.text((x - 8, bottom + 4), f"{tick:.1f}", fill=_BLACK, font=_font(11))
        draw.text((left - 26, y - 6), f"{tick:.1f}", fill=_BLACK, font=_font(11))
    draw.rectangle((left, top, right, bottom), outline=_BLACK)
    draw.text(((left + right) / 2 - 18, bottom + 20), "recall", fill=_BLACK, font=_font(12))
    _vertical_text(canvas, "precision", (6, (top + bottom) // 2 - 28), _BLACK, _font(12))

    recalls = np.linspace(0.0, 1.0, 101)
    legend_x, legend_y = right + 24, top
    for index, curve in enumerate(shown):
        color = PALETTE[index % len(PALETTE)]
        draw.line([point(r, p) for r, p in zip(recalls, curve.sampled_precision())], fill=color, width=1)
        tp, fp, fn = curve.counts(score_threshold)
        if tp + fp:
            x, y = point(tp / (tp + fn), tp / (tp + fp))
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=color)
        draw.line((legend_x, legend_y + 7, legend_x + 16, legend_y + 7), fill=color, width=3)
        label = f"{_shorten(class_label(class_names, curve.class_id), 24)} {curve.average_precision():.3f}"
        draw.text((legend_x + 22, legend_y), label, fill=_BLACK, font=_font(12))
        legend_y += 18
    if measured:
        mean = np.mean([curve.sampled_precision() for curve in measured], axis=0)
        draw.line([point(r, p) for r, p in zip(recalls, mean)], fill=(0, 0, 200), width=3)
        draw.line((legend_x, legend_y + 7, legend_x + 16, legend_y + 7), fill=(0, 0, 200), width=3)
        draw.text((legend_x + 22, legend_y), f"all classes m{ap_name} {float(mean.mean()):.3f}", fill=_BLACK,
                  font=_font(12))
        legend_y += 18
    else:
        draw.text((left + 12, top + 12), "no ground truth: no curve", fill=_BLACK, font=_font(12))
    draw.text((legend_x, top - 20), f"class, {ap_name}", fill=_BLACK, font=_font(12))
    if len(measured) > len(shown):
        draw.text((legend_x, legend_y + 6), f"the {len(shown)} of {len(measured)} classes\nwith the most "
                  "ground truth", fill=(90, 90, 90), font=_font(11))
    return np.asarray(canvas)


def _vertical_text(canvas: Image.Image, text: str, at: tuple[int, int], color: tuple[int, int, int],
                   font: Any) -> None:
    """``text`` turned a quarter left (read bottom to top), its top-left corner at ``at``."""
    mask = Image.new("L", (_text_width(ImageDraw.Draw(canvas), text, font) + 2, 16), 0)
    ImageDraw.Draw(mask).text((1, 1), text, fill=255, font=font)
    mask = mask.rotate(90, expand=True)
    canvas.paste(Image.new("RGB", mask.size, color), at, mask)


def _fold(matrix: np.ndarray, class_names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The matrix and its axis labels, at most :data:`MAX_PLOT_CLASSES` classes (those in the most pairs, in
    class order), the others summed into one "other classes" row and column; background last."""
    classes = matrix.shape[0] - 1
    labels = [class_label(class_names, c) for c in range(classes)]
    if classes <= MAX_PLOT_CLASSES:
        return matrix, labels + ["background"]
    involvement = matrix[:classes].sum(1) + matrix[:, :classes].sum(0)
    kept = np.sort(np.argsort(-involvement, kind="stable")[:MAX_PLOT_CLASSES])
    place = np.full(classes + 1, MAX_PLOT_CLASSES)  # every other class -> the "other" row/column
    place[kept] = np.arange(MAX_PLOT_CLASSES)
    place[classes] = MAX_PLOT_CLASSES + 1
    folded = np.zeros((MAX_PLOT_CLASSES + 2, MAX_PLOT_CLASSES + 2), dtype=np.int64)
    np.add.at(folded, (place[:, None], place[None, :]), matrix)
    return folded, [labels[c] for c in kept] + [f"{classes - MAX_PLOT_CLASSES} other classes", "background"]


def draw_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], score_threshold: float,
                          iou_threshold: float) -> np.ndarray:
    """``[H, W, 3]`` uint8 (at most about 700 x 720): the counts of ``matrix`` (``[C+1, C+1]``, rows predicted,
    columns true, see :func:`~.evaluation.confusion_matrix`) with the class names on both axes, each cell
    coloured by its share of its column (the true class: ultralytics ``ConfusionMatrix.plot(normalize=True)``);
    more than :data:`MAX_PLOT_CLASSES` classes are folded as :func:`_fold` says."""
    folded, labels = _fold(np.asarray(matrix, dtype=np.int64), class_names)
    size = len(labels)
    cell = int(np.clip(PANEL_SIDE // size, 20, 60))
    font, small = _font(12), _font(max(8, min(12, cell // 3)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [_shorten(label, 20) for label in labels]
    margin = min(140, max(_text_width(probe, label, font) for label in labels) + 10)
    left, top = margin + 20, margin + 56
    canvas = Image.new("RGB", (left + size * cell + 16, top + size * cell + 12), _WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), f"confusion matrix at score >= {score_threshold:.3f}, IoU {iou_threshold:g}", fill=_BLACK,
              font=_font(14))
    draw.text((left, 26), "true class (colour: share of the column)", fill=_BLACK, font=font)
    _vertical_text(canvas, "predicted class", (2, top + max(0, size * cell // 2 - 45)), _BLACK, font)
    shares = folded / np.maximum(folded.sum(0, keepdims=True), 1)
    colors = np.stack([np.interp(shares, np.linspace(0, 1, len(_BLUES)), _BLUES[:, k]) for k in range(3)], -1)
    for row in range(size):
        for column in range(size):
            x, y = left + column * cell, top + row * cell
            color = tuple(int(round(v)) for v in colors[row, column])
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=color, outline=_GRID)
            if folded[row, column]:
                text = str(folded[row, column])
                draw.text((x + (cell - _text_width(draw, text, small)) / 2, y + cell / 2 - 6), text,
                          fill=_WHITE if shares[row, column] > 0.5 else _BLACK, font=small)
    for index, label in enumerate(labels):
        width = _text_width(draw, label, font)
        draw.text((left - width - 4, top + index * cell + cell / 2 - 7), label, fill=_BLACK, font=font)
        _vertical_text(canvas, label, (left + index * cell + cell // 2 - 9, top - width - 8), _BLACK, font)
    return np.asarray(canvas)

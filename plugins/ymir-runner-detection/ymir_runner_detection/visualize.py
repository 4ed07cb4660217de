"""Validation images with predicted boxes drawn, for tensorboard (people would rather look than read).

Pictures are an optional output: the caller draws them inside ``context.optional_output``. Drawing itself never
raises on what a model predicts: an early epoch predicts boxes of zero size, inverted corners, a fraction of a
pixel, far outside the image or NaN, and :func:`pixel_rectangle` turns each into something PIL can draw, or
nothing.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .engine import predict_batch

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


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
    """An outline and its label on ``draw`` (an image of ``size`` = width, height); False when the box cannot be
    drawn (see :func:`pixel_rectangle`), which is not an error."""
    rectangle = pixel_rectangle(box, *size)
    if rectangle is None:
        return False
    left, top, right, bottom = rectangle
    draw.rectangle(rectangle, outline=color, width=max(1, min(line_width, right - left + 1, bottom - top + 1)))
    draw.text((min(left + 2, size[0] - 1), min(top + 1, size[1] - 1)), label, fill=color)
    return True


def class_label(class_names: Sequence[str], class_id: Any) -> str:
    """The class's name, or its number when the model predicts a class the task does not have."""
    index = int(class_id)
    return class_names[index] if 0 <= index < len(class_names) else f"class {index}"


def draw_detections(model: Any, loader: Any, class_names: Sequence[str], score_threshold: float,
                    count: int = 4) -> list[np.ndarray]:
    """The first ``count`` images of an eval loader (letterboxed input) with predictions above the threshold."""
    batch = next(iter(loader))
    images = batch["images"][:count]
    detections = predict_batch(model, images, None, score_threshold=score_threshold)
    drawn = []
    for image, detection in zip(images, detections):
        canvas = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
        draw = ImageDraw.Draw(canvas)
        for box, score, class_id in zip(detection.boxes, detection.scores, detection.classes):
            draw_box(draw, box, f"{class_label(class_names, class_id)} {float(score):.2f}",
                     PALETTE[int(class_id) % len(PALETTE)], canvas.size)
        drawn.append(np.asarray(canvas))
    return drawn

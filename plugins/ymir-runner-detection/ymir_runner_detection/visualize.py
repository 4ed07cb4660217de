"""Validation images with predicted boxes drawn, for tensorboard (people would rather look than read)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .engine import predict_batch

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


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
        for (x1, y1, x2, y2), score, class_id in zip(detection.boxes, detection.scores, detection.classes):
            color = PALETTE[int(class_id) % len(PALETTE)]
            draw.rectangle((float(x1), float(y1), float(x2) - 1, float(y2) - 1), outline=color, width=2)
            draw.text((float(x1) + 2, float(y1) + 1), f"{class_names[int(class_id)]} {score:.2f}", fill=color)
        drawn.append(np.asarray(canvas))
    return drawn

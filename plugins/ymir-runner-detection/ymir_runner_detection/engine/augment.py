"""Numpy/PIL image pipeline: letterbox, flip, scale/translate jitter, colour jitter, mosaic.

Images are ``HxWx3`` uint8 RGB arrays. Boxes are float ``[x1, y1, x2, y2]`` in
pixel-edge coordinates (x2 exclusive); every geometric transform here is an
axis-aligned scale + translation (+ mirror), so boxes map exactly. PIL's
``resize`` maps pixel edges (``x' = x * new_w / w``) and antialiases when
shrinking, which keeps this exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # image, boxes [N,4], classes [N]


@dataclass(frozen=True)
class LetterboxInfo:
    """How an original image was placed into the network input: ``x_input = x * scale_x + pad_x``."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    orig_width: int
    orig_height: int


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation parameters (probabilities and jitter ranges)."""

    scale_range: tuple[float, float] = (0.6, 1.4)  # multiplies the letterbox scale
    translate: float = 0.1  # extra shift beyond the canvas, fraction of img_size
    flip_prob: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.5
    channel_gain: float = 0.1  # per-channel multiplicative colour cast
    mosaic_prob: float = 0.0
    #: 1.0: every image keeps the letterbox scale (ultralytics' mosaic), so objects are seen at the size they have
    #: at inference. 0.5 (until 2026-12) shrank them by half: on dense 15-70 px tree crowns, mosaic 0.5 gave
    #: mAP50-95 0.015 with tiles at 0.5, 0.032 at 1.0, and 0.047 without mosaic (bench_real_data.py, 400 steps).
    mosaic_tile_scale: float = 1.0  # tile size relative to a full letterbox (times the scale jitter)
    min_box_size: float = 2.0  # pixels, boxes smaller after clipping are dropped
    min_visible: float = 0.25  # fraction of a box's area that must stay inside
    fill: int = 114


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of an HxWx3 uint8 array."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def place_on_canvas(image: np.ndarray, canvas_size: int, offset_x: int, offset_y: int, fill: int) -> np.ndarray:
    """Paste ``image`` with its top-left corner at ``(offset_x, offset_y)``, cropping what falls outside."""
    canvas = np.full((canvas_size, canvas_size, 3), fill, dtype=np.uint8)
    paste_into(canvas, image, offset_x, offset_y)
    return canvas


def paste_into(canvas: np.ndarray, image: np.ndarray, offset_x: int, offset_y: int) -> None:
    """In-place paste with cropping; offsets may be negative or beyond the canvas."""
    height, width = image.shape[:2]
    x0, y0 = max(offset_x, 0), max(offset_y, 0)
    x1, y1 = min(offset_x + width, canvas.shape[1]), min(offset_y + height, canvas.shape[0])
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = image[y0 - offset_y : y1 - offset_y, x0 - offset_x : x1 - offset_x]


def paste_resized(
    canvas: np.ndarray, image: np.ndarray, new_size: tuple[int, int], offset: tuple[int, int],
    region: tuple[int, int, int, int] | None = None,
) -> None:
    """Paste ``image`` resized to ``new_size`` at ``offset``, resizing only the part that stays visible.

    ``region`` (x0, y0, x1, y1) limits the visible area (default: the whole
    canvas). Resampling just the visible source box keeps the geometry exact
    (``x' = x * new_w / w + offset_x``) while skipping pixels that would be
    cropped away, which is most of them for enlarged images and mosaic tiles.
    """
    height, width = image.shape[:2]
    (new_w, new_h), (offset_x, offset_y) = new_size, offset
    x0, y0, x1, y1 = region or (0, 0, canvas.shape[1], canvas.shape[0])
    visible_x0, visible_y0 = max(offset_x, x0), max(offset_y, y0)
    visible_x1, visible_y1 = min(offset_x + new_w, x1), min(offset_y + new_h, y1)
    if visible_x1 <= visible_x0 or visible_y1 <= visible_y0:
        return
    scale_x, scale_y = new_w / width, new_h / height
    source_box = (
        (visible_x0 - offset_x) / scale_x, (visible_y0 - offset_y) / scale_y,
        (visible_x1 - offset_x) / scale_x, (visible_y1 - offset_y) / scale_y,
    )
    patch = Image.fromarray(image).resize((visible_x1 - visible_x0, visible_y1 - visible_y0), Image.Resampling.BILINEAR,
                                          box=source_box)
    canvas[visible_y0:visible_y1, visible_x0:visible_x1] = np.asarray(patch)


def scale_boxes(boxes: np.ndarray, scale_x: float, scale_y: float, offset_x: float, offset_y: float) -> np.ndarray:
    """``x * scale + offset`` on each box coordinate."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scale = np.array([scale_x, scale_y, scale_x, scale_y], dtype=np.float32)
    offset = np.array([offset_x, offset_y, offset_x, offset_y], dtype=np.float32)
    return boxes * scale + offset


def letterbox_scale(width: float, height: float, img_size: int) -> float:
    """The factor :func:`letterbox` resizes a ``width`` x ``height`` image by: its long side becomes ``img_size``."""
    return min(img_size / width, img_size / height)


def letterbox_placement(width: int, height: int, img_size: int) -> tuple[int, int, int, int]:
    """``(new_width, new_height, pad_x, pad_y)``: a ``width`` x ``height`` image in the ``img_size`` square, resized
    keeping its aspect ratio so the long side is ``img_size`` (sides rounded, at least 1 pixel) and centred (the odd
    pixel of padding right and below)."""
    scale = letterbox_scale(width, height, img_size)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return new_w, new_h, (img_size - new_w) // 2, (img_size - new_h) // 2


def letterbox(
    image: np.ndarray, img_size: int, boxes: np.ndarray | None = None, fill: int = 114
) -> tuple[np.ndarray, np.ndarray, LetterboxInfo]:
    """Resize keeping the aspect ratio so the long side is ``img_size``, pad centrally to a square."""
    height, width = image.shape[:2]
    new_w, new_h, pad_x, pad_y = letterbox_placement(width, height, img_size)
    canvas = place_on_canvas(resize_image(image, new_w, new_h), img_size, pad_x, pad_y, fill)
    info = LetterboxInfo(new_w / width, new_h / height, pad_x, pad_y, width, height)
    out_boxes = (np.zeros((0, 4), np.float32) if boxes is None
                 else scale_boxes(boxes, info.scale_x, info.scale_y, pad_x, pad_y))
    return canvas, out_boxes, info


def letterbox_image(image: Image.Image, img_size: int, fill: int = 114) -> tuple[np.ndarray, LetterboxInfo]:
    """:func:`letterbox` of an RGB Pillow image, pixel for pixel the same, without converting the image to numpy
    before it is resized: Pillow resizes and pastes with the GIL released, so threads letterbox in parallel."""
    width, height = image.size
    new_w, new_h, pad_x, pad_y = letterbox_placement(width, height, img_size)
    canvas = Image.new("RGB", (img_size, img_size), (fill, fill, fill))
    canvas.paste(image if (new_w, new_h) == image.size else image.resize((new_w, new_h), Image.Resampling.BILINEAR),
                 (pad_x, pad_y))
    return np.asarray(canvas), LetterboxInfo(new_w / width, new_h / height, pad_x, pad_y, width, height)


def clip_and_filter(
    boxes: np.ndarray, classes: np.ndarray, width: int, height: int, min_size: float = 2.0, min_visible: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image; drop those thinner than ``min_size`` or mostly outside."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    sizes = clipped[:, 2:] - clipped[:, :2]
    visible = sizes[:, 0] * sizes[:, 1]
    keep = (sizes[:, 0] >= min_size) & (sizes[:, 1] >= min_size) & (visible >= min_visible * np.maximum(areas, 1e-6))
    return clipped[keep], classes[keep]


def horizontal_flip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; ``x -> width - x`` swaps the roles of x1 and x2."""
    width = image.shape[1]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    flipped = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    return np.ascontiguousarray(image[:, ::-1]), flipped


def color_jitter(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Random brightness, contrast, per-channel colour cast and saturation.

    The per-channel part is one 768-entry lookup table and saturation a blend
    with the grey image, both in PIL's C code (about 0.5 ms at 256x256).
    """
    contrast = 1.0 + rng.uniform(-config.contrast, config.contrast)
    brightness = 1.0 + rng.uniform(-config.brightness, config.brightness)
    gains = brightness * (1.0 + rng.uniform(-config.channel_gain, config.channel_gain, size=3))
    saturation = 1.0 + rng.uniform(-config.saturation, config.saturation)
    # Contrast pivots around the mean grey level; a strided subsample estimates it cheaply.
    subsample = image.reshape(-1, 3)[::64].astype(np.float32)
    mean_grey = float((subsample @ np.array([0.299, 0.587, 0.114], np.float32)).mean()) if len(subsample) else 0.0
    values = np.arange(256, dtype=np.float32)
    table = np.concatenate([gain * (contrast * values + (1.0 - contrast) * mean_grey) for gain in gains])
    pil_image = Image.fromarray(image).point(np.clip(table, 0, 255).round().astype(np.uint8).tolist())
    grey = pil_image.convert("L").convert("RGB")
    return np.array(Image.blend(grey, pil_image, saturation))


def random_scale_translate(
    image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, img_size: int, rng: np.random.Generator,
    config: AugmentConfig,
) -> Sample:
    """Letterbox with random scale jitter and random placement (objects may be cut at the border)."""
    height, width = image.shape[:2]
    scale = letterbox_scale(width, height, img_size) * rng.uniform(*config.scale_range)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    shift = config.translate * img_size
    offset_x = round(rng.uniform(min(0, img_size - new_w) - shift, max(0, img_size - new_w) + shift))
    offset_y = round(rng.uniform(min(0, img_size - new_h) - shift, max(0, img_size - new_h) + shift))
    canvas = np.full((img_size, img_size, 3), config.fill, dtype=np.uint8)
    paste_resized(canvas, image, (new_w, new_h), (offset_x, offset_y))
    moved = scale_boxes(boxes, new_w / width, new_h / height, offset_x, offset_y)
    out_boxes, out_classes = clip_and_filter(moved, classes, img_size, img_size, config.min_box_size,
                                             config.min_visible)
    return canvas, out_boxes, out_classes


def mosaic(samples: list[Sample], img_size: int, rng: np.random.Generator, config: AugmentConfig) -> Sample:
    """Four images around a random centre point, each confined to its quadrant (YOLO-style mosaic)."""
    if len(samples) != 4:
        raise ValueError("mosaic needs exactly 4 samples")
    canvas = np.full((img_size, img_size, 3), config.fill, dtype=np.uint8)
    centre_x = round(rng.uniform(0.25, 0.75) * img_size)
    centre_y = round(rng.uniform(0.25, 0.75) * img_size)
    all_boxes, all_classes = [], []
    for quadrant, (image, boxes, classes) in enumerate(samples):
        height, width = image.shape[:2]
        scale = config.mosaic_tile_scale * min(img_size / width, img_size / height) * rng.uniform(*config.scale_range)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        offset_x = centre_x - new_w if quadrant in (0, 2) else centre_x
        offset_y = centre_y - new_h if quadrant in (0, 1) else centre_y
        paste_resized(canvas, image, (new_w, new_h), (offset_x, offset_y))
        all_boxes.append(scale_boxes(boxes, new_w / width, new_h / height, offset_x, offset_y))
        all_classes.append(np.asarray(classes, dtype=np.int64).reshape(-1))
    out_boxes, out_classes = clip_and_filter(
        np.concatenate(all_boxes), np.concatenate(all_classes), img_size, img_size, config.min_box_size,
        config.min_visible,
    )
    return canvas, out_boxes, out_classes


class TrainAugmentation:
    """The training pipeline: (mosaic | scale/translate letterbox) -> flip -> colour jitter."""

    def __init__(self, img_size: int, config: AugmentConfig | None = None):
        self.img_size = img_size
        self.config = config or AugmentConfig()

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        classes: np.ndarray,
        rng: np.random.Generator,
        draw_extra_sample: Callable[[], Sample] | None = None,
    ) -> Sample:
        """Augment one sample; ``draw_extra_sample`` supplies random other samples for mosaic."""
        cfg = self.config
        if draw_extra_sample is not None and cfg.mosaic_prob > 0 and rng.random() < cfg.mosaic_prob:
            samples = [(image, boxes, classes)] + [draw_extra_sample() for _ in range(3)]
            image, boxes, classes = mosaic(samples, self.img_size, rng, cfg)
        else:
            image, boxes, classes = random_scale_translate(image, boxes, classes, self.img_size, rng, cfg)
        if rng.random() < cfg.flip_prob:
            image, boxes = horizontal_flip(image, boxes)
        image = color_jitter(image, rng, cfg)
        return image, boxes, classes

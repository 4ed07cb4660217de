"""Object masks: the one home of mask decoding and encoding in the project (segmentation.md sections 2 and 4).

Everything goes through COCO's own mask API as faster-coco-eval ships it (:mod:`faster_coco_eval.core.mask`,
pycocotools' rasteriser and RLE codec): the platform evaluates masks rasterised that way, and a PIL or OpenCV
polygon fill differs from it on about 10 % of the pixels. No RLE codec or polygon fill of our own.

Conventions:

- a mask is a 2-D numpy array ``[H, W]`` at the image's STORED size (no EXIF rotation), ``bool`` (any other dtype
  is read as ``!= 0``); row ``y``, column ``x``;
- an RLE is COCO's dict ``{"size": [H, W], "counts": ...}``; the ones this module returns have ``counts`` as a
  compressed ``str`` (the only form the platform reads in an infer-result.json);
- a box is COCO's ``[x, y, w, h]`` in ints: the mask's tight bounds, ``x + w`` exclusive;
- a ``segmentation`` is an annotation's value as the json holds it: an RLE dict (string counts, or a list of
  counts), a list of polygons ``[[x1, y1, x2, y2, ...], ...]``, or ``{}`` for a box-only object.

Bad segmentations raise :class:`MaskProblem`, whose ``reason`` is the skip reason the dataset readers count
(:data:`NO_MASK`, :data:`SIZE_DIFFERS`, :data:`BAD_POLYGON`, :data:`MALFORMED_MASK`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import faster_coco_eval.mask_api_new_cpp as _coco_cpp
import numpy as np
from faster_coco_eval.core import mask as coco_mask

#: Skip reasons (``SkipLog`` counts objects under them).
NO_MASK = "object without mask"
SIZE_DIFFERS = "mask size differs from image"
BAD_POLYGON = "bad polygon"
MALFORMED_MASK = "malformed mask"

#: The label of unlabelled pixels in a label map (the platform's semantic canvas starts as 255: ignored).
IGNORE_LABEL = 255

Rle = dict[str, Any]


class MaskProblem(ValueError):
    """A segmentation that cannot be used. ``reason`` is the skip reason it is counted under; the message is the
    detail (``counts sum to 300 pixels, the image has 20 x 16 = 320``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# --- reading a segmentation -------------------------------------------------------------------------------------


def has_mask(segmentation: Any) -> bool:
    """False for a box-only object (``{}``, ``None``, no key): what the platform's exporter writes for an object
    without a mask. Anything else is meant as a mask (it may still be a bad one: :func:`check_segmentation`)."""
    return segmentation is not None and segmentation != {}


def check_segmentation(segmentation: Any, height: int, width: int) -> None:
    """Check ``segmentation`` against an image of ``height`` x ``width`` stored pixels WITHOUT rasterising it.

    Raises :class:`MaskProblem`: :data:`NO_MASK` for ``{}``; :data:`SIZE_DIFFERS` for an RLE whose ``size`` is
    not ``[height, width]`` or whose counts do not sum to ``height * width`` (the platform would crash or corrupt
    its evaluation on it); :data:`BAD_POLYGON` for no polygon, an empty or odd-length one, fewer than 3 points or
    a coordinate that is not a finite number; :data:`MALFORMED_MASK` for anything else. Cost: an RLE string's
    counts are read (no pixel is written); a polygon's coordinates are looked at.
    """
    if not has_mask(segmentation):
        raise MaskProblem(NO_MASK, "segmentation {}: a box-only object")
    if isinstance(segmentation, dict):
        _check_rle(segmentation, height, width)
    elif isinstance(segmentation, list):
        _check_polygons(segmentation)
    else:
        raise MaskProblem(MALFORMED_MASK, f"segmentation is a {type(segmentation).__name__}, not an RLE dict or "
                                          f"a list of polygons")


def check_segmentations(segmentations: Sequence[Any], height: int, width: int) -> list[MaskProblem | None]:
    """:func:`check_segmentation` of one image's segmentations: the problem of each (None: usable). The RLE
    strings are read in one call (reading a 100,000-object file checks every mask)."""
    problems: list[MaskProblem | None] = [None] * len(segmentations)
    size = [height, width]
    strings = []
    for index, segmentation in enumerate(segmentations):
        if type(segmentation) is dict and type(segmentation.get("counts")) is str and segmentation.get("size") == size:
            strings.append(index)
            continue
        try:
            check_segmentation(segmentation, height, width)
        except MaskProblem as problem:
            problems[index] = problem
    if not strings:
        return problems
    try:
        runs = _coco_cpp.toUncompressedRLE([segmentations[index] for index in strings])
    except (ValueError, RuntimeError, UnicodeError):  # one is broken (or its size not ints): find which, one by one
        for index in strings:
            try:
                check_segmentation(segmentations[index], height, width)
            except MaskProblem as problem:
                problems[index] = problem
        return problems
    pixels = height * width
    for index, rle in zip(strings, runs):
        total = sum(rle["counts"])
        if total != pixels:
            problems[index] = MaskProblem(SIZE_DIFFERS, f"RLE counts sum to {total} pixels, the image has {height} x "
                                                        f"{width} = {pixels}")
    return problems


def _rle_size(rle: dict[str, Any]) -> tuple[int, int]:
    size = rle.get("size")
    if "counts" not in rle or not isinstance(size, (list, tuple)) or len(size) != 2:
        raise MaskProblem(MALFORMED_MASK, f"RLE without 'counts' and a 'size' [H, W]: keys {sorted(rle)}")
    try:
        height, width = (int(value) for value in size)
    except (TypeError, ValueError, OverflowError):
        raise MaskProblem(MALFORMED_MASK, f"RLE size {size!r} is not two integers") from None
    if [height, width] != list(size):
        raise MaskProblem(MALFORMED_MASK, f"RLE size {size!r} is not two integers")
    return height, width


def _check_rle(rle: dict[str, Any], height: int, width: int) -> None:
    size = _rle_size(rle)
    if size != (height, width):
        raise MaskProblem(SIZE_DIFFERS, f"RLE size [H, W] = {list(size)}, the image is {height} x {width} (H x W)")
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        try:
            counts = _coco_cpp.toUncompressedRLE([{"size": [height, width], "counts": counts}])[0]["counts"]
        except ValueError:  # COCO's reader stops at H x W pixels
            raise MaskProblem(SIZE_DIFFERS, f"RLE counts exceed the image's {height} x {width} = {height * width} "
                                            f"pixels") from None
        except (RuntimeError, UnicodeError) as error:
            raise MaskProblem(MALFORMED_MASK, f"RLE counts are not a COCO RLE string ({error})") from None
    elif not isinstance(counts, list) or not all(type(count) is int and count >= 0 for count in counts):
        raise MaskProblem(MALFORMED_MASK, "RLE counts are neither a string nor a list of non-negative integers")
    total = sum(counts)
    if total != height * width:
        raise MaskProblem(SIZE_DIFFERS, f"RLE counts sum to {total} pixels, the image has {height} x {width} = "
                                        f"{height * width}")


def _check_polygons(polygons: list[Any]) -> None:
    if not polygons:
        raise MaskProblem(BAD_POLYGON, "segmentation [] holds no polygon")
    for number, polygon in enumerate(polygons):
        if not isinstance(polygon, list):
            raise MaskProblem(BAD_POLYGON, f"polygon {number} is not a list of coordinates")
        if not polygon or len(polygon) % 2:
            raise MaskProblem(BAD_POLYGON, f"polygon {number} has {len(polygon)} coordinates (an even number of "
                                           f"at least 6 is needed)")
        if len(polygon) < 6:
            raise MaskProblem(BAD_POLYGON, f"polygon {number} has {len(polygon) // 2} points (at least 3 needed)")
        if not all(type(value) in (int, float) and math.isfinite(value) for value in polygon):
            raise MaskProblem(BAD_POLYGON, f"polygon {number} has a coordinate that is not a finite number")


def to_rle(segmentation: Any, height: int, width: int) -> Rle:
    """``segmentation`` as ONE compressed RLE of a ``height`` x ``width`` image (several polygons merged, as COCO
    merges them), checked first (:func:`check_segmentation`, whose :class:`MaskProblem` it raises). Polygons
    are rasterised by COCO's rasteriser, as the platform rasterises them."""
    check_segmentation(segmentation, height, width)
    return _rle_of_checked(segmentation, height, width)


def _rle_of_checked(segmentation: Any, height: int, width: int) -> Rle:
    """:func:`to_rle` of a segmentation already checked (:func:`check_segmentation`)."""
    if isinstance(segmentation, list):
        parts = coco_mask.frPyObjects(segmentation, height, width)
        rle = parts[0] if len(parts) == 1 else coco_mask.merge(parts)
    else:
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        else:
            rle = {"size": [height, width], "counts": counts}
    return _str_counts(rle)


def _str_counts(rle: Rle) -> Rle:
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def decode_segmentation(segmentation: Any, height: int, width: int, factor: int = 1) -> np.ndarray:
    """``segmentation`` as a ``bool`` mask ``[height, width]`` (stored pixels), or reduced ``factor`` times as
    :func:`reduce_mask` reduces it (``[ceil(height / factor), ceil(width / factor)]``), as
    :func:`~.images.decode_image` reduces the image. Raises :class:`MaskProblem` (:func:`check_segmentation`)."""
    mask = decode_rle(to_rle(segmentation, height, width))
    return reduce_mask(mask, factor) if factor > 1 else mask


def decode_rle(rle: Rle) -> np.ndarray:
    """A checked RLE (:func:`to_rle`) as a ``bool`` mask ``[H, W]`` (Fortran-ordered, as COCO decodes)."""
    return coco_mask.decode(rle).view(np.bool_)


# --- writing a mask ---------------------------------------------------------------------------------------------


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape[0] < 1 or mask.shape[1] < 1:
        raise ValueError(f"a mask is a 2-D array [H, W] with H, W >= 1, not shape {mask.shape}")
    return mask if mask.dtype == np.bool_ else mask != 0


def encode_mask(mask: np.ndarray) -> Rle:
    """``mask`` ``[H, W]`` (bool; other dtypes: ``!= 0``) as ``{"size": [H, W], "counts": "<compressed RLE>"}``,
    the form the platform reads (a ``str``, never bytes or a list). Memory: at most one ``H x W`` byte copy
    besides ``mask`` (COCO encodes column-major). An empty mask encodes too: callers that must not write one
    check :func:`mask_area` first."""
    bits = np.asfortranarray(_as_bool(mask)).view(np.uint8)
    return _str_counts(coco_mask.encode(bits))


def mask_area(mask: np.ndarray) -> int:
    """The number of pixels in ``mask`` ``[H, W]`` (COCO's ``area`` of a mask)."""
    return int(np.count_nonzero(mask))


def mask_bbox(mask: np.ndarray) -> list[int]:
    """``mask``'s tight box ``[x, y, w, h]`` in ints (``x + w`` exclusive, as COCO's ``bbox``); ``[0, 0, 0, 0]``
    for an empty mask."""
    bits = _as_bool(mask)
    columns = np.flatnonzero(bits.any(axis=0))
    if not len(columns):
        return [0, 0, 0, 0]
    rows = np.flatnonzero(bits.any(axis=1))
    x, y = int(columns[0]), int(rows[0])
    return [x, y, int(columns[-1]) + 1 - x, int(rows[-1]) + 1 - y]


def rle_area(rle: Rle) -> int:
    """The pixel count of a checked RLE, without decoding it."""
    return _areas([rle])[0]


def rle_bbox(rle: Rle) -> list[int]:
    """The tight ``[x, y, w, h]`` int box of a checked RLE, without decoding it (``[0, 0, 0, 0]`` when empty)."""
    return [int(value) for value in coco_mask.toBbox(rle)]


def mask_areas(segmentations: Sequence[Any], height: int, width: int) -> tuple[list[int], int]:
    """The pixel count of each of one image's CHECKED segmentations (:func:`check_segmentation`, as the dataset
    readers check them) and of their union, from COCO's RLE arithmetic: no ``H x W`` array is made (the dataset
    report's pixels per class and unlabelled share)."""
    if not segmentations:
        return [], 0
    rles = [_rle_of_checked(segmentation, height, width) for segmentation in segmentations]
    areas = _areas(rles + [coco_mask.merge(rles)] if len(rles) > 1 else rles)
    return areas[:len(rles)], areas[-1]


def _areas(rles: Sequence[Rle]) -> list[int]:
    """Pixel counts from COCO's runs (alternating off / on from the first pixel): many times faster than
    ``coco_mask.area`` on masks of many runs."""
    return [sum(runs["counts"][1::2]) for runs in _coco_cpp.toUncompressedRLE(list(rles))]


def merge_rles(rles: Sequence[Rle]) -> Rle:
    """The union of RLEs of one image size as one compressed RLE (a multi-part instance is ONE RLE)."""
    if not rles:
        raise ValueError("merge_rles needs at least one RLE")
    return _str_counts(coco_mask.merge([dict(rle) for rle in rles]) if len(rles) > 1 else rles[0])


# --- reduced masks and label maps ------------------------------------------------------------------------------


def reduce_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """``mask`` ``[H, W]`` reduced ``factor`` times to ``[ceil(H / factor), ceil(W / factor)]`` ``bool``, as
    :func:`~.images.decode_image` reduces the image (PIL's box reduce): a reduced pixel is in the mask when at
    least half of the stored pixels of its block are (blocks at the right and bottom edges may be smaller)."""
    bits = _as_bool(mask)
    if factor <= 1:
        return bits
    height, width = bits.shape
    out_h, out_w = -(-height // factor), -(-width // factor)
    padded = bits
    if (out_h * factor, out_w * factor) != (height, width):
        padded = np.zeros((out_h * factor, out_w * factor), dtype=np.bool_)
        padded[:height, :width] = bits
    inside = padded.reshape(out_h, factor, out_w, factor).sum(axis=(1, 3), dtype=np.uint16)
    block_rows = np.full(out_h, factor, dtype=np.uint16)
    block_rows[-1] = height - (out_h - 1) * factor
    block_columns = np.full(out_w, factor, dtype=np.uint16)
    block_columns[-1] = width - (out_w - 1) * factor
    pixels = block_rows[:, None] * block_columns[None, :]
    return 2 * inside >= pixels


def paint_label_map(masks: Iterable[tuple[int, np.ndarray]], height: int, width: int) -> np.ndarray:
    """A ``uint8`` label map ``[height, width]`` from ``(class_id, mask)`` pairs painted IN ORDER (a later object
    paints over an earlier one, as the platform paints semantic ground truth) on a canvas of
    :data:`IGNORE_LABEL`. ``masks`` is consumed one at a time: pass a generator to keep one mask alive."""
    canvas = np.full((height, width), IGNORE_LABEL, dtype=np.uint8)
    for class_id, mask in masks:
        if not 0 <= class_id < IGNORE_LABEL:
            raise ValueError(f"class id {class_id} does not fit a uint8 label map beside {IGNORE_LABEL}")
        canvas[_as_bool(mask)] = class_id
    return canvas

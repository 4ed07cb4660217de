"""``seg-coco:raw`` written as the platform exports it (segmentation.md section 2): what ``ymir-runner sandbox``
and the testing kit write for object types 3 and 4, so that a tree made here is read as the platform's own
exports are.

The form: ONE file, ``/in/annotations/coco-annotations.json`` (:data:`SEG_COCO_FILE`), named on every index
line (train and val share it); ``images`` every asset, ``id`` 1-based, ``file_name`` the asset's basename,
``width`` / ``height`` its stored pixels; ``categories`` only the classes present, ``id`` the 0-based index into
``class_names``; ``annotations`` ``{id, image_id, category_id, iscrowd, bbox (ints), confidence -1, area (int),
segmentation}``, in the order given (later objects paint over earlier ones in semantic ground truth), where
``segmentation`` is a compressed RLE ``{"counts": "<string>", "size": [H, W]}``, ONE polygon of ints
``[[x1, y1, ...]]``, or ``{}`` for a box-only object.

:func:`export_segmentation` turns any COCO segmentation a source holds into one of these forms with
:mod:`.masks` (COCO's rasteriser and codec): list counts become a string, several polygons one merged RLE, a
polygon's coordinates ints as the platform imports them (truncated); a segmentation that does not fit the image
raises :class:`~.masks.MaskProblem` with the reason the readers count.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Sequence

import numpy as np

from . import masks
from .atomic import atomic_write_text

#: The one annotation file of a seg-coco export, named on every line of train-index.tsv and val-index.tsv.
SEG_COCO_FILE = "/in/annotations/coco-annotations.json"


class SegCocoObject(NamedTuple):
    """One ``annotations`` entry: ``class_id`` indexes ``class_names``; ``segmentation`` in an exported form
    (:func:`export_segmentation`); ``bbox`` ``[x, y, w, h]`` ints; ``area`` an int (the source's, never
    recomputed when it gave one)."""

    class_id: int
    segmentation: Any
    bbox: tuple[int, int, int, int]
    area: int
    iscrowd: int = 0


class SegCocoImage(NamedTuple):
    """One ``images`` entry with its objects, in file order."""

    file_name: str
    width: int
    height: int
    objects: Sequence[SegCocoObject] = ()


def export_segmentation(segmentation: Any, height: int, width: int) -> Any:
    """``segmentation`` as the platform exports it for an image of ``height`` x ``width`` stored pixels: a
    compressed RLE (from an RLE with string or list counts, or several polygons merged by COCO's rasteriser), or
    one polygon of ints. Raises :class:`~.masks.MaskProblem` (:func:`~.masks.check_segmentation`), ``{}``
    included (a box-only object: the caller decides whether it is kept)."""
    masks.check_segmentation(segmentation, height, width)
    if isinstance(segmentation, list) and len(segmentation) == 1:
        return [[int(value) for value in segmentation[0]]]
    return masks.to_rle(segmentation, height, width)


def seg_object(class_id: int, segmentation: Any, height: int, width: int, *, iscrowd: int = 0,
               bbox: Sequence[float] | None = None, area: float | None = None) -> SegCocoObject:
    """An object of an image of ``height`` x ``width``: the segmentation exported (:func:`export_segmentation`,
    whose :class:`~.masks.MaskProblem` it raises), ``bbox`` and ``area`` the source's (made ints) when given,
    else the mask's tight box and pixel count. ``segmentation`` may also be a mask, a 2-D numpy array ``[H, W]``
    (``bool``; other dtypes ``!= 0``, as :func:`~.masks.encode_mask` reads it): written as a compressed RLE."""
    if isinstance(segmentation, np.ndarray):
        segmentation = masks.encode_mask(segmentation)
    exported = export_segmentation(segmentation, height, width)
    if bbox is None or area is None:
        rle = masks.to_rle(exported, height, width)
        bbox = masks.rle_bbox(rle) if bbox is None else bbox
        area = masks.rle_area(rle) if area is None else area
    x, y, w, h = (int(value) for value in bbox)
    return SegCocoObject(int(class_id), exported, (x, y, w, h), int(area), int(iscrowd))


def seg_coco_document(images: Sequence[SegCocoImage], class_names: Sequence[str]) -> dict[str, Any]:
    """The json document of a seg-coco export (module docstring)."""
    present = sorted({obj.class_id for image in images for obj in image.objects})
    annotations: list[dict[str, Any]] = []
    for image_id, image in enumerate(images, start=1):
        for obj in image.objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": obj.class_id,
                                "iscrowd": obj.iscrowd, "bbox": list(obj.bbox), "confidence": -1,
                                "area": obj.area, "segmentation": obj.segmentation})
    return {"images": [{"id": number, "file_name": image.file_name, "width": image.width, "height": image.height}
                       for number, image in enumerate(images, start=1)],
            "categories": [{"id": class_id, "name": class_names[class_id]} for class_id in present],
            "annotations": annotations}


def write_seg_coco(path: str, images: Sequence[SegCocoImage], class_names: Sequence[str]) -> None:
    """Write :func:`seg_coco_document` to ``path`` (atomically)."""
    atomic_write_text(path, json.dumps(seg_coco_document(images, class_names), separators=(",", ":")))

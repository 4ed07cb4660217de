"""infer-result.json of a segmentation task (object_type 3 semantic, 4 instance): the COCO form the platform reads
(segmentation.md section 4; rules ``seg-infer.*``).

The platform reads it with ``_process_infer_coco_result`` and ``import_annotations_coco_json``: a form that crashes
the task or silently loses objects is an error, a form it reads but reads otherwise than meant is a warning. Masks
are checked with COCO's own RLE codec as faster-coco-eval ships it (the counts of an RLE string are read, never
decoded into pixels before their sum is known: a wrong-length RLE is what corrupts the platform's evaluation).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

from .findings import Collector
from .helpers import is_int, is_number, key_path, read_text, type_name

SEMANTIC = 3
DOCUMENT_KEYS = ("images", "categories", "annotations")
#: The first this many annotations of a file get the mask checks of their bbox and area (COCO's codec on the RLE,
#: no pixel decoded): enough to show a writer's habits, bounded on a larger file.
MASK_CHECKS = 100_000


def check_seg_infer(collector: Collector, path: str, *, candidates: Sequence[str] | None,
                    class_names: Sequence[str] | None, object_type: int, root: str | None = None) -> None:
    """images, categories, annotations; each annotation's ids, bbox, area, iscrowd, confidence and mask. A candidate
    image found here (its path, or under ``root`` for /in/... paths) gives its stored size from its header: the
    size the platform decodes every mask of it with."""
    text = read_text(collector, path, "seg-infer")
    if text is None:
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        collector.error("seg-infer.json", path, f"not valid JSON: {error.msg} (column {error.colno})", error.lineno)
        return
    if not isinstance(data, dict):
        collector.error("seg-infer.mapping", path, f"the document is {type_name(data)}, not a JSON object")
        return
    missing = [key for key in DOCUMENT_KEYS if not isinstance(data.get(key), list)]
    if missing:
        hint = (' (this is the detection form {"detection": ...}: an object_type '
                f'{object_type} task writes the COCO form)') if "detection" in data else ""
        collector.error("seg-infer.keys", path, f"{', '.join(missing)} must be lists: a missing key crashes the "
                        f"task{hint}")
        return
    stored = _stored_sizes(candidates or (), root)
    images = _check_images(collector, path, data["images"], stored)
    categories = _check_categories(collector, path, data["categories"], class_names)
    _check_annotations(collector, path, data["annotations"], images, categories, object_type)
    if candidates is not None:
        _check_coverage(collector, path, data["images"], candidates)


def _check_images(collector: Collector, path: str, images: list[Any],
                  stored: dict[str, tuple[int, int]]) -> dict[Any, tuple[int, int] | None]:
    """images[]: unique ids, basenames; returns id -> (height, width): the stored size read from the image, else
    the one the entry states, else None."""
    seen: dict[Any, int] = {}
    sizes: dict[Any, tuple[int, int] | None] = {}
    for index, image in enumerate(images):
        where = key_path("images", index)
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            found = type_name(image) if not isinstance(image, dict) else f"keys {sorted(image)}"
            collector.error("seg-infer.image", path, f"{where} must be an object with id and file_name "
                            f"(found {found})")
            continue
        image_id, name = image["id"], image["file_name"]
        if not is_int(image_id):
            collector.error("seg-infer.image", path, f"{where}.id is {type_name(image_id)} "
                            f"{json.dumps(image_id)}, not an integer")
        seen[_hashable(image_id)] = seen.get(_hashable(image_id), 0) + 1
        if not isinstance(name, str) or not name:
            collector.error("seg-infer.file-name", path, f"{where}.file_name is {json.dumps(name)}, not an image "
                            "file name")
        elif "/" in name or "\\" in name:
            collector.error("seg-infer.file-name", path, f"{where}.file_name {name!r} is a path: the platform "
                            f"imports 0 objects for it; write the basename {os.path.basename(name)!r}")
        width: Any = image.get("width")
        height: Any = image.get("height")
        stated = (int(height), int(width)) if is_int(width) and is_int(height) and width > 0 and height > 0 \
            else None
        real = stored.get(name) if isinstance(name, str) else None
        if real is not None and stated is not None and real != stated:
            collector.error("seg-infer.image-size", path, f"{where} states {stated[1]} x {stated[0]} (W x H), the "
                            f"image is {real[1]} x {real[0]} stored pixels: the platform decodes its masks with the "
                            "stored size")
        sizes[_hashable(image_id)] = real or stated
    for image_id, count in seen.items():
        if count > 1:
            collector.error("seg-infer.image-id-duplicate", path, f"images[].id {json.dumps(image_id)} is used by "
                            f"{count} images: the platform ignores every image with it")
    return sizes


def _check_categories(collector: Collector, path: str, categories: list[Any],
                      class_names: Sequence[str] | None) -> dict[Any, str]:
    """categories[]: id and a non-empty name of a class (matched lower-cased and stripped, as the platform does);
    returns id -> name."""
    known = {str(name).strip().lower() for name in class_names} if class_names is not None else None
    found: dict[Any, str] = {}
    for index, category in enumerate(categories):
        where = key_path("categories", index)
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            what = type_name(category) if not isinstance(category, dict) else f"keys {sorted(category)}"
            collector.error("seg-infer.category", path, f"{where} must be an object with id and name (found "
                            f"{what}): a missing one crashes the task")
            continue
        name = category["name"]
        if not isinstance(name, str) or not name.strip():
            collector.error("seg-infer.category", path, f"{where}.name is {json.dumps(name)}: an empty name "
                            "crashes the task")
            continue
        if known is not None and name.strip().lower() not in known:
            collector.error("seg-infer.category-unknown", path, f"{where}.name {name!r} is not one of the class "
                            f"names ({', '.join(class_names or ())}): its objects are lost")
        key = _hashable(category["id"])
        if key in found and found[key] != name:
            collector.warning("seg-infer.category-duplicate", path, f"{where}.id {json.dumps(category['id'])} "
                              f"names {found[key]!r} and {name!r}: the platform keeps one of them")
        found.setdefault(key, name)
    return found


def _check_annotations(collector: Collector, path: str, annotations: list[Any],
                       sizes: dict[Any, tuple[int, int] | None], categories: dict[Any, str],
                       object_type: int) -> None:
    boxes: set[tuple[Any, Any, tuple[int, ...]]] = set()
    classes_of_image: set[tuple[Any, Any]] = set()
    for index, annotation in enumerate(annotations):
        where = key_path("annotations", index)
        if not isinstance(annotation, dict):
            collector.error("seg-infer.annotation", path, f"{where} is {type_name(annotation)}, not an object")
            continue
        absent = [key for key in ("image_id", "category_id", "bbox", "area") if key not in annotation]
        if absent:
            collector.error("seg-infer.annotation", path, f"{where} lacks {', '.join(absent)}: the platform "
                            f"crashes or drops the object")
        image_id, category_id = _hashable(annotation.get("image_id")), _hashable(annotation.get("category_id"))
        if "image_id" in annotation and image_id not in sizes:
            collector.error("seg-infer.unknown-id", path, f"{where}.image_id {json.dumps(image_id)} is no image "
                            "of images[]: the object is dropped")
        if "category_id" in annotation and category_id not in categories:
            collector.error("seg-infer.unknown-id", path, f"{where}.category_id {json.dumps(category_id)} is no "
                            "category of categories[]: the object is dropped")
        box = _check_bbox(collector, path, where, annotation.get("bbox")) if "bbox" in annotation else None
        if box is not None:
            key = (image_id, category_id, box)
            if key in boxes:
                collector.error("seg-infer.duplicate-box", path, f"{where}: an object of category "
                                f"{json.dumps(category_id)} with int bbox {list(box)} is already in image "
                                f"{json.dumps(image_id)}: the platform silently drops this one")
            boxes.add(key)
        _check_area(collector, path, where, annotation)
        _check_iscrowd(collector, path, where, annotation)
        _check_confidence(collector, path, where, annotation)
        size = sizes.get(image_id)
        mask = _check_segmentation(collector, path, where, annotation, size)
        if mask is not None and index < MASK_CHECKS:
            _check_mask_facts(collector, path, where, annotation, box, mask)
        if object_type == SEMANTIC and "category_id" in annotation and "image_id" in annotation:
            if (image_id, category_id) in classes_of_image:
                collector.warning("seg-infer.semantic-repeat", path, f"{where}: a second object of category "
                                  f"{json.dumps(category_id)} in image {json.dumps(image_id)}: a semantic result "
                                  "has one annotation per class present (the later paints over the earlier)")
            classes_of_image.add((image_id, category_id))


def _check_bbox(collector: Collector, path: str, where: str, bbox: Any) -> tuple[int, ...] | None:
    """4 numbers, truncated by ``int()`` as the platform does: w or h <= 0 after it drops the object. Returns
    the int box."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) and math.isfinite(v) for v in bbox):
        collector.error("seg-infer.bbox", path, f"{where}.bbox is {json.dumps(bbox)}, not 4 finite numbers "
                        "[x, y, w, h]")
        return None
    box = tuple(int(value) for value in bbox)
    if box[2] <= 0 or box[3] <= 0:
        collector.error("seg-infer.bbox", path, f"{where}.bbox {json.dumps(bbox)}: w or h is {min(box[2:])} "
                        "after int(): the platform drops the object")
        return None
    if any(isinstance(value, float) and not value.is_integer() for value in bbox):
        collector.warning("seg-infer.bbox-int", path, f"{where}.bbox {json.dumps(bbox)} is read as {list(box)} "
                          "(int() truncates): write the mask's tight int bounds")
    return box


def _check_area(collector: Collector, path: str, where: str, annotation: dict[str, Any]) -> None:
    area: Any = annotation.get("area")
    if "area" in annotation and (not is_number(area) or not math.isfinite(area) or area < 0):
        collector.error("seg-infer.area", path, f"{where}.area is {type_name(area)} {json.dumps(area)}, not a "
                        "pixel count")


def _check_iscrowd(collector: Collector, path: str, where: str, annotation: dict[str, Any]) -> None:
    if "iscrowd" not in annotation:
        collector.warning("seg-infer.iscrowd", path, f"{where} has no iscrowd: write the int 0")
        return
    value = annotation["iscrowd"]
    if not is_int(value):
        collector.error("seg-infer.iscrowd", path, f"{where}.iscrowd is {type_name(value)} {json.dumps(value)}: "
                        "the platform needs an int (0.0 crashes the task)")
    elif value != 0:
        collector.warning("seg-infer.crowd", path, f"{where}.iscrowd is {value}: a prediction marked as a crowd")


def _check_confidence(collector: Collector, path: str, where: str, annotation: dict[str, Any]) -> None:
    if "confidence" not in annotation:
        hint = " (`score` is ignored by the platform)" if "score" in annotation else ""
        collector.warning("seg-infer.confidence-missing", path, f"{where} has no confidence{hint}: the platform "
                          "reads the object without one")
        return
    value = annotation["confidence"]
    if not is_number(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        collector.warning("seg-infer.confidence", path, f"{where}.confidence is {type_name(value)} "
                          f"{json.dumps(value)}: not range-checked by the platform, but a confidence is in [0, 1]")


def _check_segmentation(collector: Collector, path: str, where: str, annotation: dict[str, Any],
                        size: tuple[int, int] | None) -> Any:
    """The crash forms of ``segmentation``; returns a COCO RLE of the mask when it can be checked further."""
    if "segmentation" not in annotation:
        collector.error("seg-infer.segmentation", path, f"{where} has no segmentation: the platform imports it "
                        "without a mask, then its evaluation raises")
        return None
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, dict):
        return _check_rle(collector, path, where, segmentation, size)
    if isinstance(segmentation, list):
        return _check_polygon(collector, path, where, segmentation, size)
    collector.error("seg-infer.segmentation", path, f"{where}.segmentation is {type_name(segmentation)}, not an "
                    "RLE {size, counts} or one polygon")
    return None


def _check_rle(collector: Collector, path: str, where: str, rle: dict[str, Any],
               size: tuple[int, int] | None) -> Any:
    if not rle:
        collector.error("seg-infer.segmentation", path, f"{where}.segmentation is {{}}: the platform crashes")
        return None
    counts = rle.get("counts")
    if not isinstance(counts, str):
        what = "missing" if counts is None else f"{type_name(counts)}"
        collector.error("seg-infer.rle-counts", path, f"{where}.segmentation.counts is {what}: the platform "
                        "needs a compressed RLE STRING (a list crashes it)")
        return None
    stated = rle.get("size")
    stated_size = tuple(stated) if isinstance(stated, list) and len(stated) == 2 and all(map(is_int, stated)) \
        else None
    height_width = size or stated_size
    if height_width is None:
        collector.error("seg-infer.rle-size", path, f"{where}: no image height and width (images[]) and no "
                        "segmentation.size [H, W]: the mask's size cannot be told")
        return None
    if size is not None and stated_size is not None and stated_size != size:
        collector.warning("seg-infer.rle-size", path, f"{where}.segmentation.size {list(stated_size)} is not the "
                          f"image's [height, width] {list(size)}: the platform ignores size and decodes with the "
                          "image's")
    height, width = height_width
    total = _counts_sum(counts, height, width)
    if total != height * width:
        got = "are not an RLE string" if total is None else f"sum to {total} pixels"
        collector.error("seg-infer.rle-length", path, f"{where}.segmentation.counts {got}, the image has "
                        f"{height} x {width} = {height * width}: the platform's evaluation crashes or is corrupted")
        return None
    return {"size": [height, width], "counts": counts.encode("ascii", "replace")}


def _counts_sum(counts: str, height: int, width: int) -> int | None:
    import faster_coco_eval.mask_api_new_cpp as coco_cpp  # COCO's codec: reads counts, writes no pixel

    try:
        runs = coco_cpp.toUncompressedRLE([{"size": [height, width], "counts": counts}])[0]["counts"]
    except (ValueError, RuntimeError, UnicodeError):  # a broken string, or more runs than pixels
        return None
    return int(sum(runs))


def _check_polygon(collector: Collector, path: str, where: str, polygons: list[Any],
                   size: tuple[int, int] | None) -> Any:
    if len(polygons) != 1 or not isinstance(polygons[0], list):
        collector.error("seg-infer.polygon", path, f"{where}.segmentation holds {len(polygons)} polygons: the "
                        "platform reads exactly one (write one merged RLE string)")
        return None
    polygon = polygons[0]
    if not polygon or len(polygon) % 2 or not all(is_number(v) and math.isfinite(v) for v in polygon):
        collector.error("seg-infer.polygon", path, f"{where}.segmentation[0] has {len(polygon)} coordinates: an "
                        "empty or odd-length polygon (or one of non-numbers) raises on the platform")
        return None
    if size is None or len(polygon) < 6:
        return None
    from faster_coco_eval.core import mask as coco_mask

    height, width = size
    return coco_mask.frPyObjects([polygon], height, width)[0]


def _check_mask_facts(collector: Collector, path: str, where: str, annotation: dict[str, Any],
                      box: tuple[int, ...] | None, rle: Any) -> None:
    """What the platform reads but reads otherwise than meant: an empty mask, a bbox that is not the mask's tight
    bounds (boxAP is computed on it), an area that is not its pixel count."""
    from faster_coco_eval.core import mask as coco_mask

    area = int(coco_mask.area(rle))
    if area == 0:
        collector.warning("seg-infer.empty-mask", path, f"{where}: the mask is empty (write no object instead)")
        return
    tight = tuple(int(value) for value in coco_mask.toBbox(rle))
    if box is not None and box != tight:
        collector.warning("seg-infer.bbox-tight", path, f"{where}.bbox {list(box)} is not the mask's tight bounds "
                          f"{list(tight)}: the platform scores boxes with the bbox as written")
    stated = annotation.get("area")
    if is_number(stated) and stated != area:
        collector.warning("seg-infer.area-pixels", path, f"{where}.area {json.dumps(stated)} is not the mask's "
                          f"{area} pixels")


def _check_coverage(collector: Collector, path: str, images: list[Any], candidates: Sequence[str]) -> None:
    """Every candidate listed by basename (with or without objects); nothing else."""
    expected = dict.fromkeys(os.path.basename(candidate) for candidate in candidates)
    present = {image["file_name"] for image in images if isinstance(image, dict)
               and isinstance(image.get("file_name"), str)}
    for name in expected:
        if name not in present:
            collector.error("seg-infer.missing-image", path, f"candidate {name!r} is not in images[] (list every "
                            "candidate, with or without objects)")
    for name in sorted(present - set(expected)):
        collector.warning("seg-infer.extra-image", path, f"images[] lists {name!r}, which is not a candidate")


def _stored_sizes(candidates: Sequence[str], root: str | None) -> dict[str, tuple[int, int]]:
    """basename -> (height, width) of each candidate image found here, from its header (nothing decoded): the
    stored pixels, as the platform records them (PIL's ``Image.size``, no EXIF rotation)."""
    from PIL import Image

    sizes: dict[str, tuple[int, int]] = {}
    for candidate in candidates:
        local = os.path.join(root, candidate.lstrip("/")) if root and candidate.startswith("/in/") else candidate
        try:
            with Image.open(local) as image:
                sizes[os.path.basename(candidate)] = (image.height, image.width)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # not here, or not an image: the entry's own width and height are used
    return sizes


def _hashable(value: Any) -> Any:
    """A JSON value as a dict key (lists and objects as their JSON text)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value

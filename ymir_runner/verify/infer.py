"""infer-result.json, the inference result: ``{"detection": {basename: {"boxes": [...]}}}`` with integer
boxes, scores in [0, 1] and known class names (rules ``infer.*``)."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Mapping, Sequence

from .findings import Collector
from .helpers import is_int, is_number, key_path, parse_float, read_text, type_name, version_text

BOX_KEYS = ("x", "y", "w", "h")
#: The other field of the platform's ``Rect`` that ``box`` is parsed into (protobuf json_format, so also under its
#: JSON name): a float, the rotation in units of pi.
BOX_ANGLE_KEYS = ("rotate_angle", "rotateAngle")
#: A string protobuf json_format reads into an integer field: int() of it, no spaces.
INT_TEXT = re.compile(r"[+-]?[0-9]+")
BOX_ENTRY_KEYS = ("box", "class_name", "score")


def check_infer(collector: Collector, path: str, *, candidates: Sequence[str] | None,
                class_names: Sequence[str] | None, protocol: tuple[int, ...]) -> None:
    """{"detection": {basename: {"boxes": [...]}}}; one bad box (float, extra key in box) fails the task."""
    text = read_text(collector, path, "infer")
    if text is None:
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        collector.error("infer.json", path, f"not valid JSON: {error.msg} (column {error.colno})", error.lineno)
        return
    if not isinstance(data, dict):
        collector.error("infer.mapping", path, f"the document is {type_name(data)}, not a JSON object")
        return
    detection = data.get("detection")
    if not isinstance(detection, dict):
        found = "missing" if detection is None else type_name(detection)
        hint = ("; this is the COCO form of a segmentation task (object_type 3 or 4: check it with --object-type)"
                if {"images", "annotations"} <= set(data) else "")
        collector.error("infer.detection", path, f'"detection" must be an object keyed by image basename '
                        f"(found {found}){hint}")
        return
    boxes_key = "boxes" if protocol >= (1, 0, 0) else "annotations"
    for name, entry in detection.items():
        _check_infer_entry(collector, path, name, entry, boxes_key, class_names, protocol)
    if candidates is not None:
        _check_infer_coverage(collector, path, detection, candidates)


def _check_infer_entry(collector: Collector, path: str, name: str, entry: Any, boxes_key: str,
                       class_names: Sequence[str] | None, protocol: tuple[int, ...]) -> None:
    keys = ("detection", name)
    if "\\" in name:
        collector.error("infer.entry-key", path, f"{key_path(*keys)}: the key must be the image basename, "
                        "not a path")
    elif "/" in name:
        collector.warning("infer.entry-key", path, f"{key_path(*keys)}: the platform keys the entry by its "
                          f"basename {os.path.basename(name)!r}; write the basename")
    if not isinstance(entry, dict):
        collector.error("infer.entry", path, f"{key_path(*keys)} is {type_name(entry)}, not an object")
        return
    if boxes_key == "boxes" and "boxes" not in entry and "annotations" in entry:
        collector.warning("infer.annotations-key", path, f"{key_path(*keys)} has 'annotations', the key of "
                          "protocol < 1.0.0: the platform still reads it when 'boxes' is absent; write 'boxes'")
        boxes_key = "annotations"
    elif boxes_key not in entry:
        other = "annotations" if boxes_key == "boxes" else "boxes"
        hint = f" (found {other!r}, the key of protocol {'< ' if other == 'annotations' else '>= '}1.0.0)" \
            if other in entry else ""
        collector.error("infer.boxes-key", path, f"{key_path(*keys)} has no {boxes_key!r} list for protocol "
                        f"{version_text(protocol)}{hint}")
        return
    boxes = entry[boxes_key]
    if not isinstance(boxes, list):
        collector.error("infer.entry", path, f"{key_path(*keys, boxes_key)} is {type_name(boxes)}, not a list")
        return
    for index, box in enumerate(boxes):
        _check_box(collector, path, keys + (boxes_key, index), box, class_names)


def _check_box(collector: Collector, path: str, keys: tuple[Any, ...], item: Any,
               class_names: Sequence[str] | None) -> None:
    where = key_path(*keys)
    if not isinstance(item, dict):
        collector.error("infer.box-item", path, f"{where} is {type_name(item)}, not an object")
        return
    _check_box_rect(collector, path, where, item.get("box"))
    _check_box_score(collector, path, where, item)
    _check_box_class(collector, path, where, item.get("class_name"), class_names)
    for extra in sorted(set(item) - set(BOX_ENTRY_KEYS), key=str):
        collector.warning("infer.box-extra-key", path, f"{where}.{extra}: unexpected key (box, class_name, "
                          "score are read)")


def _check_box_rect(collector: Collector, path: str, where: str, rect: Any) -> None:
    """Integer x, y, w, h, parsed as the platform does (protobuf json_format into its ``Rect``): a fractional value
    or a key that ``Rect`` lacks fails the WHOLE task; 30.0 and "30" are read as 30 (a warning)."""
    if not isinstance(rect, dict):
        found = "missing" if rect is None else type_name(rect)
        collector.error("infer.box", path, f"{where}.box must be an object {{x, y, w, h}} (found {found})")
        return
    extra = sorted(set(rect) - set(BOX_KEYS) - set(BOX_ANGLE_KEYS))
    missing = [key for key in BOX_KEYS if key not in rect]
    if extra:
        collector.error("infer.box-keys", path, f"{where}.box has extra key(s) {', '.join(extra)}: any key "
                        "besides x, y, w, h (and rotate_angle) fails the WHOLE task")
    if missing:
        collector.error("infer.box-keys", path, f"{where}.box lacks {', '.join(missing)}")
    for key in BOX_ANGLE_KEYS:
        if key in rect and (not is_number(rect[key]) or not math.isfinite(rect[key])):
            collector.error("infer.box", path, f"{where}.box.{key} is {type_name(rect[key])} "
                            f"{json.dumps(rect[key])}, must be a finite number")
    sizes: dict[str, int] = {}
    for key in BOX_KEYS:
        if key not in rect:
            continue
        value = rect[key]
        if is_int(value):
            sizes[key] = value
            continue
        coerced = _coerced_int(value)
        if coerced is None:
            hint = " (a fractional value fails the WHOLE task)" if isinstance(value, float) else ""
            collector.error("infer.box-int", path, f"{where}.box.{key} is {type_name(value)} "
                            f"{json.dumps(value)}, must be an integer{hint}")
            continue
        collector.warning("infer.box-int-coerced", path, f"{where}.box.{key} is {type_name(value)} "
                          f"{json.dumps(value)}: the platform reads it as {coerced}; write {coerced}")
        sizes[key] = coerced
    for key in ("w", "h"):
        if key in sizes and sizes[key] <= 0:
            collector.warning("infer.box-size", path, f"{where}.box.{key} is {sizes[key]}: an empty box")


def _coerced_int(value: Any) -> int | None:
    """The integer protobuf json_format reads from a value that is not an int: an integral float or a string of
    digits; None where it refuses (a fraction, a bool, anything else)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and INT_TEXT.fullmatch(value):
        return int(value)
    return None


def _check_box_score(collector: Collector, path: str, where: str, item: dict[str, Any]) -> None:
    if "score" not in item:
        collector.error("infer.score-missing", path, f"{where} has no score: the platform drops the box")
        return
    score = item["score"]
    if isinstance(score, str):  # the platform reads float(score)
        number = parse_float(score)
        if number is not None and 0.0 <= number <= 1.0:
            collector.warning("infer.score-coerced", path, f"{where}.score is the string {json.dumps(score)}: the "
                              f"platform reads it as {number}; write a number")
            return
    if not is_number(score) or not math.isfinite(score) or not 0.0 <= score <= 1.0:
        collector.error("infer.score", path, f"{where}.score must be a finite number in [0, 1], found "
                        f"{type_name(score)} {score!r}")


def _check_box_class(collector: Collector, path: str, where: str, name: Any,
                     class_names: Sequence[str] | None) -> None:
    if not isinstance(name, str) or not name:
        collector.error("infer.class-name", path, f"{where}.class_name must be a non-empty string, found {name!r}")
    elif class_names is not None and name not in class_names:
        collector.error("infer.class-unknown", path, f"{where}.class_name {name!r} is not one of the class "
                        f"names ({', '.join(class_names)})")


def _check_infer_coverage(collector: Collector, path: str, detection: Mapping[str, Any],
                          candidates: Sequence[str]) -> None:
    """One entry per candidate image (an empty list when nothing was found), keyed by basename."""
    expected = dict.fromkeys(os.path.basename(candidate) for candidate in candidates)
    present = {os.path.basename(name) for name in detection}  # the platform keys each entry by its basename
    for name in expected:
        if name not in present:
            collector.error("infer.missing-entry", path, f"candidate {name!r} has no entry "
                            "(write an empty list when nothing was found)")
    for name in detection:
        if os.path.basename(name) not in expected:
            collector.warning("infer.extra-entry", path, f"{name!r} is not a candidate image")

"""COCO sources: one json read by :mod:`ymir_runner.protocol.annotations`, or one per split
(``instances_train2017.json`` + ``instances_val2017.json``, ``train.json`` + ``val.json``)."""

from __future__ import annotations

import collections
import math
import os
import re
from typing import Mapping

from ...errors import ConfigError, DatasetError
from ...protocol import annotations as formats
from ...protocol.files import open_regular
from .base import SourceBox, SourceData, SourceImage, SourceMask, SourceTree, source_split, split_kind


def read_coco(tree: SourceTree) -> SourceData:
    """COCO: ``bbox`` is ``[x, y, w, h]`` with an exclusive extent, so the inclusive corner is x + w - 1.

    Class names are the categories in id order; the images are those the json lists (found relative to
    the json, to SOURCE, in an ``images/`` folder beside either, or by file name anywhere in SOURCE). With one
    json per split (see :func:`coco_files`) the images of both are read, the train file's first, and the class
    names are the train file's followed by any the val file adds. Raises
    :class:`~ymir_runner.errors.DatasetError` naming the file when a json cannot be read or a category has no
    name, :class:`~ymir_runner.errors.ConfigError` naming each ``file_name`` found only outside SOURCE (never
    copied); a bad ``annotations`` entry (a NaN or overflowing ``bbox`` too) is skipped as ``malformed box``; an
    image below SOURCE that no json lists is skipped as ``image not in the COCO json`` (counted and named).
    """
    files = coco_files(tree)
    by_name = tree.by_basename()
    items: list[SourceImage] = []
    names: list[str] = []
    parts: dict[str | None, list[str]] = collections.defaultdict(list)
    seen: set[str] = set()
    for path, subset in files:
        document = formats.read_coco(path)
        unnamed = [key for key, name in document.categories.items() if not name]
        if unnamed:
            raise DatasetError(f"cannot read COCO file {path}: category {unnamed[0]!r} has no 'name'")
        names += document.categories.values()
        boxes = _coco_boxes(document, tree)
        segments = _coco_masks(document, tree)
        outside: list[str] = []
        for number, entry in enumerate(document.images):
            image, elsewhere = _coco_image(path, tree, entry.file_name, by_name)
            if elsewhere:
                outside.append(f"images[{number}] file_name {_excerpt(entry.file_name)} ({_excerpt(elsewhere)})")
                continue
            if image is None:
                tree.skips.skip("missing image", path, _excerpt(entry.file_name))
                continue
            parts[subset].append(image)  # listed in both parts: val (source_split); the first listing's boxes
            if image not in seen:
                seen.add(image)
                items.append(SourceImage(image, tuple(boxes.get(entry.id, ())), entry.size,
                                         tuple(segments.get(entry.id, ()))))
        if outside:
            shown = "; ".join(outside[:MAX_NAMED]) + (f"; and {len(outside) - MAX_NAMED} more"
                                                     if len(outside) > MAX_NAMED else "")
            raise ConfigError(f"COCO file {path} names {len(outside)} image(s) found only outside SOURCE "
                              f"{tree.root}, which the sandbox never reads or copies: {shown}. Put the images "
                              f"below SOURCE (or pass the folder holding the json and its images as SOURCE), "
                              f"or fix their 'file_name'")
    for image in tree.images:  # an image beside the json that no json lists: not part of the dataset, but named
        if image not in seen:
            tree.skips.skip("image not in the COCO json", image, "the json lists no entry for it: not copied")
    split = None
    if len(files) > 1:
        split = source_split(parts["train"], parts["val"], " + ".join(tree.relative(path) for path, _ in files))
    return SourceData(items, list(dict.fromkeys(names)), split=split)  # two ids may share a name


def _coco_boxes(document: formats.CocoDocument, tree: SourceTree) -> dict[object, list[SourceBox]]:
    """Image id -> its boxes, named by category, with inclusive corners (``x2 - 1``)."""
    by_id: dict[object, list[SourceBox]] = collections.defaultdict(list)
    for number, entry in enumerate(document.annotations):
        try:
            box = formats.coco_box(entry)
            if not all(math.isfinite(value) for value in box[2:]):  # NaN, or 1e308 + 1e308
                raise ValueError(f"bbox {_excerpt(entry['bbox'])} is not finite numbers")
            by_id[box.image_id].append(SourceBox(document.categories[box.category_id], box.x1, box.y1,
                                                 box.x2 - 1, box.y2 - 1))
        except (KeyError, TypeError, ValueError) as error:
            tree.skips.skip("malformed box", f"{document.path}:annotations[{number}]", repr(error))
    return by_id


def _coco_masks(document: formats.CocoDocument, tree: SourceTree) -> dict[object, list[SourceMask]]:
    """Image id -> the masks of its annotations that have a ``segmentation`` key, in file order, NOT decoded
    (the sandbox of a segmentation task checks each against the stored image, ``iscrowd`` included:
    :func:`~..assets.assign_masks`); the source's ``bbox`` and ``area`` kept when they are finite numbers. An
    entry without ``image_id`` or a known ``category_id`` is left out here: the box reader names it
    (``malformed box``) in every task."""
    by_id: dict[object, list[SourceMask]] = collections.defaultdict(list)
    for number, entry in enumerate(document.annotations):
        if not isinstance(entry, dict) or "segmentation" not in entry:
            continue
        try:
            class_name = document.categories[entry["category_id"]]
            by_id[entry["image_id"]].append(SourceMask(
                class_name, entry["segmentation"], entry.get("iscrowd", 0), _finite_box(entry.get("bbox")),
                _finite(entry.get("area")),
                f"{document.path}:annotations[{number}] (annotation id {_excerpt(entry.get('id'))})"))
        except (KeyError, TypeError):
            continue
    return by_id


def _finite(value: object) -> float | None:
    return float(value) if type(value) in (int, float) and math.isfinite(value) else None  # type: ignore[arg-type]


def _finite_box(value: object) -> tuple[float, float, float, float] | None:
    if not isinstance(value, list) or len(value) != 4:
        return None
    numbers = [_finite(number) for number in value]
    if any(number is None for number in numbers):
        return None
    x, y, w, h = (float(number) for number in numbers if number is not None)
    return (x, y, w, h) if w > 0 and h > 0 else None


def coco_files(tree: SourceTree) -> list[tuple[str, str | None]]:
    """The COCO json(s) to read, each with its part of the source's split (None: no split).

    SOURCE given as a file: that file. A folder: its one COCO json, or exactly two whose paths below SOURCE
    name one train part and one val part (``annotations/instances_train2017.json``, ``val.json``,
    ``valid/_annotations.coco.json``), train first. Raises :class:`~ymir_runner.errors.ConfigError` for a folder
    without a COCO json, or with several that are not such a pair.
    """
    if tree.given_file:
        return [(tree.given_file, None)]
    found = [path for path in tree.with_suffix(".json") if looks_like_coco(path)]
    if not found:
        raise ConfigError(f"no COCO .json file in {tree.root}")
    if len(found) == 1:
        return [(found[0], None)]
    kinds = [split_kind(re.split(r"[^0-9a-z]+", os.path.splitext(tree.relative(path))[0].lower()))
             for path in found]
    if sorted(kinds, key=str) != ["train", "val"]:
        raise ConfigError(f"several COCO files in {tree.root} ({', '.join(found)}): pass one of them as SOURCE")
    return sorted(zip(found, kinds), key=lambda pair: str(pair[1]))


def looks_like_coco(path: str) -> bool:
    """Peeks at the start only: a COCO file can be hundreds of megabytes."""
    try:
        with open_regular(path, limit=None) as stream:
            head = stream.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


#: References outside SOURCE a refusal names (the message counts the others).
MAX_NAMED = 10


def _excerpt(value: object, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters: a hostile json may hold a megabyte-long name."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _coco_image(json_file: str, tree: SourceTree, file_name: str,
                by_name: Mapping[str, list[str]]) -> tuple[str | None, str | None]:
    """``(image, '')``: the image ``file_name`` names below SOURCE (:meth:`SourceTree.inside`), found relative to
    the json, to SOURCE, in an ``images/`` folder beside either or the json's parent, else by file name;
    ``(None, path)`` when it exists only outside SOURCE (``/etc/shadow``, ``../../../../etc/passwd``);
    ``(None, '')`` when nowhere."""
    if not file_name or "\0" in file_name:
        return None, ""
    root = tree.root
    here, parent = os.path.dirname(json_file), os.path.dirname(os.path.dirname(json_file))
    outside = ""
    for folder in (here, root, os.path.join(here, "images"), os.path.join(root, "images"), parent,
                   os.path.join(parent, "images")):
        path = os.path.abspath(os.path.join(folder, file_name))
        if not os.path.isfile(path):
            continue
        if tree.inside(path):
            return path, ""
        outside = outside or path
    candidates = by_name.get(os.path.basename(file_name), [])
    return (candidates[0], "") if len(candidates) == 1 else (None, outside)

"""The source readers, one module per format (:mod:`.voc`, :mod:`.yolo`, :mod:`.coco`, :mod:`.images`), on top
of the protocol's annotation formats (:mod:`ymir_runner.protocol.annotations`).

Each reader takes SOURCE listed once (:class:`SourceTree`) and returns the same neutral :class:`SourceData`:
image paths with named boxes in INCLUSIVE pixel corners, the class names in the source's own order, and the
train/val split the source declares, if it declares one (:class:`SourceSplit`).
"""

from __future__ import annotations

import os
from typing import Callable

from ...errors import ConfigError, DatasetError
from ...protocol.dataset import SkipLog
from .base import (
    FILE_REASONS,
    IMAGE_EXTENSIONS,
    SourceBox,
    SourceData,
    SourceImage,
    SourceMask,
    SourceSplit,
    SourceTree,
    scan_source,
    source_split,
    split_kind,
)
from .coco import coco_files, looks_like_coco, read_coco
from .images import read_images
from .labelmaps import label_maps, read_label_maps
from .missing import no_annotations, no_usable_box
from .voc import read_voc
from .yolo import YOLO_NAME_FILES, looks_like_yolo, read_yolo, yolo_split

SOURCE_FORMATS = ("auto", "voc", "yolo", "coco", "label-maps", "images")

READERS: dict[str, Callable[[SourceTree], SourceData]] = {
    "voc": read_voc, "yolo": read_yolo, "coco": read_coco, "label-maps": read_label_maps, "images": read_images,
}

__all__ = [
    "FILE_REASONS", "IMAGE_EXTENSIONS", "READERS", "SOURCE_FORMATS", "YOLO_NAME_FILES", "SourceBox", "SourceData",
    "SourceImage", "SourceMask", "SourceSplit", "SourceTree", "coco_files", "detect_format", "looks_like_coco",
    "looks_like_yolo", "no_annotations", "no_usable_box", "read_coco", "read_images", "read_label_maps",
    "read_source", "read_voc", "read_yolo", "scan_source", "source_split", "split_kind", "yolo_split",
]


def detect_format(tree: SourceTree) -> str:
    """coco (a json given or found), voc (xml files), yolo (label txt or a names file), label-maps (PNGs in a
    label-map folder: :mod:`.labelmaps`) or plain images.

    Raises :class:`~ymir_runner.errors.ConfigError` when SOURCE is a file other than a ``.json``, and when it holds
    annotations of several formats (a folder of several datasets: never one picked silently).
    """
    if tree.given_file:
        if tree.given_file.lower().endswith(".json"):
            return "coco"
        raise ConfigError(f"SOURCE {tree.given_file} must be a folder or a COCO .json file")
    found = {
        "coco": [path for path in tree.with_suffix(".json") if looks_like_coco(path)],
        "voc": tree.with_suffix(".xml"),
        "yolo": ([path for path in tree.files if os.path.basename(path) in YOLO_NAME_FILES]
                 or [path for path in tree.with_suffix(".txt") if looks_like_yolo(path)]),
        "label-maps": label_maps(tree),
    }
    if found["label-maps"] and not any(looks_like_yolo(path) for path in tree.with_suffix(".txt")):
        found["yolo"] = []  # a classes.txt beside label maps names their values: no YOLO label anywhere
    present = [name for name, paths in found.items() if paths]
    if len(present) > 1:  # a folder of several datasets: which one is meant is the user's to say
        evidence = "; ".join(f"{name}: {len(found[name])} file(s), e.g. {tree.relative(found[name][0])}"
                             for name in present)
        raise ConfigError(f"SOURCE {tree.root} holds annotations of several formats ({evidence}): pass --format "
                          f"{' or --format '.join(present)}, or point SOURCE at one dataset's folder")
    return present[0] if present else "images"


def read_source(source: str, source_format: str, *, exclude: str, skips: SkipLog, training: bool,
                exif_transpose: bool = False) -> tuple[SourceTree, str, SourceData]:
    """SOURCE listed, its format named (auto-detected unless given) and read.

    Raises :class:`~ymir_runner.errors.ConfigError` for a SOURCE file that is not a COCO json and, for a training
    task, a source whose images hold not one box (unless ``--format images`` says so: a tree without boxes on
    purpose), naming what was looked for and found; :class:`~ymir_runner.errors.DatasetError` when it holds no
    image.
    """
    tree = scan_source(source, exclude=exclude, skips=skips, exif_transpose=exif_transpose)
    if tree.given_file and source_format not in ("auto", "coco"):
        raise ConfigError(f"SOURCE {source} is a file: only a COCO .json may be given as a file")
    detected = source_format == "auto"
    if detected:
        source_format = detect_format(tree)
    if source_format == "images" and training and detected and tree.images:
        raise ConfigError(no_annotations(tree, exclude))
    data = READERS[source_format](tree)
    if not data.images:
        raise DatasetError(f"no images found in {source} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if training and source_format != "images" and not any(image.boxes for image in data.images):
        raise ConfigError(no_usable_box(tree, source_format, data, skips, exclude))
    return tree, source_format, data

"""Label-map sources: one single-channel PNG per image whose pixel values are class indexes (PASCAL VOC's
``SegmentationClass/``, labelme2voc's output, ``images/`` + ``masks/`` folders).

- The maps lie in a folder named as one of :data:`LABEL_MAP_FOLDERS` (any case) and are paired with the image of
  the same stem elsewhere in SOURCE (``JPEGImages/2007_000032.jpg`` + ``SegmentationClass/2007_000032.png``);
  an image without a map has no object, a map without an image is skipped (``label map without image``).
- Pixel value ``v`` is the class on line ``v`` of ``class_names.txt`` (or ``classes.txt``, ``labels.txt``) in
  SOURCE (line 1 is value 0); without such a file the classes are the values themselves and ``--classes`` names
  them in value order, as YOLO labels without a names file are read. A class named ``_background_``,
  ``background`` or ``__background__`` is no class: its pixels are unlabelled, as are pixels of value 255
  (VOC's boundary/void).
- Each class present in a map becomes one object, its pixels encoded as a COCO RLE (a label map holds no
  instances: one object per class and image, for instance segmentation too).
- A map that is not single-channel (a colour-coded RGB map) or whose size differs from the image's stored pixels
  is skipped and counted (``label map not class indexes``, ``label map size differs from image``).
- A split is taken from folder names (``images/train/``, ``masks/val/``), as for YOLO.
"""

from __future__ import annotations

import os
from typing import Iterable

from ...errors import ConfigError
from ...protocol import masks
from ...protocol.files import read_text
from .base import SourceBox, SourceData, SourceImage, SourceMask, SourceTree, source_split, split_kind

#: Folder names (lower case) whose PNGs are label maps.
LABEL_MAP_FOLDERS = frozenset({"segmentationclass", "segmentationclasspng", "masks", "labels", "label_maps",
                               "labelmaps", "annotations", "gt", "ground_truth"})
#: Files naming the classes, one per line, line 1 for pixel value 0.
CLASS_NAME_FILES = ("class_names.txt", "classes.txt", "labels.txt")
#: Class names that mean "no class": their pixels are unlabelled.
BACKGROUND_NAMES = frozenset({"_background_", "background", "__background__"})
#: The unlabelled value of a label map (VOC's void; the platform's semantic canvas is 255 too).
UNLABELLED = masks.IGNORE_LABEL


def label_maps(tree: SourceTree) -> list[str]:
    """The PNGs of SOURCE lying in a label-map folder (:data:`LABEL_MAP_FOLDERS`)."""
    return [path for path in tree.images if path.lower().endswith(".png") and _in_map_folder(tree, path)]


def _in_map_folder(tree: SourceTree, path: str) -> bool:
    return any(part.lower() in LABEL_MAP_FOLDERS for part in tree.relative(path).split("/")[:-1])


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _class_file(tree: SourceTree) -> str | None:
    found = [path for path in tree.files if os.path.basename(path).lower() in CLASS_NAME_FILES]
    return min(found, key=lambda path: (path.count(os.sep), path)) if found else None


def read_label_maps(tree: SourceTree) -> SourceData:
    """Label maps to images with one mask per class present (module docstring); raises
    :class:`~ymir_runner.errors.ConfigError` when SOURCE holds no label map."""
    maps = label_maps(tree)
    if not maps:
        raise ConfigError(f"no label map in {tree.root}: PNGs of class indexes in a folder named "
                          f"{', '.join(sorted(LABEL_MAP_FOLDERS))}")
    names_file = _class_file(tree)
    names = [line.strip() for line in read_text(names_file).splitlines()] if names_file else None
    by_stem: dict[str, list[str]] = {}
    for path in maps:
        by_stem.setdefault(_stem(path), []).append(path)
    images = [path for path in tree.images if not _in_map_folder(tree, path)]
    paired = {_stem(path) for path in images}
    for path in maps:
        if _stem(path) not in paired:
            tree.skips.skip("label map without image", path, "no image of the same name in SOURCE")
    items, parts = [], {"train": [], "val": []}  # type: ignore[var-annotated]
    for image in images:
        found = by_stem.get(_stem(image), [])
        objects = _objects(tree, image, found[0], names) if found else ()
        boxes = tuple(_box(obj) for obj in objects)
        items.append(SourceImage(image, boxes, tree.sizes(image), objects))
        kind = split_kind(tree.relative(image).split("/")[:-1])
        if kind:
            parts[kind].append(image)
    class_names = ([name for name in names if name and name.lower() not in BACKGROUND_NAMES] if names is not None
                   else _values_present(items))
    return SourceData(items, class_names, numeric_classes=names is None,
                      split=source_split(parts["train"], parts["val"], "folder names"))


def _values_present(items: Iterable[SourceImage]) -> list[str]:
    return sorted({obj.class_name for item in items for obj in item.masks}, key=int)


def _box(obj: SourceMask) -> SourceBox:
    x, y, w, h = obj.bbox or (0, 0, 1, 1)
    return SourceBox(obj.class_name, x, y, x + w - 1, y + h - 1)


def _objects(tree: SourceTree, image: str, label_map: str, names: list[str] | None) -> tuple[SourceMask, ...]:
    """One mask per class present in ``label_map`` (skipped and counted when the map cannot be used)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(label_map) as opened:
            mode = opened.mode
            values = np.asarray(opened) if mode in ("P", "L", "I", "I;16", "1") else None
    except (OSError, ValueError) as error:
        tree.skips.skip("unreadable label map", label_map, str(error))
        return ()
    if values is None:
        tree.skips.skip("label map not class indexes", label_map,
                        f"PIL mode {mode}: a label map holds one class index per pixel (a palette or grey PNG)")
        return ()
    size = tree.sizes(image)
    if size is not None and (values.shape[1], values.shape[0]) != tuple(size):
        tree.skips.skip("label map size differs from image", label_map,
                        f"{values.shape[1]}x{values.shape[0]}, the image is {size[0]}x{size[1]}")
        return ()
    objects = []
    for value in np.unique(values).tolist():
        value = int(value)
        if value == UNLABELLED:
            continue
        where = f"{label_map}: value {value}"
        if names is None:
            name = str(value)
        elif value >= len(names) or not names[value]:
            tree.skips.skip("label value without class name", where, f"the class name file has {len(names)} lines")
            continue
        else:
            name = names[value]
        if name.lower() in BACKGROUND_NAMES:
            continue
        rle = masks.encode_mask(values == value)
        bbox = masks.rle_bbox(rle)
        objects.append(SourceMask(name, rle, 0, (bbox[0], bbox[1], bbox[2], bbox[3]), masks.rle_area(rle), where))
    return tuple(objects)

"""YOLO sources: ``class cx cy w h`` label files, the class names in a names file, and the split as
ultralytics declares it (``data.yaml`` ``train:`` / ``val:``) or lays it out (``images/train``, ``images/val``)."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

from ...errors import ConfigError
from ...protocol.files import open_regular, read_text
from ...protocol.yaml_file import YamlLimitError, read_yaml
from .base import OUTSIDE, SourceBox, SourceData, SourceImage, SourceSplit, SourceTree, source_split, split_kind

YOLO_NAME_FILES = ("classes.txt", "obj.names", "data.yaml", "dataset.yaml")
#: The ultralytics dataset files that may declare the split.
DATASET_FILES = ("data.yaml", "dataset.yaml")


def read_yolo(tree: SourceTree) -> SourceData:
    """YOLO: ``class cx cy w h`` normalised to the image size, in ``<stem>.txt`` beside the image or in the
    ``labels/`` folder mirroring ``images/``; names from classes.txt, obj.names or data.yaml ``names``.

    A normalised box becomes inclusive pixel corners ``(cx - w/2) * width`` .. ``(cx + w/2) * width - 1`` of the
    size the asset will hold. Raises :class:`~ymir_runner.errors.ConfigError` for a names file that cannot be
    read or has no ``names``. The split: see :func:`yolo_split`.
    """
    names = _yolo_names(tree)
    labels = {path for path in tree.with_suffix(".txt") if os.path.basename(path) not in YOLO_NAME_FILES}
    items = []
    for image in tree.images:
        label = _yolo_label(image, labels)
        boxes = _yolo_boxes(label, image, names, tree) if label else ()
        items.append(SourceImage(image, boxes))
    return SourceData(items, list(names or ()), numeric_classes=names is None, split=yolo_split(tree))


def _yolo_names(tree: SourceTree) -> list[str] | None:
    found = [path for path in tree.files if os.path.basename(path) in YOLO_NAME_FILES]
    if not found:
        return None
    # the shallowest names file wins; at one depth, the order of YOLO_NAME_FILES
    path = min(found, key=lambda p: (p.count(os.sep), YOLO_NAME_FILES.index(os.path.basename(p))))
    if path.endswith(".yaml"):
        document = read_yaml(path, "YOLO dataset file")  # ConfigError naming the file
        names = document.get("names") if isinstance(document, Mapping) else None
    else:
        try:
            text = read_text(path)  # a Windows editor's byte-order mark is ignored
        except OSError as error:
            raise ConfigError(f"cannot read YOLO class names from {path}: {error.strerror or error}") from error
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(names, Mapping):  # {0: cat, 1: dog}
        return [str(names[key]) for key in sorted(names, key=int)]
    if isinstance(names, list):
        return [str(name) for name in names]
    raise ConfigError(f"{path} has no 'names' list")


def _yolo_label(image: str, labels: set[str]) -> str | None:
    stem = os.path.splitext(image)[0]
    parts = stem.split(os.sep)
    candidates = [stem + ".txt"]
    if "images" in parts[:-1]:  # images/train/x.jpg -> labels/train/x.txt
        at = len(parts) - 2 - parts[-2::-1].index("images")
        candidates.append(os.sep.join(parts[:at] + ["labels"] + parts[at + 1:]) + ".txt")
    return next((path for path in candidates if path in labels), None)


def _yolo_boxes(label: str, image: str, names: list[str] | None, tree: SourceTree) -> tuple[SourceBox, ...]:
    """The boxes of one label file; bad lines skipped and counted, quoted only when the file held a box (a file
    that is no label file is named, never shown)."""
    try:
        lines = read_text(label).splitlines()
    except OSError as error:
        tree.skips.skip("unreadable annotation", label, error.strerror or str(error))
        return ()
    boxes = []
    bad: list[tuple[str, str, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{label}:{number}"
        fields = line.split()
        try:
            if len(fields) not in (5, 6):  # a 6th field is a confidence; polygons are not boxes
                raise ValueError
            index = int(float(fields[0]))
            cx, cy, w, h = (float(value) for value in fields[1:5])
        except (ValueError, OverflowError):  # OverflowError: a class of 'inf'
            bad.append(("malformed box", where, repr(line.strip())))
            continue
        if index < 0:
            bad.append(("malformed box", where, repr(line.strip())))
            continue
        if names is not None and index >= len(names):
            tree.skips.skip("class index outside the names file", where, f"class {index}, {len(names)} names")
            continue
        size = tree.sizes(image)
        if size is None:
            tree.skips.skip("image size unknown (PIL cannot open it)", where)
            continue
        width, height = size
        corners = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width - 1, (cy + h / 2) * height - 1)
        if not all(math.isfinite(value) for value in corners):  # NaN, or 1e308 times the image size
            bad.append(("malformed box", where, f"{repr(line.strip())}: not finite in a {width}x{height} image"))
            continue
        name = names[index] if names is not None else str(index)
        boxes.append(SourceBox(name, *corners))
    for reason, where, detail in bad:
        tree.skips.skip(reason, where, detail if boxes else "no line of the file is a box, so its lines are not shown")
    return tuple(boxes)


def looks_like_yolo(path: str) -> bool:
    """Whether the first non-empty line of ``path`` is a YOLO box (5 or 6 finite numbers)."""
    try:
        with open_regular(path, limit=None) as stream:
            head = stream.read(1 << 16).decode("utf-8-sig", "replace")
        line = next((line for line in head.splitlines() if line.strip()), "")
    except OSError:
        return False
    try:
        return len(line.split()) in (5, 6) and all(math.isfinite(float(field)) for field in line.split())
    except ValueError:
        return False


# --- the split ----------------------------------------------------------------------------------------------

def yolo_split(tree: SourceTree) -> SourceSplit | None:
    """The split as ultralytics reads it: ``train:`` and ``val:`` of the shallowest data.yaml / dataset.yaml
    (each a folder, a list file of image paths, or a list of those; relative to its ``path:``, to the yaml's
    folder or to SOURCE), else the folder layout (an image below a folder named ``train``/``train2017`` or
    ``val``/``valid``/``val2017``: ``images/train``, ``train/images``). None unless both parts hold images."""
    found = [path for path in tree.files if os.path.basename(path) in DATASET_FILES]
    if found:
        declared = _declared_split(tree, min(found, key=lambda p: (p.count(os.sep), os.path.basename(p))))
        if declared is not None:
            return declared
    return _folder_split(tree)


def _declared_split(tree: SourceTree, path: str) -> SourceSplit | None:
    try:
        document = read_yaml(path, "YOLO dataset file")
    except YamlLimitError:
        raise
    except ConfigError:
        return None
    if not isinstance(document, Mapping):
        return None
    folder = os.path.dirname(path)
    roots = [os.path.join(folder, document["path"])] if isinstance(document.get("path"), str) else []
    roots += [folder, tree.root]
    images = set(tree.images)
    train, val = (_listed(tree, document.get(key), roots, images, f"{path} ({key})") for key in ("train", "val"))
    return source_split(train, val, f"{tree.relative(path)} train: {document.get('train')}, val: {document.get('val')}")


def _listed(tree: SourceTree, value: Any, roots: list[str], images: set[str], where: str) -> list[str]:
    """The images of one ``train:`` / ``val:`` value (``where`` names it): folders and list files, found below the
    first root that has them. Only SOURCE's own images are taken from a folder; a list file outside SOURCE is not
    read (skipped and named)."""
    found: list[str] = []
    for entry in value if isinstance(value, list) else [value]:
        if not isinstance(entry, str) or not entry.strip():
            return []
        outside = ""
        for root in roots:
            target = os.path.normpath(os.path.join(root, entry.strip()))
            if os.path.isdir(target):
                found += sorted(image for image in images if image.startswith(target + os.sep))
                break
            if os.path.isfile(target) and not tree.inside(target):
                outside = outside or target
            elif os.path.isfile(target):
                found += _list_file(tree, target, roots, images)
                break
        else:
            if outside:
                tree.skips.skip(OUTSIDE, where, f"list file {outside} is outside SOURCE {tree.root}: not read")
    return found


def _list_file(tree: SourceTree, path: str, roots: list[str], images: set[str]) -> list[str]:
    """The images a list file names, one a line: absolute, relative to the file's folder (ultralytics' ``./``)
    or to a root."""
    found = []
    for line in tree.read_list(path) or ():
        bases = [""] if os.path.isabs(line) else [os.path.dirname(path), *roots]
        found += [image for image in (os.path.normpath(os.path.join(base, line)) for base in bases)
                  if image in images][:1]
    return found


def _folder_split(tree: SourceTree) -> SourceSplit | None:
    parts: dict[str, list[str]] = {"train": [], "val": []}
    folders: dict[str, set[str]] = {"train": set(), "val": set()}
    for image in tree.images:
        names = tree.relative(os.path.dirname(image)).split("/")
        kind = split_kind(names)
        if kind is None:
            continue
        parts[kind].append(image)
        at = max(index for index, name in enumerate(names) if split_kind([name]) == kind)
        folders[kind].add("/".join(names[:at + 1]))
    shown = [", ".join(sorted(folders[kind])[:3]) + (", ..." if len(folders[kind]) > 3 else "")
             for kind in ("train", "val")]
    return source_split(parts["train"], parts["val"], f"folders {shown[0]} + {shown[1]}")

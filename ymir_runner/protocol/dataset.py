"""Streaming readers for the dataset index files and annotations the platform writes under /in.

Bad input never crashes a reader: a missing image, an unreadable annotation file or a malformed box is
skipped, counted in a :class:`SkipLog` and reported with its file and line.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import xml.etree.ElementTree as ElementTree
from typing import Iterable, Iterator, NamedTuple, Sequence

from ..errors import ConfigError, DatasetError
from .env import reroot

log = logging.getLogger("ymir_runner.dataset")

#: Warnings logged per skip reason before only counting; the summary gives the totals.
MAX_WARNINGS_PER_REASON = 10


class Box(NamedTuple):
    """An axis-aligned box in pixel-edge coordinates: ``x2`` is exclusive, so ``width == x2 - x1``.

    YMIR's files use inclusive corners (``xmax = x + w - 1``); readers add 1, the writers subtract it.
    (A NamedTuple: datasets hold millions of boxes, and tuples are the cheapest immutable record.)
    """

    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    quality: float = -1.0
    angle: float = 0.0

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


class Item(NamedTuple):
    """One dataset entry: an image, its annotation file ('' for candidates) and its boxes."""

    image: str
    annotation: str = ""
    boxes: tuple[Box, ...] = ()


class SkipLog:
    """Counts what was skipped, by reason, and warns with the location for the first few of each reason."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._log = logger

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.counts[reason] += 1
        count = self.counts[reason]
        if count <= MAX_WARNINGS_PER_REASON:
            suffix = f": {detail}" if detail else ""
            self._log.warning("skipped (%s) at %s%s", reason, where, suffix)
            if count == MAX_WARNINGS_PER_REASON:
                self._log.warning("further '%s' skips are only counted", reason)

    def add(self, reason: str, count: int) -> None:
        """Count ``count`` skips found elsewhere (e.g. images a DataLoader worker could not decode)."""
        if count > 0:
            self.counts[reason] += count

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return ", ".join(f"{count} {reason}" for reason, count in sorted(self.counts.items())) or "nothing"


# --- images ---------------------------------------------------------------------------------------------

_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def sniff_image_format(path: str) -> str | None:
    """The image format from the file's first bytes (YMIR's extensions are unreliable), or None."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


# --- annotations ----------------------------------------------------------------------------------------

class _BadBox(ValueError):
    """A box line or object that cannot be used; the message is the skip reason's detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _box(class_id: int, xmin: float, ymin: float, xmax: float, ymax: float, num_classes: int,
         quality: float = -1.0, angle: float = 0.0) -> Box:
    if not all(math.isfinite(value) for value in (xmin, ymin, xmax, ymax)):
        raise _BadBox("non-numeric field", f"({xmin}, {ymin}, {xmax}, {ymax})")
    if not 0 <= class_id < num_classes:
        raise _BadBox("class id outside class_names", f"class id {class_id} with {num_classes} classes")
    if xmax < xmin or ymax < ymin:
        raise _BadBox("inverted box", f"({xmin}, {ymin}, {xmax}, {ymax})")
    return Box(class_id, xmin, ymin, xmax + 1.0, ymax + 1.0, quality, angle)


def _whole_number(text: str) -> int:
    """'1.0' → 1; '1.5', 'nan' and 'inf' are errors (int(float(...)) would truncate or overflow)."""
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def parse_ark_line(line: str, num_classes: int) -> Box:
    """``class_idx, xmin, ymin, xmax, ymax[, quality[, angle]]`` (comma or comma+space, inclusive corners).

    This is the hot loop of reading a large training set, hence the inlined checks.
    """
    fields = line.split(",")
    count = len(fields)
    if count < 5 or count > 7:
        raise _BadBox("malformed line", f"{count} fields in {line.strip()!r}")
    try:
        class_text = fields[0]
        class_id = int(class_text) if class_text.strip().isdigit() else _whole_number(class_text)
        xmin, ymin, xmax, ymax = float(fields[1]), float(fields[2]), float(fields[3]), float(fields[4])
        quality = float(fields[5]) if count > 5 else -1.0
        angle = float(fields[6]) if count > 6 else 0.0
        if not math.isfinite(xmin + ymin + xmax + ymax):  # 'nan' and 'inf' parse as floats
            raise ValueError(line)
    except ValueError:
        raise _BadBox("non-numeric field", repr(line.strip())) from None
    if class_id < 0 or class_id >= num_classes:
        raise _BadBox("class id outside class_names", f"class id {class_id} with {num_classes} classes")
    if xmax < xmin or ymax < ymin:
        raise _BadBox("inverted box", f"({xmin}, {ymin}, {xmax}, {ymax})")
    return Box(class_id, xmin, ymin, xmax + 1.0, ymax + 1.0, quality, angle)


def ark_text(boxes: Iterable[tuple[int, int, int, int, int]]) -> str:
    """det-ark as the platform exports it, from ``(class_idx, xmin, ymin, xmax, ymax)`` inclusive integer
    corners: ``class_idx, xmin, ymin, xmax, ymax, quality, angle`` with quality -1.0 (unknown)."""
    return "".join(f"{c}, {x1}, {y1}, {x2}, {y2}, -1.0, 0\n" for c, x1, y1, x2, y2 in boxes)


def _voc_float(node: ElementTree.Element | None, tag: str, default: float | None = None) -> float:
    child = None if node is None else node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is None:
            raise _BadBox("malformed object", f"missing <{tag}>")
        return default
    try:
        return float(child.text)
    except ValueError:
        raise _BadBox("non-numeric field", f"<{tag}>{child.text}</{tag}>") from None


class AnnotationReader:
    """Reads one annotation file into boxes for a given class list and annotation format."""

    def __init__(self, class_names: Sequence[str], annotation_format: str, skips: SkipLog) -> None:
        self.class_names = tuple(class_names)
        self.format = annotation_format
        self.skips = skips
        self._class_ids = {name.lower(): index for index, name in enumerate(self.class_names)}
        self._coco: dict[str, tuple[Box, ...]] | None = None
        self._coco_file = ""
        readers = {"det-ark": self._read_ark, "det-voc": self._read_voc, "seg-coco": self._read_coco}
        if annotation_format not in readers:
            raise ConfigError(
                f"config key 'export_format': annotation format {annotation_format!r} is not supported "
                f"(supported: {', '.join(readers)})")
        self.read = readers[annotation_format]

    def _read_ark(self, path: str, image: str) -> tuple[Box, ...] | None:
        try:
            with open(path, encoding="utf-8") as stream:
                lines = stream.readlines()
        except (OSError, UnicodeDecodeError) as error:
            self.skips.skip("unreadable annotation", path, str(error))
            return None
        boxes = []
        num_classes = len(self.class_names)
        for number, line in enumerate(lines, 1):
            if line.isspace():
                continue
            try:
                boxes.append(parse_ark_line(line, num_classes))
            except _BadBox as bad:
                self.skips.skip(bad.reason, f"{path}:{number}", str(bad))
        return tuple(boxes)

    def _read_voc(self, path: str, image: str) -> tuple[Box, ...] | None:
        try:
            with open(path, "rb") as stream:
                content = stream.read()
            if not content.strip():  # the platform writes an empty file for an image without boxes
                return ()
            root = ElementTree.fromstring(content)
        except (OSError, ElementTree.ParseError) as error:
            self.skips.skip("unreadable annotation", path, str(error))
            return None
        boxes = []
        for number, obj in enumerate(root.iter("object"), 1):
            where = f"{path}:object {number}"
            try:
                name = (obj.findtext("name") or "").strip().lower()
                if name not in self._class_ids:
                    raise _BadBox("class name outside class_names", repr(name))
                bndbox = obj.find("bndbox")
                corners = [_voc_float(bndbox, tag) for tag in ("xmin", "ymin", "xmax", "ymax")]
                quality = _voc_float(obj, "box_quality", -1.0)
                angle = _voc_float(bndbox, "rotate_angle", _voc_float(obj, "rotate_angle", 0.0))
                boxes.append(_box(self._class_ids[name], *corners, len(self.class_names), quality, angle))
            except _BadBox as bad:
                self.skips.skip(bad.reason, where, str(bad))
        return tuple(boxes)

    def _read_coco(self, path: str, image: str) -> tuple[Box, ...] | None:
        if self._coco is None or path != self._coco_file:
            self._coco, self._coco_file = self._load_coco(path), path
        return self._coco.get(os.path.basename(image), ())

    def _load_coco(self, path: str) -> dict[str, tuple[Box, ...]]:
        try:
            with open(path, encoding="utf-8") as stream:
                coco = json.load(stream)
            images = {entry["id"]: os.path.basename(entry["file_name"]) for entry in coco.get("images", [])}
            names = {entry["id"]: str(entry.get("name", "")).lower() for entry in coco.get("categories", [])}
            annotations = coco.get("annotations", [])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise DatasetError(f"cannot read COCO annotations {path}: {error}") from error
        by_image: dict[str, list[Box]] = collections.defaultdict(list)
        for number, entry in enumerate(annotations):
            where = f"{path}:annotations[{number}]"
            try:
                category = entry["category_id"]
                if names:  # match by name: the json's category list need not follow class_names
                    if names.get(category) not in self._class_ids:
                        raise _BadBox("class name outside class_names", repr(names.get(category, category)))
                    class_id = self._class_ids[names[category]]
                else:  # no category list: ids are 0-based indexes into class_names
                    class_id = category
                x, y, w, h = (float(value) for value in entry["bbox"])
                # COCO boxes are [x, y, w, h] with exclusive extent; _box takes inclusive corners.
                box = _box(int(class_id), x, y, x + w - 1.0, y + h - 1.0, len(self.class_names))
                by_image[images[entry["image_id"]]].append(box)
            except _BadBox as bad:
                self.skips.skip(bad.reason, where, str(bad))
            except (KeyError, TypeError, ValueError) as error:
                self.skips.skip("malformed object", where, repr(error))
        return {name: tuple(boxes) for name, boxes in by_image.items()}


# --- index files ----------------------------------------------------------------------------------------

class DatasetReader:
    """A training/validation index (``image<TAB>annotation``) or a candidate index (``image``), streamed.

    Iterating yields :class:`Item` objects and skips (and counts) lines whose image is missing or whose
    annotation file cannot be read. ``len()`` counts the index lines without reading annotations.
    """

    def __init__(self, index_file: str, *, annotations: AnnotationReader | None, skips: SkipLog,
                 name: str, root: str | None = None) -> None:
        self.index_file = index_file
        #: A local run's stand-in for '/': the container paths inside the index are read under it.
        self.root = root
        self.annotations = annotations
        self.skips = skips
        self.name = name
        self._length: int | None = None

    @property
    def annotated(self) -> bool:
        return self.annotations is not None

    def _lines(self) -> Iterator[tuple[int, str]]:
        if not self.index_file:
            return
        try:
            stream = open(self.index_file, encoding="utf-8")
        except OSError as error:
            raise DatasetError(f"cannot read {self.name} index {self.index_file}: {error.strerror}") from error
        with stream:
            for number, line in enumerate(stream, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line

    def is_empty(self) -> bool:
        """True when the index has no line (reads at most one line)."""
        return next(self._lines(), None) is None

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(1 for _ in self._lines())
        return self._length

    def __iter__(self) -> Iterator[Item]:
        exists = os.path.exists
        local = self._local
        for number, line in self._lines():
            where = f"{self.index_file}:{number}"
            fields = line.split("\t")
            image = local(fields[0].strip())
            if not exists(image):
                self.skips.skip("missing image", where, image)
                continue
            if self.annotations is None:
                yield Item(image)
                continue
            annotation = local(fields[1].strip()) if len(fields) > 1 else ""
            if not annotation:
                self.skips.skip("missing annotation", where, "no annotation path on the line")
                continue
            boxes = self.annotations.read(annotation, image)
            if boxes is not None:
                yield Item(image, annotation, boxes)

    def paths(self) -> list[str]:
        """Every image path of the index in file order, without checking anything (for result writers)."""
        return [self._local(line.split("\t")[0].strip()) for _, line in self._lines()]

    def _local(self, path: str) -> str:
        return reroot(path, self.root) if self.root else path

"""Readers for the dataset index files and annotations the platform writes under /in.

Bad input never crashes a reader: a missing image, an unreadable annotation file or a malformed box is
skipped, counted in a :class:`SkipLog` and reported with its file and line. What can be used after a fix is
used and counted as a repair: a box sticking out of its image is clipped to it, a truncated image is read as
far as its data goes. Every image's header is read (by the rules of :mod:`.images`), so boxes are checked
against the stored size the platform recorded.

Only regular files are read (:mod:`.files`): an index, annotation or image path naming a FIFO, a device or a
folder is a bad item, skipped and named like any other (an index file: :class:`~ymir_runner.errors.DatasetError`).
A warning quotes a line of an annotation file only when the file held at least one box: a file that is not an
annotation file at all (``/etc/shadow`` named as one) is named with the kind of problem, never its lines.
"""

from __future__ import annotations

import codecs
import collections
import io
import logging
import math
import os
import xml.etree.ElementTree as ElementTree
from typing import Iterable, Iterator, NamedTuple, Protocol, Sequence

import numpy as np

from ..errors import ConfigError, DatasetError
from . import files, masks
from .annotations import (
    ANNOTATION_FORMATS,
    MASK_FORMATS,
    BadBox,
    Box,
    Segment,
    coco_box,
    coco_iscrowd,
    export_format_of,
    parse_ark_line,
    parse_voc_object,
    parse_xml,
    read_coco,
)
from .config import DETECTION, OBJECT_TYPES, SEGMENTATION
from .files import UnreadableFile, irregular, open_regular, read_bytes, read_text, size_text
from .images import ImageProblem, probe_image
from .paths import reroot

log = logging.getLogger("ymir_runner.dataset")

#: Warnings logged per skip reason before only counting; the summary gives the totals.
MAX_WARNINGS_PER_REASON = 10


class Item(NamedTuple):
    """One dataset entry: an image, its annotation file ('' for candidates), its boxes (clipped to the image,
    exact duplicates removed), the image's STORED size in pixels (0 when unknown) and the damage already counted
    for it ('', ``truncated image`` or ``corrupt image data``: used, decoded as far as its data goes).

    In a segmentation task (object_type 3 or 4) ``segments`` holds each object's mask, NOT decoded, in the
    file's order (semantic ground truth paints later objects over earlier ones), checked against the stored size;
    ``boxes[i]`` is the file's ``bbox`` of ``segments[i]`` (clipped to the image, never deduplicated: two
    instances may share a box). :meth:`masks` and :meth:`label_map` decode them when a plugin asks."""

    image: str
    annotation: str = ""
    boxes: tuple[Box, ...] = ()
    width: int = 0
    height: int = 0
    damage: str = ""
    segments: tuple[Segment, ...] = ()

    def masks(self, factor: int = 1) -> Iterator[tuple[Segment, np.ndarray]]:
        """``(segment, mask)`` for each object in file order, decoded one at a time (a generator: keep only the
        mask you need and one image never holds N x H x W): ``mask`` is ``bool`` ``[height, width]`` in stored
        pixels, or reduced as the image is when ``factor`` is :attr:`~.images.DecodedImage.factor` > 1
        (``[ceil(height / factor), ceil(width / factor)]``, :func:`~.masks.reduce_mask`). Polygons are rasterised
        by COCO's rasteriser, as the platform rasterises them."""
        for segment in self.segments:
            yield segment, masks.decode_segmentation(segment.segmentation, self.height, self.width, factor)

    def label_map(self, factor: int = 1) -> np.ndarray:
        """The semantic ground truth as the platform paints it: a ``uint8`` ``[height, width]`` map (reduced like
        :meth:`masks` with ``factor``) of class ids, objects painted in file order over a canvas of
        :data:`~.masks.IGNORE_LABEL` (255: unlabelled, ignored by the evaluation), crowd objects included."""
        factor = max(factor, 1)
        height, width = -(-self.height // factor), -(-self.width // factor)
        return masks.paint_label_map(((segment.class_id, mask) for segment, mask in self.masks(factor)),
                                     height, width)


class FileNames(Protocol):
    """What names the user's own files beside the assets a message mentions: the sandbox's map of where each asset
    came from (:class:`ymir_runner.origins.Origins`, read from ``in/sandbox-origins.tsv``)."""

    def originals(self, text: str) -> list[str]:
        """The user's files of every asset ``text`` mentions, in order, each once."""

    def annotate(self, text: str) -> str:
        """``text`` with the user's files after the first mention of each asset."""


class SkipLog:
    """Counts what was skipped and what was used after a repair, by reason; warns with the location for the
    first few of each reason (the summary gives the totals)."""

    def __init__(self, logger: logging.Logger = log, *, names: FileNames | None = None) -> None:
        #: Items and boxes left out, by reason.
        self.counts: collections.Counter[str] = collections.Counter()
        #: Items and boxes used after a fix (a clipped box, a truncated image), by reason.
        self.repairs: collections.Counter[str] = collections.Counter()
        self._log = logger
        #: A sandbox's map of where each asset came from: warnings and :meth:`report` name the user's files too.
        self.names = names
        #: ``(verb, reason)`` -> the user's files it happened to (with ``names``; the first few are named).
        self.named: dict[tuple[str, str], list[str]] = collections.defaultdict(list)

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self._note(self.counts, "skipped", reason, where, detail)

    def repair(self, reason: str, where: str, detail: str = "") -> None:
        """Count an item or box that is used after a fix (the first few are warned about with ``where``)."""
        self._note(self.repairs, "repaired", reason, where, detail)

    def _note(self, counter: collections.Counter[str], verb: str, reason: str, where: str, detail: str) -> None:
        counter[reason] += 1
        count = counter[reason]
        text = f"{where}: {detail}" if detail else where
        if self.names is not None:
            named = self.named[verb, reason]
            named += [name for name in self.names.originals(text) if name not in named][:_NAMED - len(named)]
            text = self.names.annotate(text)
        if count <= MAX_WARNINGS_PER_REASON:
            self._log.warning("%s (%s) at %s", verb, reason, text)
            if count == MAX_WARNINGS_PER_REASON:
                self._log.warning("further '%s' are only counted", reason)

    def add(self, reason: str, count: int) -> None:
        """Count ``count`` skips found elsewhere (e.g. images a DataLoader worker could not decode)."""
        if count > 0:
            self.counts[reason] += count

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """What was skipped, e.g. ``3 missing image, 1 inverted box`` (``nothing`` when nothing was)."""
        return _counts_text(self.counts) or "nothing"

    def report(self) -> str:
        """One line for the end of a task: ``skipped ...; repaired ...`` ('' when there is nothing to say)."""
        parts = [f"{verb} {_counts_text(counter, self._named_of(verb))}"
                 for verb, counter in (("skipped", self.counts), ("repaired", self.repairs)) if counter]
        return "; ".join(parts)

    def _named_of(self, verb: str) -> dict[str, str]:
        """reason -> ``img_0003.jpg, b.jpg, ...``: the user's files :meth:`report` names (with ``names``)."""
        return {reason: ", ".join(files[:_NAMED - 1]) + (", ..." if len(files) >= _NAMED else "")
                for (done, reason), files in self.named.items() if done == verb and files}


#: The user's files remembered per reason for :meth:`SkipLog.report`, which names one fewer ("..." for the rest).
_NAMED = 4


def _counts_text(counts: collections.Counter[str], named: dict[str, str] | None = None) -> str:
    """``3 missing image, 1 truncated image (img_0003.jpg)``: the user's files in ``named``, by reason."""
    named = named or {}
    return ", ".join(f"{count} {reason}" + (f" ({named[reason]})" if reason in named else "")
                     for reason, count in sorted(counts.items()))


# --- annotations ----------------------------------------------------------------------------------------

def _box(class_id: int, xmin: float, ymin: float, xmax: float, ymax: float, num_classes: int,
         quality: float = -1.0, angle: float = 0.0, *, inclusive: bool = True) -> Box:
    """A checked Box from YMIR's inclusive corners (``xmax = x + w - 1``), or from exclusive ones (COCO)."""
    if not math.isfinite(xmin + ymin + xmax + ymax):  # a nan or inf corner (the hot loop of a 100,000-object file)
        raise BadBox("non-numeric field", f"({xmin}, {ymin}, {xmax}, {ymax})")
    if not 0 <= class_id < num_classes:
        raise BadBox("class id outside class_names", f"class id {class_id} with {num_classes} classes")
    if xmax < xmin or ymax < ymin:
        raise BadBox("inverted box", f"({xmin}, {ymin}, {xmax}, {ymax})")
    extra = 1.0 if inclusive else 0.0
    return Box(class_id, xmin, ymin, xmax + extra, ymax + extra, quality, angle)


def check_mask_format(annotation_format: str, object_type: int, export_format: str | None = None) -> None:
    """A segmentation task (object_type 3 or 4) reads masks, which only :data:`~.annotations.MASK_FORMATS`
    carry: ConfigError (300001) naming config key ``export_format`` (``export_format``: its text as written,
    when known) for det-ark, det-voc, seg-mask or anything else. Detection tasks pass."""
    if object_type in SEGMENTATION and annotation_format not in MASK_FORMATS:
        written = export_format if export_format is not None else export_format_of(annotation_format)
        raise ConfigError(
            f"config key 'export_format': {written!r} carries no masks, and object_type {object_type} "
            f"({OBJECT_TYPES[object_type]}) is trained on masks: use {export_format_of(MASK_FORMATS[0])!r}")


class AnnotationReader:
    """Reads one annotation file into boxes for a given class list and annotation format; in a segmentation task
    (``object_type`` 3 or 4) seg-coco objects keep their masks (:attr:`Item.segments`), not decoded."""

    def __init__(self, class_names: Sequence[str], annotation_format: str, skips: SkipLog, *,
                 object_type: int = DETECTION) -> None:
        self.class_names = tuple(class_names)
        self.format = annotation_format
        self.skips = skips
        self.object_type = object_type
        #: Objects are masks (object_type 3 or 4): box-only objects are skipped, each mask checked.
        self.masks = object_type in SEGMENTATION
        self._class_ids = {name.lower(): index for index, name in enumerate(self.class_names)}
        self._coco: dict[str, tuple[tuple[Box, ...], tuple[Segment, ...]]] | None = None
        self._coco_file = ""
        readers = {"det-ark": self._read_ark, "det-voc": self._read_voc, "seg-coco": self._read_coco}
        check_mask_format(annotation_format, object_type)
        if annotation_format not in readers:
            raise ConfigError(
                f"config key 'export_format': annotation format {annotation_format!r} is not supported "
                f"(supported: {', '.join(readers)})")
        #: One annotation file per image (det-ark, det-voc), or one file for all of them (seg-coco).
        self.per_image = ANNOTATION_FORMATS[annotation_format].per_image
        self.read = readers[annotation_format]

    def read_objects(self, path: str, image: str) -> tuple[tuple[Box, ...], tuple[Segment, ...]] | None:
        """``(boxes, segments)`` of ``image`` (None: the file could not be read, skipped and counted); segments
        only in a segmentation task, one per box, in file order."""
        if self.masks:
            return self._coco_objects(path).get(os.path.basename(image), ((), ()))
        boxes = self.read(path, image)
        return None if boxes is None else (boxes, ())

    def _read_ark(self, path: str, image: str) -> tuple[Box, ...] | None:
        try:
            text = read_text(path)
        except OSError as error:
            self.skips.skip("unreadable annotation", path, _problem(error))
            return None
        boxes = []
        bad: list[tuple[str, BadBox]] = []
        num_classes = len(self.class_names)
        for number, line in enumerate(io.StringIO(text, newline=None), 1):
            if line.isspace():
                continue
            try:
                boxes.append(parse_ark_line(line, num_classes))
            except BadBox as error:
                bad.append((f"{path}:{number}", error))
        self._skip_bad(bad, bool(boxes))
        return tuple(boxes)

    def _read_voc(self, path: str, image: str) -> tuple[Box, ...] | None:
        try:
            content = read_bytes(path)
            if not content.strip():  # the platform writes an empty file for an image without boxes
                return ()
            root = parse_xml(content)
        except OSError as error:
            self.skips.skip("unreadable annotation", path, _problem(error))
            return None
        except (ValueError, ElementTree.ParseError) as error:  # ValueError: undecodable text
            self.skips.skip("unreadable annotation", path, str(error))
            return None
        boxes = []
        bad: list[tuple[str, BadBox]] = []
        for number, element in enumerate(root.iter("object"), 1):
            try:
                obj = parse_voc_object(element)
                if obj.name not in self._class_ids:
                    raise BadBox("class name outside class_names", repr(obj.name))
                boxes.append(_box(self._class_ids[obj.name], obj.xmin, obj.ymin, obj.xmax, obj.ymax,
                                  len(self.class_names), obj.quality, obj.angle))
            except BadBox as error:
                bad.append((f"{path}:object {number}", error))
        self._skip_bad(bad, bool(boxes))
        return tuple(boxes)

    def _skip_bad(self, bad: Sequence[tuple[str, BadBox]], any_box: bool) -> None:
        """Skip and count each bad line or object; quote it only when its file held a box (it is an annotation
        file): the lines of another file named as one (``/etc/shadow``) are never shown."""
        for where, error in bad:
            self.skips.skip(error.reason, where, str(error) if any_box else _NOT_SHOWN)

    def _read_coco(self, path: str, image: str) -> tuple[Box, ...] | None:
        return self._coco_objects(path).get(os.path.basename(image), ((), ()))[0]

    def _coco_objects(self, path: str) -> dict[str, tuple[tuple[Box, ...], tuple[Segment, ...]]]:
        if self._coco is None or path != self._coco_file:
            self._coco, self._coco_file = self._load_coco(path), path
        return self._coco

    def _load_coco(self, path: str) -> dict[str, tuple[tuple[Box, ...], tuple[Segment, ...]]]:
        """Every object of a COCO file by image basename, in file order. In a segmentation task each keeps its
        segmentation as the json value (nothing is decoded here) and its ``iscrowd``; a box-only object
        (``segmentation`` ``{}`` or absent) is skipped as ``object without mask``, named with the file and its
        annotation id."""
        coco = read_coco(path)
        images = {image.id: os.path.basename(image.file_name) for image in coco.images}
        names = {category: name.lower() for category, name in coco.categories.items()}
        by_image: dict[str, list[Box]] = collections.defaultdict(list)
        segments: dict[str, list[Segment]] = collections.defaultdict(list)
        with_masks = self.masks

        def where(number: int, entry: object) -> str:  # made for a skip only: 100,000 objects are read
            named = f"{path}:annotations[{number}]"
            return f"{named} (annotation id {entry.get('id')})" if with_masks and isinstance(entry, dict) else named

        for number, entry in enumerate(coco.annotations):
            try:
                found = coco_box(entry)
                if names:  # match by name: the json's category list need not follow class_names
                    if names.get(found.category_id) not in self._class_ids:
                        raise BadBox("class name outside class_names",
                                     repr(names.get(found.category_id, found.category_id)))
                    class_id = self._class_ids[names[found.category_id]]
                else:  # no category list: ids are 0-based indexes into class_names
                    class_id = found.category_id
                if found.x2 <= found.x1 or found.y2 <= found.y1:  # a box under a pixel wide is still a box
                    raise BadBox("empty box", f"bbox {entry['bbox']}")
                box = _box(int(class_id), found.x1, found.y1, found.x2, found.y2, len(self.class_names),
                           inclusive=False)
                name = images[found.image_id]
                if with_masks:
                    segmentation = entry.get("segmentation")
                    if not masks.has_mask(segmentation):
                        raise BadBox(masks.NO_MASK, f"segmentation {segmentation!r} in a "
                                                    f"{OBJECT_TYPES[self.object_type]} task")
                    segments[name].append(Segment(box.class_id, segmentation, coco_iscrowd(entry), entry.get("id")))
                by_image[name].append(box)
            except BadBox as bad:
                self.skips.skip(bad.reason, where(number, entry), str(bad))
            except (KeyError, TypeError, ValueError) as error:
                self.skips.skip("malformed object", where(number, entry), repr(error))
        return {name: (tuple(boxes), tuple(segments.get(name, ()))) for name, boxes in by_image.items()}


#: The detail of a bad line in a file that held no box at all: it may not be an annotation file.
_NOT_SHOWN = "no line of the file is a box, so its lines are not shown"


def _problem(error: OSError) -> str:
    """Why a file was not read, without its path (the warning names it): ``not a regular file (a FIFO)``, ``No
    such file or directory``."""
    return str(error) if isinstance(error, UnreadableFile) else (error.strerror or str(error))


# --- index files ----------------------------------------------------------------------------------------

def index_lines(index_file: str, name: str) -> Iterator[tuple[int, str | None]]:
    """``(line number, text)`` of each non-blank line of an index file; text is None for a line that is not valid
    text. The one reader of index files (the dataset readers, the SDK bridge's re-rooted copies).

    Index files are UTF-8 (a byte-order mark, as Windows editors write, is ignored); a file that starts with a
    UTF-16 byte-order mark (Notepad's "Unicode") is read as UTF-16. Raises :class:`~ymir_runner.errors.DatasetError`
    naming the ``name`` index (``training``, ``candidate``...) when it cannot be read: missing, not a regular file,
    larger than :data:`~.files.MAX_INDEX_BYTES`.
    """
    try:
        stream = open_regular(index_file, limit=files.MAX_INDEX_BYTES)
    except OSError as error:
        raise DatasetError(f"cannot read {name} index {index_file}: {_problem(error)}") from error
    with stream:
        head = stream.read(2)
        stream.seek(0)
        if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            lines: Iterable[bytes | str] = io.TextIOWrapper(stream, encoding="utf-16", newline=None)
        else:
            lines = stream
        consumed = 0  # a file that grows while it is read stops at the bound too
        try:
            for number, raw in enumerate(lines, 1):
                consumed += len(raw)
                if consumed > files.MAX_INDEX_BYTES:
                    raise DatasetError(f"cannot read {name} index {index_file}: larger than "
                                       f"{size_text(files.MAX_INDEX_BYTES)}")
                text = _text(raw, first=number == 1)
                if text is None or text.strip():
                    yield number, None if text is None else text.rstrip("\r\n")
        except (OSError, UnicodeError) as error:
            raise DatasetError(f"cannot read {name} index {index_file}: {error}") from error


def _text(raw: bytes | str, first: bool) -> str | None:
    """One index line as text: UTF-8 (a leading byte-order mark removed), or None when it is not."""
    if isinstance(raw, str):
        return raw
    if first and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def fit_boxes(boxes: Sequence[Box], width: int, height: int, skips: SkipLog, where: str) -> tuple[Box, ...]:
    """Boxes clipped to a ``width`` x ``height`` image (pixel edges ``[0, width]``), as the platform's
    ground truth can only mean what lies in the image.

    A box that sticks out is clipped and counted (``box clipped to image``); a box with no area left inside
    is skipped (``box outside image``); an exact duplicate (same class, same corners after clipping) is
    skipped (``duplicate box``): one object annotated twice would count as a missed object forever.
    """
    seen: set[tuple[int, float, float, float, float]] = set()
    kept: list[Box] = []
    for box in boxes:
        corners = f"({box.x1:g}, {box.y1:g}, {box.x2 - 1:g}, {box.y2 - 1:g}) class {box.class_id}"
        as_written = (box.class_id, box.x1, box.y1, box.x2, box.y2)
        if as_written in seen:
            skips.skip("duplicate box", where, corners)
            continue
        seen.add(as_written)
        x1, y1 = max(box.x1, 0.0), max(box.y1, 0.0)
        x2, y2 = min(box.x2, float(width)), min(box.y2, float(height))
        if x2 <= x1 or y2 <= y1:
            skips.skip("box outside image", where, f"{corners} in a {width}x{height} image")
            continue
        if (x1, y1, x2, y2) != (box.x1, box.y1, box.x2, box.y2):
            clipped = (box.class_id, x1, y1, x2, y2)
            if clipped in seen:  # two boxes that only differ outside the image
                skips.skip("duplicate box", where, corners)
                continue
            seen.add(clipped)
            skips.repair("box clipped to image", where, f"{corners} in a {width}x{height} image")
            box = box._replace(x1=x1, y1=y1, x2=x2, y2=y2)
        kept.append(box)
    return tuple(kept)


def fit_segments(boxes: Sequence[Box], segments: Sequence[Segment], width: int, height: int, skips: SkipLog,
                 where: str) -> tuple[tuple[Box, ...], tuple[Segment, ...]]:
    """A segmentation task's objects checked against their image's STORED ``width`` x ``height`` WITHOUT decoding
    a mask (:func:`~.masks.check_segmentation`): an RLE whose size or counts do not fit the image (``mask size
    differs from image``: never decoded into garbage), a bad polygon or a malformed segmentation is skipped,
    counted and named with ``where`` and its annotation id. Boxes are clipped as :func:`fit_boxes` clips them,
    in file order, never deduplicated (two instances may share a box)."""
    kept_boxes: list[Box] = []
    kept: list[Segment] = []
    problems = masks.check_segmentations([segment.segmentation for segment in segments], height, width)
    for box, segment, problem in zip(boxes, segments, problems):
        if problem is not None:
            skips.skip(problem.reason, f"{where} annotation id {segment.annotation_id}", str(problem))
            continue
        x1, y1 = max(box.x1, 0.0), max(box.y1, 0.0)
        x2, y2 = min(box.x2, float(width)), min(box.y2, float(height))
        if (x1, y1, x2, y2) != (box.x1, box.y1, box.x2, box.y2):
            about = f"{where} annotation id {segment.annotation_id}"
            corners = f"bbox ({box.x1:g}, {box.y1:g}, {box.width:g}, {box.height:g}) in a {width}x{height} image"
            if x2 <= x1 or y2 <= y1:
                skips.skip("box outside image", about, corners)
                continue
            skips.repair("box clipped to image", about, corners)
            box = box._replace(x1=x1, y1=y1, x2=x2, y2=y2)
        kept_boxes.append(box)
        kept.append(segment)
    return tuple(kept_boxes), tuple(kept)


class DatasetReader:
    """A training/validation index (``image<TAB>annotation``) or a candidate index (``image``).

    Iterating yields :class:`Item` objects with the image's stored size; it skips (and counts) lines whose
    image is missing, unreadable or too large (:func:`~.images.probe_image`) or whose annotation file cannot
    be read, and fits boxes to their image (:func:`fit_boxes`). ``len()`` counts the index lines without
    reading anything else.
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
        self._items: list[Item] | None = None

    @property
    def annotated(self) -> bool:
        return self.annotations is not None

    def _lines(self) -> Iterator[tuple[int, str | None]]:
        """``(line number, text)`` of each non-blank line (:func:`index_lines`); nothing without an index."""
        if self.index_file:
            yield from index_lines(self.index_file, self.name)

    def is_empty(self) -> bool:
        """True when the index has no line (reads at most one line)."""
        return next(self._lines(), None) is None

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(1 for _ in self._lines())
        return self._length

    def __iter__(self) -> Iterator[Item]:
        """The usable items, read once: an annotated set keeps what it read, so a second pass costs nothing
        and counts nothing twice (candidate indexes, which can be huge, are streamed every time)."""
        if self._items is not None:
            yield from self._items
            return
        items: list[Item] | None = [] if self.annotations is not None else None
        for item in self._read():
            if items is not None:
                items.append(item)
            yield item
        self._items = items

    def _read(self) -> Iterator[Item]:
        local = self._local
        seen: set[str] = set()
        for number, line in self._lines():
            where = f"{self.index_file}:{number}"
            if line is None:
                self.skips.skip("undecodable index line", where, "not UTF-8 text")
                continue
            fields = line.split("\t")
            image = local(fields[0].strip())
            if image in seen:  # evaluated or ranked twice otherwise
                self.skips.skip("duplicate image", where, f"{image} is listed on an earlier line")
                continue
            seen.add(image)
            not_data = irregular(image)  # never hand a FIFO or a device to the image reader
            if not_data:
                self.skips.skip("unreadable image", where, f"{image}: {not_data}")
                continue
            try:
                info = probe_image(image)
            except ImageProblem as problem:
                self.skips.skip(problem.reason, where, str(problem))
                continue
            if info.damage:
                self.skips.repair(info.damage, where, f"{image}: decoded as far as its data goes")
            if self.annotations is None:
                yield Item(image, width=info.width, height=info.height, damage=info.damage)
                continue
            annotation = local(fields[1].strip()) if len(fields) > 1 else ""
            if not annotation:
                self.skips.skip("missing annotation", where, f"no annotation path on the line of {image}")
                continue
            objects = self.annotations.read_objects(annotation, image)
            if objects is not None:
                # one shared COCO file: name the image too
                about = annotation if self.annotations.per_image else f"{annotation} ({os.path.basename(image)})"
                boxes, segments = objects
                if self.annotations.masks:
                    boxes, segments = fit_segments(boxes, segments, info.width, info.height, self.skips, about)
                else:
                    boxes = fit_boxes(boxes, info.width, info.height, self.skips, about)
                yield Item(image, annotation, boxes, info.width, info.height, info.damage, segments)

    def paths(self) -> list[str]:
        """Every image path of the index in file order, each once, without checking anything (for result
        writers); lines that are not valid text are left out."""
        paths = (self._local(line.split("\t")[0].strip()) for _, line in self._lines() if line is not None)
        return list(dict.fromkeys(paths))

    def _local(self, path: str) -> str:
        return reroot(path, self.root) if self.root else path

"""The annotation formats of protocol.md section 2: their names, how to read them and how to write them.

The one home of every annotation format fact in the project: the dataset readers
(:mod:`.dataset`), ``ymir-runner sandbox``, the testing kit and the plugins' data generators all parse and
write through these functions.

Coordinates: YMIR's det-ark and det-voc files hold INCLUSIVE integer corners (``xmax = x + w - 1``); COCO's
``bbox`` is ``[x, y, w, h]`` with an exclusive extent. In memory a box is a :class:`Box`, pixel-edge
(``x2`` exclusive): :func:`parse_ark_line` returns one (the hot loop of reading a training set), the VOC and
COCO parsers return the corners as written (:class:`VocObject`, :class:`CocoBox`) and the caller converts.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import re
import xml.etree.ElementTree as ElementTree
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from ..errors import DatasetError
from .files import read_text

# --- the formats ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AnnotationFormat:
    """One annotation format the platform exports, under its canonical name."""

    name: str
    #: The ``export_format`` value a template writes to ask the platform for it (exactly one colon).
    export_format: str
    #: The annotation parts of ``export_format`` that select it (``ark:raw`` and ``det-ark:raw`` both do).
    aliases: tuple[str, ...]
    #: The suffix of the annotation files (one per image; seg-coco: one file for the whole set).
    suffix: str
    #: One annotation file per image (det-ark, det-voc), or one for all of them (seg-coco, seg-mask).
    per_image: bool


#: canonical name -> format, in the platform's order.
ANNOTATION_FORMATS: Mapping[str, AnnotationFormat] = {
    fmt.name: fmt for fmt in (
        AnnotationFormat("det-ark", "ark:raw", ("ark", "det-ark"), ".txt", True),
        AnnotationFormat("det-voc", "voc:raw", ("voc", "det-voc"), ".xml", True),
        AnnotationFormat("seg-coco", "seg-coco:raw", ("seg-coco", "coco"), ".json", False),
        AnnotationFormat("seg-mask", "seg-mask:raw", ("seg-mask",), "", False),
    )
}

_BY_ALIAS = {alias: fmt.name for fmt in ANNOTATION_FORMATS.values() for alias in fmt.aliases}

#: The formats whose files carry masks: what a segmentation task (object_type 3 or 4) can read. The platform
#: exports seg-mask with no annotation at all (segmentation.md section 1).
MASK_FORMATS = ("seg-coco",)


def canonical_format(annotation: str) -> str:
    """The canonical name of ``export_format``'s annotation part (``ark`` -> ``det-ark``); unknown names are
    returned unchanged (the platform then exports no annotations: protocol.md section 2)."""
    return _BY_ALIAS.get(annotation, annotation)


def export_format_of(name: str) -> str:
    """The ``export_format`` that asks the platform for format ``name`` (``det-ark`` -> ``ark:raw``)."""
    fmt = ANNOTATION_FORMATS.get(name)
    return fmt.export_format if fmt else f"{name}:raw"


# --- boxes and errors ----------------------------------------------------------------------------------------


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


class BadBox(ValueError):
    """A box line or object that cannot be used. ``reason`` is the skip reason readers count it under
    (``malformed line``, ``non-numeric field``, ``inverted box``, ...); the message is the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def recorded_size(width: Any, height: Any) -> tuple[int, int] | None:
    """``(width, height)`` as an annotation records it (VOC ``<size>``, COCO ``width``/``height``), or None
    when it records none or nonsense (missing, not a number, not positive)."""
    try:
        size = int(float(width)), int(float(height))
    except (TypeError, ValueError, OverflowError):
        return None
    return size if size[0] > 0 and size[1] > 0 else None


# --- det-ark --------------------------------------------------------------------------------------------------


def _whole_number(text: str) -> int:
    """'1.0' -> 1; '1.5', 'nan' and 'inf' are errors (int(float(...)) would truncate or overflow)."""
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def parse_ark_line(line: str, num_classes: int) -> Box:
    """``class_idx, xmin, ymin, xmax, ymax[, quality[, angle]]`` (comma or comma+space, inclusive corners)
    as a pixel-edge :class:`Box` (``x2 = xmax + 1``).

    Raises :class:`BadBox` (``malformed line``, ``non-numeric field``: a field that is not a finite number,
    quality and angle included, ``class id outside class_names``, ``inverted box``). This is the hot loop of
    reading a large training set, hence the inlined checks.
    """
    fields = line.split(",")
    count = len(fields)
    if count < 5 or count > 7:
        raise BadBox("malformed line", f"{count} fields in {line.strip()!r}")
    try:
        class_text = fields[0]
        class_id = int(class_text) if class_text.strip().isdigit() else _whole_number(class_text)
        xmin, ymin, xmax, ymax = float(fields[1]), float(fields[2]), float(fields[3]), float(fields[4])
        quality = float(fields[5]) if count > 5 else -1.0
        angle = float(fields[6]) if count > 6 else 0.0
        if not math.isfinite(xmin + ymin + xmax + ymax + quality + angle):  # 'nan' and 'inf' parse as floats
            raise ValueError(line)
    except ValueError:
        raise BadBox("non-numeric field", repr(line.strip())) from None
    if class_id < 0 or class_id >= num_classes:
        raise BadBox("class id outside class_names", f"class id {class_id} with {num_classes} classes")
    if xmax < xmin or ymax < ymin:
        raise BadBox("inverted box", f"({xmin}, {ymin}, {xmax}, {ymax})")
    return Box(class_id, xmin, ymin, xmax + 1.0, ymax + 1.0, quality, angle)


def ark_text(boxes: Iterable[tuple[int, int, int, int, int]]) -> str:
    """det-ark as the platform exports it, from ``(class_idx, xmin, ymin, xmax, ymax)`` inclusive integer
    corners: ``class_idx, xmin, ymin, xmax, ymax, quality, angle`` with quality -1.0 (unknown)."""
    return "".join(f"{c}, {x1}, {y1}, {x2}, {y2}, -1.0, 0\n" for c, x1, y1, x2, y2 in boxes)


# --- det-voc --------------------------------------------------------------------------------------------------

_XML_DECLARATION = re.compile(rb"\s*<\?xml\b[^>]*?\?>")
_XML_ENCODING = re.compile(rb"""\bencoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
#: Encodings expat decodes by itself; any other declared encoding is decoded here first.
_EXPAT_ENCODINGS = frozenset({"utf-8", "utf-16", "utf-16-le", "utf-16-be", "ascii", "latin-1", "iso8859-1"})
#: Labels decoded as a superset, as browsers do (WHATWG Encoding): files declared GB2312 or GBK routinely hold
#: characters only GBK / GB18030 have.
_DECODE_AS = {"gb2312": "gb18030", "gbk": "gb18030"}


def parse_xml(content: bytes) -> ElementTree.Element:
    """An XML document in the encoding its declaration names.

    Python's expat parser only takes UTF-8, UTF-16 and single-byte encodings, so annotation files saved by
    Windows labelling tools as ``<?xml version="1.0" encoding="gbk"?>`` (also GB2312, Big5, Shift-JIS)
    fail in it with ``multi-byte encodings are not supported``: those are decoded here and parsed as text
    (GB2312 and GBK as GB18030, their superset). A UTF-8 byte-order mark wins over the declaration, as the XML
    specification says. Raises ``ElementTree.ParseError`` for broken XML and ``ValueError``
    (``UnicodeDecodeError``, or an unknown encoding name) for text that cannot be decoded as declared.
    """
    encoding = None
    if content.startswith(codecs.BOM_UTF8):
        content, encoding = content[len(codecs.BOM_UTF8):], "utf-8"
    declaration = _XML_DECLARATION.match(content)
    named = _XML_ENCODING.search(declaration.group()) if declaration else None
    if named and encoding is None:
        try:
            encoding = codecs.lookup(named.group(1).decode("ascii")).name
        except LookupError:
            raise ValueError(f"unknown XML encoding {named.group(1).decode('ascii')!r}") from None
    if declaration and encoding is not None and (named or encoding not in _EXPAT_ENCODINGS):
        return ElementTree.fromstring(content[declaration.end():].decode(_DECODE_AS.get(encoding, encoding)))
    return ElementTree.fromstring(content)


class VocObject(NamedTuple):
    """One ``<object>``: its ``<name>`` stripped and lower-cased (the platform lower-cases class names), its
    INCLUSIVE ``<bndbox>`` corners, ``<box_quality>`` (-1: unknown) and ``rotate_angle``."""

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    quality: float = -1.0
    angle: float = 0.0


def _voc_float(node: ElementTree.Element | None, tag: str, default: float | None = None) -> float:
    child = None if node is None else node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is None:
            raise BadBox("malformed object", f"missing <{tag}>")
        return default
    try:
        value = float(child.text)
    except ValueError:
        raise BadBox("non-numeric field", f"<{tag}>{child.text}</{tag}>") from None
    if not math.isfinite(value):
        raise BadBox("non-numeric field", f"<{tag}>{child.text}</{tag}>")
    return value


def parse_voc_object(obj: ElementTree.Element) -> VocObject:
    """An ``<object>`` element; raises :class:`BadBox` (``malformed object`` for a missing corner,
    ``non-numeric field`` for one that is not a finite number). The name may be empty: the caller decides."""
    bndbox = obj.find("bndbox")
    xmin, ymin, xmax, ymax = (_voc_float(bndbox, tag) for tag in ("xmin", "ymin", "xmax", "ymax"))
    quality = _voc_float(obj, "box_quality", -1.0)
    angle = _voc_float(bndbox, "rotate_angle", _voc_float(obj, "rotate_angle", 0.0))
    return VocObject((obj.findtext("name") or "").strip().lower(), xmin, ymin, xmax, ymax, quality, angle)


def voc_size(root: ElementTree.Element) -> tuple[int, int] | None:
    """The ``<size>`` a VOC document records, if it records a usable one (:func:`recorded_size`)."""
    return recorded_size(root.findtext("size/width"), root.findtext("size/height"))


def voc_text(filename: str, size: tuple[int, int] | None, boxes: Sequence[tuple[int, int, int, int, int]],
             class_names: Sequence[str]) -> str:
    """det-voc as the platform writes it, from ``(class_idx, xmin, ymin, xmax, ymax)`` inclusive integer corners.

    ``<filename>`` is ``filename`` (the platform writes the asset's container path), ``<size>`` the image's
    ``(width, height)`` when known, names lower case, ``rotate_angle`` 0 and ``box_quality`` -1. An image
    without boxes gets an empty file, as the platform writes it.
    """
    if not boxes:
        return ""
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "filename").text = filename
    if size is not None:
        size_node = ElementTree.SubElement(root, "size")
        for tag, value in (("width", size[0]), ("height", size[1]), ("depth", 3)):
            ElementTree.SubElement(size_node, tag).text = str(value)
    for c, x1, y1, x2, y2 in boxes:
        obj = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(obj, "name").text = class_names[c].lower()
        ElementTree.SubElement(obj, "difficult").text = "0"
        bndbox = ElementTree.SubElement(obj, "bndbox")
        for tag, coordinate in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2), ("rotate_angle", 0.0)):
            ElementTree.SubElement(bndbox, tag).text = str(coordinate)
        ElementTree.SubElement(obj, "box_quality").text = "-1.0"
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode") + "\n"


# --- COCO json ------------------------------------------------------------------------------------------------


class CocoImage(NamedTuple):
    """An ``images`` entry: its id, ``file_name`` as written, and the size it records (None: none usable)."""

    id: Any
    file_name: str
    size: tuple[int, int] | None


class CocoBox(NamedTuple):
    """An ``annotations`` entry's box: ``bbox [x, y, w, h]`` as corners with an EXCLUSIVE extent
    (``x2 = x + w``)."""

    image_id: Any
    category_id: Any
    x1: float
    y1: float
    x2: float
    y2: float


@dataclasses.dataclass
class CocoDocument:
    """A COCO json file: images in file order, ``categories`` (id -> name, stripped) in id order, and the raw
    ``annotations`` entries (read each with :func:`coco_box`: one bad entry must not lose the others)."""

    path: str
    images: list[CocoImage]
    categories: dict[Any, str]
    annotations: list[Any]


def read_coco(path: str) -> CocoDocument:
    """Read a COCO json file (a UTF-8 byte-order mark allowed), a regular file of at most
    :data:`~.files.MAX_TEXT_BYTES`.

    Raises :class:`~ymir_runner.errors.DatasetError` naming the file when it cannot be read (not a regular file,
    too large...), is not json, or its ``images`` / ``categories`` lists are not what COCO says (an entry
    without ``id``, a category without ``name``).
    """
    try:
        coco = json.loads(read_text(path))
        categories = sorted(coco.get("categories") or [], key=lambda entry: entry["id"])
        images = [CocoImage(entry["id"], str(entry.get("file_name", "")),
                            recorded_size(entry.get("width"), entry.get("height")))
                  for entry in coco.get("images") or []]
        return CocoDocument(path, images, {entry["id"]: str(entry.get("name", "")).strip() for entry in categories},
                            list(coco.get("annotations") or []))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise DatasetError(f"cannot read COCO file {path}: {error}") from error


class Segment(NamedTuple):
    """One object's mask as a seg-coco file holds it, NOT decoded (reading a 100,000-object file rasterises
    nothing): ``segmentation`` is the json value (an RLE dict or a list of polygons; :mod:`.masks` checks and
    decodes it), ``iscrowd`` 0 or 1 as the file says, ``annotation_id`` the entry's ``id`` (skip messages name it).
    ``class_id`` indexes ``class_names``."""

    class_id: int
    segmentation: Any
    iscrowd: int
    annotation_id: Any


def coco_iscrowd(entry: Any) -> int:
    """An ``annotations`` entry's ``iscrowd`` as 0 or 1 (absent: 0); ``ValueError`` for anything else."""
    value = entry.get("iscrowd", 0)
    if value in (0, 1) and not isinstance(value, str):
        return int(value)
    raise ValueError(f"iscrowd {value!r} is not 0 or 1")


def coco_box(entry: Any) -> CocoBox:
    """An ``annotations`` entry's box; raises ``KeyError``, ``TypeError`` or ``ValueError`` for an entry
    without ``image_id``, ``category_id`` or four numbers in ``bbox``."""
    x, y, w, h = map(float, entry["bbox"])
    return CocoBox(entry["image_id"], entry["category_id"], x, y, x + w, y + h)


# --- one image's annotation file ---------------------------------------------------------------------------------

#: The formats written one file per image, with boxes: what ``ymir-runner sandbox`` and the testing kit write.
WRITABLE_FORMATS = ("det-ark", "det-voc")


def annotation_suffix(name: str) -> str:
    """The suffix of one image's annotation file in format ``name`` (``.txt`` for det-ark, ``.xml`` for det-voc)."""
    return ANNOTATION_FORMATS[name].suffix


def annotation_text(name: str, boxes: Sequence[tuple[int, int, int, int, int]], *, filename: str = "",
                    size: tuple[int, int] | None = None, class_names: Sequence[str] = ()) -> str:
    """One image's annotation file in format ``name`` (:data:`WRITABLE_FORMATS`) from ``(class_idx, xmin, ymin,
    xmax, ymax)`` INCLUSIVE integer corners; ``filename``, ``size`` and ``class_names`` are det-voc's
    (:func:`voc_text`). Raises ``ValueError`` for another format."""
    if name == "det-ark":
        return ark_text(boxes)
    if name == "det-voc":
        return voc_text(filename, size, boxes, class_names)
    raise ValueError(f"annotation files are written in {' or '.join(WRITABLE_FORMATS)}, not {name!r}")

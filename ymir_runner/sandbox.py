"""``ymir-runner sandbox``: a YMIR work tree built from a user's own images, exactly as the platform exports it.

``ymir-runner run --env <work>/in/env.yaml`` then runs an executor on it without a docker engine or a YMIR
server, so a plugin can be tried on real data before the image is ever registered. Everything the
platform would write is written the way protocol.md section 2 describes it:

- assets at ``in/assets/<last 2 hex>/<sha1 of the content>.<jpg|png|bmp|unknown>``, one per content;
- one annotation file per training image (det-ark ``.txt`` or det-voc ``.xml``, empty without boxes),
  inclusive integer corners clipped to the image;
- images in their STORED pixels, as the platform measures them and ``ymir-runner run`` decodes them (no EXIF
  rotation): boxes labelled on EXIF-rotated photos are warned about, and ``--exif-transpose`` writes the
  rotated pixels into the asset instead;
- ``train-index.tsv`` / ``val-index.tsv`` (training) or ``candidate-index.tsv`` (mining, inference);
- ``config.yaml``: the installed executors' template plus the keys the platform fills in;
- ``models/<stage>/<files>`` + ``models/ymir-info.yaml`` from a previous training's ``/out/models``;
- ``env.yaml``, written last: a tree is only runnable once it is complete.

The source readers (VOC, YOLO, COCO, plain images) are small and separate; each returns the same neutral
:class:`SourceData` (image paths with named boxes in inclusive pixel corners), and the rest is shared.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shlex
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Collection, Iterable, Mapping, NamedTuple, Sequence

import yaml

from . import imgman
from .errors import ConfigError, DatasetError, ModelError
from .protocol.annotations import WRITABLE_FORMATS, annotation_suffix, annotation_text, export_format_of, parse_xml
from .protocol.atomic import atomic_write_text
from .protocol.config import PLATFORM_TYPED_KEYS, TASK_DATA_KEYS, ExportFormat
from .protocol.dataset import MAX_WARNINGS_PER_REASON, SkipLog
from .protocol.env import TaskKind, env_document, reroot
from .protocol.images import ImageProblem, open_image

log = logging.getLogger("ymir_runner.sandbox")

PROTOCOL_VERSION = "1.1.0"
MANIFEST_FILE = "/img-man/" + imgman.MANIFEST_FILE
DETECTION = 2

#: Source files taken as images (anything PIL may decode); the asset extension follows ASSET_EXTENSIONS.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
#: The platform names assets ``.jpg``, ``.png``, ``.bmp`` or ``.unknown`` (protocol.md section 2).
ASSET_EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".bmp": "bmp"}
SOURCE_FORMATS = ("auto", "voc", "yolo", "coco", "images")
#: The annotation formats the sandbox writes, with the ``export_format`` that asks the platform for them.
ANNOTATION_FORMATS = {name: export_format_of(name) for name in WRITABLE_FORMATS}
YOLO_NAME_FILES = ("classes.txt", "obj.names", "data.yaml", "dataset.yaml")
#: result.yaml of protocol < 1.0.0 has no stages; YMIR files its model under this stage name.
LEGACY_STAGE = "default_best_stage"
#: The EXIF Orientation tag, and the orientations that turn an image by a quarter (width and height swap).
EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = frozenset({5, 6, 7, 8})
#: Warning reasons that ``--exif-transpose`` answers (the summary then names the option).
EXIF_HINT_REASONS = frozenset({"labelled on EXIF-rotated pixels", "boxes may be on EXIF-rotated pixels"})


# --- the neutral form every reader returns ------------------------------------------------------------------

class SourceBox(NamedTuple):
    """A box as the source names it: class name and INCLUSIVE corners in pixels (may still be fractional)."""

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float


class SourceImage(NamedTuple):
    path: str
    boxes: tuple[SourceBox, ...] = ()
    #: ``(width, height)`` as the annotation records it (VOC ``<size>``, COCO ``width``/``height``), if it does.
    size: tuple[int, int] | None = None


@dataclasses.dataclass
class SourceData:
    """What a reader found: images in a stable order, and the class names in the source's own order."""

    images: list[SourceImage]
    class_names: list[str]
    #: YOLO labels without a names file: class names are the label indexes ("0", "1", ...).
    numeric_classes: bool = False


class ImageHeader(NamedTuple):
    """What PIL reads from an image's header: the STORED size and the EXIF orientation (1 when there is none)."""

    width: int
    height: int
    orientation: int = 1

    @property
    def stored(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def rotated(self) -> tuple[int, int]:
        """The size once the EXIF orientation is applied: orientations 5 to 8 swap width and height."""
        return (self.height, self.width) if self.orientation in QUARTER_TURNS else self.stored


class ImageSizes:
    """Image headers read with PIL, cached: YOLO conversion, clipping and the EXIF checks all need them.

    ``exif_transpose``: the sandbox stores the EXIF-rotated pixels of every image with an orientation, so YOLO's
    normalised boxes are scaled by the rotated size.
    """

    def __init__(self, exif_transpose: bool = False) -> None:
        self.exif_transpose = exif_transpose
        self._headers: dict[str, ImageHeader | None] = {}

    def header(self, path: str) -> ImageHeader | None:
        """The image's header, or None when PIL cannot open the file."""
        if path not in self._headers:
            self._headers[path] = _read_header(path)
        return self._headers[path]

    def __call__(self, path: str) -> tuple[int, int] | None:
        """``(width, height)`` of the pixels the asset will hold, or None when PIL cannot open the file."""
        header = self.header(path)
        if header is None:
            return None
        return header.rotated if self.exif_transpose else header.stored


def _read_header(path: str) -> ImageHeader | None:
    """The header by the rules ``ymir-runner run`` reads images with (no PIL pixel limit, ours instead)."""
    try:
        with open_image(path) as image:
            width, height = image.size
            orientation = _orientation(image)
    except ImageProblem:
        return None
    return ImageHeader(width, height, orientation)


def _orientation(image: Any) -> int:
    """The EXIF orientation (1 to 8); 1 when absent, invalid or in unreadable EXIF data."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - broken EXIF blocks raise anything; the pixels are still usable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


@dataclasses.dataclass
class SourceTree:
    """The files of SOURCE, listed once (sorted, hidden files and the work folder left out)."""

    root: str
    files: list[str]
    sizes: ImageSizes
    skips: SkipLog
    #: SOURCE itself when it is a file (a COCO json).
    given_file: str | None = None

    @property
    def images(self) -> list[str]:
        return [path for path in self.files if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS]

    def with_suffix(self, suffix: str) -> list[str]:
        return [path for path in self.files if path.lower().endswith(suffix)]

    def by_basename(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = collections.defaultdict(list)
        for path in self.images:
            found[os.path.basename(path)].append(path)
        return found


def scan_source(source: str, *, exclude: str, skips: SkipLog, exif_transpose: bool = False) -> SourceTree:
    """List SOURCE (a folder, or a COCO json whose folder is listed) without descending into ``exclude``."""
    source = os.path.abspath(source)
    if not os.path.exists(source):
        raise ConfigError(f"SOURCE {source} does not exist")
    given = source if os.path.isfile(source) else None
    root = os.path.dirname(source) if given else source
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(name for name in dirs if not name.startswith(".")
                         and os.path.abspath(os.path.join(folder, name)) != exclude)
        files += [os.path.join(folder, name) for name in sorted(names) if not name.startswith(".")]
    return SourceTree(root, files, ImageSizes(exif_transpose), skips, given)


def _pixel(value: float) -> int:
    """Round half up (Python's round() sends 0.5 and 2.5 to the even neighbour, shifting boxes unevenly)."""
    return math.floor(value + 0.5)


def _recorded_size(width: Any, height: Any) -> tuple[int, int] | None:
    """The image size an annotation records; None when absent or not positive (some tools write 0)."""
    try:
        size = int(float(width)), int(float(height))
    except (TypeError, ValueError, OverflowError):
        return None
    return size if min(size) > 0 else None


# --- readers ---------------------------------------------------------------------------------------------------

def read_images(tree: SourceTree) -> SourceData:
    """Images without annotations: what mining and inference need."""
    return SourceData([SourceImage(path) for path in tree.images], [])


def read_voc(tree: SourceTree) -> SourceData:
    """Pascal VOC: one ``.xml`` per image, found beside it, by ``<filename>``, or by stem anywhere in SOURCE.

    VOC corners are already inclusive pixel indexes; they are kept as they are. Each file is decoded in the
    encoding its declaration names (labelling tools on Chinese Windows write ``encoding="gbk"``).
    """
    images = tree.images
    by_stem: dict[str, list[str]] = collections.defaultdict(list)
    for path in images:
        by_stem[os.path.splitext(os.path.basename(path))[0]].append(path)
    by_name = tree.by_basename()
    boxes: dict[str, list[SourceBox]] = collections.defaultdict(list)
    sizes: dict[str, tuple[int, int] | None] = {}
    names: set[str] = set()
    for xml_file in tree.with_suffix(".xml"):
        root = _read_xml(xml_file, tree.skips)
        if root is None:
            continue
        if root.tag != "annotation":
            continue  # some other XML file next to the data
        image = _voc_image(xml_file, root, by_stem, by_name)
        if image is None:
            tree.skips.skip("annotation without image", xml_file)
            continue
        sizes[image] = _recorded_size(root.findtext("size/width"), root.findtext("size/height"))
        for number, obj in enumerate(root.iter("object"), 1):
            box = _voc_box(obj)
            if box is None:
                tree.skips.skip("malformed box", f"{xml_file}:object {number}")
                continue
            names.add(box.class_name)
            boxes[image].append(box)
    return SourceData([SourceImage(path, tuple(boxes.get(path, ())), sizes.get(path)) for path in images],
                      sorted(names))


def _read_xml(path: str, skips: SkipLog) -> ElementTree.Element | None:
    """The parsed file, or None (skipped and counted) when it cannot be read, decoded or parsed."""
    try:
        with open(path, "rb") as stream:
            return parse_xml(stream.read())
    except (OSError, ValueError, ElementTree.ParseError) as error:  # ValueError: not in its declared encoding
        skips.skip("unreadable annotation", path, str(error))
        return None


def _voc_image(xml_file: str, root: ElementTree.Element, by_stem: Mapping[str, list[str]],
               by_name: Mapping[str, list[str]]) -> str | None:
    stem = os.path.splitext(os.path.basename(xml_file))[0]
    folder = os.path.dirname(xml_file)
    beside = [path for path in by_stem.get(stem, ()) if os.path.dirname(path) == folder]
    named = by_name.get(os.path.basename((root.findtext("filename") or "").strip()), [])
    for candidates in (beside, named, by_stem.get(stem, [])):
        if len(candidates) == 1:
            return candidates[0]
    return None


def _voc_box(obj: ElementTree.Element) -> SourceBox | None:
    name = (obj.findtext("name") or "").strip().lower()
    bndbox = obj.find("bndbox")
    if not name or bndbox is None:
        return None
    try:
        corners = [float(bndbox.findtext(tag) or "") for tag in ("xmin", "ymin", "xmax", "ymax")]
    except ValueError:
        return None
    return SourceBox(name, *corners) if all(math.isfinite(value) for value in corners) else None


def read_yolo(tree: SourceTree) -> SourceData:
    """YOLO: ``class cx cy w h`` normalised to the image size, in ``<stem>.txt`` beside the image or in the
    ``labels/`` folder mirroring ``images/``; names from classes.txt, obj.names or data.yaml ``names``."""
    names = _yolo_names(tree)
    labels = {path for path in tree.with_suffix(".txt") if os.path.basename(path) not in YOLO_NAME_FILES}
    items = []
    for image in tree.images:
        label = _yolo_label(image, labels)
        boxes = _yolo_boxes(label, image, names, tree) if label else ()
        items.append(SourceImage(image, boxes))
    return SourceData(items, list(names or ()), numeric_classes=names is None)


def _yolo_names(tree: SourceTree) -> list[str] | None:
    found = [path for path in tree.files if os.path.basename(path) in YOLO_NAME_FILES]
    if not found:
        return None
    # the shallowest names file wins; at one depth, the order of YOLO_NAME_FILES
    path = min(found, key=lambda p: (p.count(os.sep), YOLO_NAME_FILES.index(os.path.basename(p))))
    try:
        with open(path, encoding="utf-8-sig") as stream:  # -sig: a Windows editor's byte-order mark
            text = stream.read()
        if not path.endswith(".yaml"):
            return [line.strip() for line in text.splitlines() if line.strip()]
        names = (yaml.safe_load(text) or {}).get("names")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as error:
        raise ConfigError(f"cannot read YOLO class names from {path}: {error}") from error
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
    try:
        with open(label, encoding="utf-8-sig") as stream:
            lines = stream.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        tree.skips.skip("unreadable annotation", label, str(error))
        return ()
    boxes = []
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
        except ValueError:
            tree.skips.skip("malformed box", where, repr(line.strip()))
            continue
        if index < 0:
            tree.skips.skip("malformed box", where, repr(line.strip()))
            continue
        if names is not None and index >= len(names):
            tree.skips.skip("class index outside the names file", where, f"class {index}, {len(names)} names")
            continue
        size = tree.sizes(image)
        if size is None:
            tree.skips.skip("image size unknown (PIL cannot open it)", where)
            continue
        width, height = size
        name = names[index] if names is not None else str(index)
        boxes.append(SourceBox(name, (cx - w / 2) * width, (cy - h / 2) * height,
                               (cx + w / 2) * width - 1, (cy + h / 2) * height - 1))
    return tuple(boxes)


def read_coco(tree: SourceTree) -> SourceData:
    """COCO: ``bbox`` is ``[x, y, w, h]`` with an exclusive extent, so the inclusive corner is x + w - 1.

    Class names are the categories in id order; the images are those the json lists (found relative to
    the json, to SOURCE, in an ``images/`` folder beside either, or by file name anywhere in SOURCE).
    """
    path = _coco_file(tree)
    try:
        with open(path, encoding="utf-8-sig") as stream:
            coco = json.load(stream)
        categories = sorted(coco.get("categories") or [], key=lambda entry: entry["id"])
        names = {entry["id"]: str(entry["name"]).strip() for entry in categories}
        entries = list(coco.get("images") or [])
        annotations = list(coco.get("annotations") or [])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DatasetError(f"cannot read COCO file {path}: {error}") from error
    by_id: dict[Any, list[SourceBox]] = collections.defaultdict(list)
    for number, entry in enumerate(annotations):
        where = f"{path}:annotations[{number}]"
        try:
            name = names[entry["category_id"]]
            x, y, w, h = (float(value) for value in entry["bbox"])
            by_id[entry["image_id"]].append(SourceBox(name, x, y, x + w - 1, y + h - 1))
        except (KeyError, TypeError, ValueError) as error:
            tree.skips.skip("malformed box", where, repr(error))
    items, seen = [], set()
    by_name = tree.by_basename()
    for entry in entries:
        image = _coco_image(path, tree.root, str(entry.get("file_name", "")), by_name)
        if image is None:
            tree.skips.skip("missing image", path, str(entry.get("file_name")))
        elif image not in seen:
            seen.add(image)
            size = _recorded_size(entry.get("width"), entry.get("height"))
            items.append(SourceImage(image, tuple(by_id.get(entry.get("id"), ())), size))
    return SourceData(items, list(dict.fromkeys(names.values())))  # two ids may share a name


def _coco_file(tree: SourceTree) -> str:
    if tree.given_file:
        return tree.given_file
    found = [path for path in tree.with_suffix(".json") if _looks_like_coco(path)]
    if not found:
        raise ConfigError(f"no COCO .json file in {tree.root}")
    if len(found) > 1:
        raise ConfigError(f"several COCO files in {tree.root} ({', '.join(found)}): pass one of them as SOURCE")
    return found[0]


def _looks_like_coco(path: str) -> bool:
    """Peeks at the start only: a COCO file can be hundreds of megabytes."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as stream:
            head = stream.read(1 << 20)
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


def _coco_image(json_file: str, root: str, file_name: str, by_name: Mapping[str, list[str]]) -> str | None:
    if not file_name:
        return None
    here, parent = os.path.dirname(json_file), os.path.dirname(os.path.dirname(json_file))
    for folder in (here, root, os.path.join(here, "images"), os.path.join(root, "images"), parent,
                   os.path.join(parent, "images")):
        path = os.path.join(folder, file_name)
        if os.path.isfile(path):
            return os.path.abspath(path)
    candidates = by_name.get(os.path.basename(file_name), [])
    return candidates[0] if len(candidates) == 1 else None


READERS: dict[str, Callable[[SourceTree], SourceData]] = {
    "voc": read_voc, "yolo": read_yolo, "coco": read_coco, "images": read_images,
}


def detect_format(tree: SourceTree) -> str:
    """coco (a json given or found) > voc (xml files) > yolo (label txt or a names file) > plain images."""
    if tree.given_file:
        if tree.given_file.lower().endswith(".json"):
            return "coco"
        raise ConfigError(f"SOURCE {tree.given_file} must be a folder or a COCO .json file")
    if any(_looks_like_coco(path) for path in tree.with_suffix(".json")):
        return "coco"
    if tree.with_suffix(".xml"):
        return "voc"
    if any(os.path.basename(path) in YOLO_NAME_FILES for path in tree.files):
        return "yolo"
    if any(_looks_like_yolo(path) for path in tree.with_suffix(".txt")):
        return "yolo"
    return "images"


def _looks_like_yolo(path: str) -> bool:
    try:
        with open(path, encoding="utf-8-sig") as stream:
            line = next((line for line in stream if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        return len(line.split()) in (5, 6) and all(math.isfinite(float(field)) for field in line.split())
    except ValueError:
        return False


# --- options and the result ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SandboxOptions:
    """Everything ``ymir-runner sandbox`` can be asked; the CLI flags map one to one."""

    tasks: Sequence[str] = ("training",)
    format: str = "auto"
    #: Class names in class-index order; None: from the data.
    classes: Sequence[str] | None = None
    #: Drop boxes of classes not in ``classes`` (as the platform does) instead of refusing.
    ignore_other_classes: bool = False
    val_ratio: float = 0.2
    seed: int = 0
    #: det-ark or det-voc; None: the template's export_format (det-ark when it names neither).
    annotation_format: str | None = None
    #: A previous training's /out/models (mining, inference).
    model: str | None = None
    #: A previous training's /out/models used as the pretrained model (training).
    pretrained: str | None = None
    #: Copy every stage of the model instead of only the best one.
    all_stages: bool = False
    web_ui_strings: bool = False
    #: config.yaml values replacing the template's (already typed).
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    container_paths: bool = False
    plugin: str | None = None
    force: bool = False
    #: Store the EXIF-rotated pixels of images with an EXIF orientation (their boxes were drawn on those).
    exif_transpose: bool = False


@dataclasses.dataclass
class SandboxSummary:
    """What was built; ``render()`` is what the command prints."""

    work_dir: str
    env_file: str
    tasks: tuple[str, ...]
    source_format: str
    annotation_format: str | None
    class_names: tuple[str, ...]
    images: int
    train: int
    val: int
    candidates: int
    duplicates: int
    unreadable_images: int
    boxes_per_class: dict[str, int]
    skipped: dict[str, int]
    model_files: tuple[str, ...]
    container_paths: bool
    #: Boxes and images used after a fix (a clipped box, pixels turned by --exif-transpose), by reason.
    repaired: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Images used as they are but warned about (boxes that may not match the stored pixels), by reason.
    warned: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def boxes(self) -> int:
        return sum(self.boxes_per_class.values())

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def next_command(self) -> str:
        if self.container_paths:
            return f"ymir-runner run --env {shlex.quote(self.env_file)} --root {shlex.quote(self.work_dir)}"
        return f"ymir-runner run --env {shlex.quote(self.env_file)}"

    def render(self) -> str:
        layout = "container paths /in, /out" if self.container_paths else "host paths"
        splits = (f"train {self.train}, val {self.val}" if "training" in self.tasks
                  else f"candidates {self.candidates}")
        lines = [f"sandbox {self.work_dir}: {' + '.join(self.tasks)} from {self.source_format} data ({layout})",
                 f"  images: {self.images} ({splits})"
                 + (f", {self.duplicates} duplicate(s) stored once" if self.duplicates else "")
                 + (f", {self.unreadable_images} PIL cannot open (copied anyway)" if self.unreadable_images else "")]
        if self.annotation_format:
            per_class = ", ".join(f"{name} {count}" for name, count in self.boxes_per_class.items())
            lines.append(f"  boxes: {self.boxes} as {self.annotation_format} ({per_class})")
        lines.append(f"  classes: {', '.join(self.class_names) or '(none)'}")
        for label, counts in (("skipped", self.skipped), ("repaired", self.repaired), ("warnings", self.warned)):
            if counts:
                lines.append(f"  {label}: {_counts_line(counts)}")
        if EXIF_HINT_REASONS.intersection(self.warned):
            lines.append("  (--exif-transpose stores the EXIF-rotated pixels, so that such boxes match them)")
        if self.model_files:
            lines.append(f"  model: {', '.join(self.model_files)}")
        lines.append(f"next: {self.next_command}")
        return "\n".join(lines)


def _counts_line(counts: Mapping[str, int]) -> str:
    """``3 (2 degenerate box, 1 box outside image)``: the total, then each reason."""
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
    return f"{sum(counts.values())} ({reasons})"


# --- the work tree -------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class WorkTree:
    """``<root>/in`` and ``<root>/out``; files name their paths as container or absolute host paths."""

    root: str
    container_paths: bool

    def local(self, container_path: str) -> str:
        return reroot(container_path, self.root)

    def shown(self, container_path: str) -> str:
        """The path written into env.yaml, config.yaml and the index files."""
        return container_path if self.container_paths or not container_path else self.local(container_path)


def _check_work_dir(work: WorkTree, protected: Iterable[str], force: bool) -> None:
    in_dir = work.local("/in")
    if os.path.exists(work.root) and not os.path.isdir(work.root):
        raise ConfigError(f"--out {work.root} is a file, not a folder")
    if os.path.isdir(in_dir) and os.listdir(in_dir):
        if not force:
            raise ConfigError(f"{in_dir} is not empty: pass --force to replace it")
        for path in protected:  # --force deletes in/: never with the user's data inside
            if path and (path == in_dir or path.startswith(in_dir + os.sep)):
                raise ConfigError(f"{path} lies inside {in_dir}, which --force would delete")


def _prepare_work_dir(work: WorkTree) -> None:
    if os.path.isdir(work.local("/in")):  # non-empty only with --force (checked before anything was read)
        shutil.rmtree(work.local("/in"))
    for folder in ("/in/assets", "/in/annotations", "/in/models", "/out/tensorboard"):
        os.makedirs(work.local(folder), exist_ok=True)


# --- assets and annotations ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Asset:
    """One stored image: named by the sha1 of its content, as the platform names assets."""

    sha1: str
    source: str
    source_boxes: tuple[SourceBox, ...]
    #: The size of the pixels stored (rotated when ``--exif-transpose`` turned them); None: PIL cannot open it.
    size: tuple[int, int] | None
    #: ``(class index, xmin, ymin, xmax, ymax)``, inclusive integer corners clipped to the image.
    boxes: list[tuple[int, int, int, int, int]] = dataclasses.field(default_factory=list)
    #: The file whose bytes are stored: ``source``, or its EXIF-transposed copy.
    content: str = ""

    @property
    def extension(self) -> str:
        return ASSET_EXTENSIONS.get(os.path.splitext(self.source)[1].lower(), "unknown")

    @property
    def path(self) -> str:
        """The container path, /in/assets/<last 2 hex>/<sha1>.<ext>."""
        return f"/in/assets/{self.sha1[-2:]}/{self.sha1}.{self.extension}"

    def annotation_path(self, annotation_format: str) -> str:
        return f"/in/annotations/{self.sha1}{annotation_suffix(annotation_format)}"


def file_sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def collect_assets(images: Sequence[SourceImage], sizes: ImageSizes, *, transpose: Collection[str] = (),
                   scratch: str = "", skips: SkipLog | None = None) -> tuple[list[Asset], int]:
    """One asset per distinct content (the platform stores an image once); returns (assets, duplicates).

    Images in ``transpose`` are stored with their EXIF orientation applied (copies written under ``scratch``),
    so their content, sha1 and size are those of the turned pixels.
    """
    assets: dict[str, Asset] = {}
    duplicates = 0
    for number, image in enumerate(images):
        header = sizes.header(image.path)
        turned = os.path.join(scratch, str(number))
        rotated = write_transposed(image.path, turned) if header and image.path in transpose else None
        content = turned if rotated else image.path
        try:
            digest = file_sha1(content)
        except OSError as error:
            raise DatasetError(f"cannot read image {image.path}: {error.strerror}") from error
        if digest in assets:
            duplicates += 1
            first = assets[digest]
            if set(image.boxes) != set(first.source_boxes):
                log.warning("%s has the same content as %s: only the annotations of the first are kept",
                            image.path, first.source)
            continue
        assets[digest] = Asset(digest, image.path, image.boxes, rotated or (header.stored if header else None),
                               content=content)
        if rotated and header and skips is not None:
            skips.repair("EXIF orientation applied to pixels", image.path,
                         f"orientation {header.orientation}, stored as {rotated[0]}x{rotated[1]}")
    return list(assets.values()), duplicates


def pixel_box(box: SourceBox, size: tuple[int, int] | None, skips: SkipLog,
              where: str) -> tuple[int, int, int, int] | None:
    """Inclusive integer corners clipped to the image.

    None, skipped and counted, for an inverted box (``degenerate box``) or one with no pixel inside the image
    (``box outside image``); a box that sticks out is clipped and counted as a repair (``box clipped to image``).
    """
    corners = tuple(_pixel(value) for value in box[1:])
    x1, y1, x2, y2 = corners
    if x2 < x1 or y2 < y1:
        skips.skip("degenerate box", where, repr(tuple(box[1:])))
        return None
    right, bottom = (x2, y2) if size is None else (min(x2, size[0] - 1), min(y2, size[1] - 1))
    clipped = (max(x1, 0), max(y1, 0), right, bottom)
    in_image = f"{corners} in a {size[0]}x{size[1]} image" if size else str(corners)
    if clipped[2] < clipped[0] or clipped[3] < clipped[1]:
        skips.skip("box outside image", where, in_image)
        return None
    if clipped != corners:
        skips.repair("box clipped to image", where, f"{in_image} -> {clipped}")
    return clipped


def assign_boxes(assets: Sequence[Asset], class_index: Callable[[str], int | None], skips: SkipLog) -> None:
    for asset in assets:
        for number, box in enumerate(asset.source_boxes, 1):
            where = f"{asset.source}: box {number}"
            index = class_index(box.class_name)
            if index is None:
                skips.skip("class not in --classes", where, repr(box.class_name))
                continue
            corners = pixel_box(box, asset.size, skips, where)
            if corners is not None:
                asset.boxes.append((index, *corners))


def write_assets(assets: Sequence[Asset], work: WorkTree, annotation_format: str | None,
                 class_names: Sequence[str]) -> None:
    """Copy each image; in training, write its annotation file too (empty without boxes).

    Annotation files are written plainly, not atomically: nothing reads them while the sandbox runs (env.yaml,
    written last, makes the tree usable) and an fsync per file would make large datasets slow to build.
    """
    for asset in assets:
        target = work.local(asset.path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(asset.content or asset.source, target)
        if annotation_format is None:
            continue
        text = annotation_text(annotation_format, asset.boxes, filename=asset.path, size=asset.size,
                               class_names=class_names)
        with open(work.local(asset.annotation_path(annotation_format)), "w", encoding="utf-8") as stream:
            stream.write(text)


def split(assets: Sequence[Asset], val_ratio: float, seed: int) -> tuple[list[Asset], list[Asset]]:
    """A seeded shuffle of the assets sorted by sha1: the split depends on the content, not on file names.

    At least one image on each side when there are two or more; a single image serves both sides.
    """
    ordered = sorted(assets, key=lambda asset: asset.sha1)
    random.Random(seed).shuffle(ordered)
    if len(ordered) < 2:
        return list(ordered), list(ordered)
    val_count = min(max(round(len(ordered) * val_ratio), 1 if val_ratio > 0 else 0), len(ordered) - 1)
    by_sha1 = lambda asset: asset.sha1  # noqa: E731
    return sorted(ordered[val_count:], key=by_sha1), sorted(ordered[:val_count], key=by_sha1)


class _CountOnly(SkipLog):
    """Counts without warning: a mining or inference sandbox ignores the labels the readers still parse."""

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.counts[reason] += 1

    def repair(self, reason: str, where: str, detail: str = "") -> None:
        self.repairs[reason] += 1


def _write_lines(path: str, lines: Iterable[str]) -> None:
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))


# --- EXIF orientation ------------------------------------------------------------------------------------------

class Notices:
    """Images used as they are but worth a warning, counted by reason; the first few of each reason are logged
    (the summary gives the totals), as :class:`SkipLog` does for skips."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def warn(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        if self.counts[reason] <= MAX_WARNINGS_PER_REASON:
            log.warning("%s", message)
            if self.counts[reason] == MAX_WARNINGS_PER_REASON:
                log.warning("further '%s' are only counted", reason)


def labelled_on(image: SourceImage, header: ImageHeader) -> str | None:
    """``stored`` or ``rotated``: the pixels whose size the annotation records; None when that cannot tell
    (no recorded size, a square image, an orientation that keeps the size, or a size matching neither)."""
    if image.size is None or header.stored == header.rotated:
        return None
    return {header.stored: "stored", header.rotated: "rotated"}.get(image.size)


def exif_plan(images: Sequence[SourceImage], sizes: ImageSizes, *, transpose: bool, training: bool,
              notices: Notices) -> set[str]:
    """The images whose EXIF-rotated pixels are stored (``--exif-transpose``: every image with an orientation,
    except one whose annotation records the stored size: its boxes were drawn on the stored pixels).

    The platform measures and ``ymir-runner run`` decodes the STORED pixels, so in training every image with an
    EXIF orientation and boxes that may refer to the rotated pixels is warned about.
    """
    chosen = set()
    for image in images:
        header = sizes.header(image.path)
        if header is None or header.orientation == 1:
            continue
        labelled = labelled_on(image, header) if training and image.boxes else None
        if transpose and labelled != "stored":
            chosen.add(image.path)
        elif training and image.boxes:
            _warn_orientation(image.path, header, labelled, transpose, notices)
    return chosen


def _warn_orientation(path: str, header: ImageHeader, labelled: str | None, transpose: bool,
                      notices: Notices) -> None:
    sizes = (f"EXIF orientation {header.orientation}, stored {header.width}x{header.height}, "
             f"rotated {header.rotated[0]}x{header.rotated[1]}")
    if transpose:  # the annotation records the stored size
        notices.warn("labelled on stored pixels (not transposed)",
                     f"{path}: {sizes}; its annotation records the stored size, so --exif-transpose leaves it as "
                     f"stored")
    elif labelled == "rotated":
        notices.warn("labelled on EXIF-rotated pixels",
                     f"{path}: labelled on EXIF-rotated pixels ({sizes}; the annotation records the rotated "
                     f"size), but the platform uses the stored pixels: its boxes miss their objects; pass "
                     f"--exif-transpose to store the rotated pixels")
    elif labelled is None:
        notices.warn("boxes may be on EXIF-rotated pixels",
                     f"{path}: {sizes}; its size cannot tell whether the boxes were drawn on the stored pixels "
                     f"(which the platform uses) or on the rotated ones; if on the rotated ones, pass "
                     f"--exif-transpose")


def write_transposed(source: str, target: str) -> tuple[int, int] | None:
    """Save ``source`` with its EXIF orientation applied to the pixels (the tag removed), in its own format:
    JPEG keeps its quantisation tables and chroma subsampling, so its quality stays as it was.

    Returns the new ``(width, height)``, or None (warned) when PIL cannot decode or write the image.
    """
    from PIL import ImageOps

    try:
        with open_image(source) as image:
            format_ = "JPEG" if image.format == "MPO" else image.format  # a phone's JPEG with a depth map
            options = _save_options(image, format_)
            turned = ImageOps.exif_transpose(image)
            exif = turned.getexif()
            if exif:
                options["exif"] = exif
            turned.save(target, format_, **options)
            return turned.size
    except Exception as error:  # PIL raises many types for broken data; the original is stored instead
        log.warning("cannot apply the EXIF orientation of %s (%s): stored as it is", source, error)
        return None


def _save_options(image: Any, format_: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if image.info.get("icc_profile"):
        options["icc_profile"] = image.info["icc_profile"]
    if format_ == "JPEG":
        from PIL import JpegImagePlugin

        options["qtables"] = image.quantization
        sampling = JpegImagePlugin.get_sampling(image)
        if sampling != -1:  # -1: not YCbCr (grey, CMYK); the encoder's default is right then
            options["subsampling"] = sampling
    return options


# --- classes ---------------------------------------------------------------------------------------------------

def resolve_class_names(data: SourceData, options: SandboxOptions, training: bool) -> tuple[str, ...]:
    """``class_names`` for config.yaml: --classes, else the source's own list."""
    if options.classes is not None:
        names = tuple(str(name).strip() for name in options.classes)
        if not names or not all(names):
            raise ConfigError(f"--classes {','.join(names)!r} has an empty class name")
        lowered = [name.lower() for name in names]
        if len(set(lowered)) != len(lowered):
            raise ConfigError(f"--classes {','.join(names)!r} names a class twice")
        if training and not data.numeric_classes and not options.ignore_other_classes:
            missing = [name for name in data.class_names if name.lower() not in lowered]
            if missing:
                raise ConfigError(
                    f"classes {missing} of SOURCE are not in --classes {list(names)}: add them, or pass "
                    f"--ignore-other-classes to drop their boxes (the platform does not export them)")
        return names
    if data.numeric_classes:
        raise ConfigError("YOLO labels without classes.txt, obj.names or data.yaml: pass --classes "
                          "with the names in class-index order")
    if not data.class_names:
        if training:
            raise ConfigError("SOURCE has no labelled boxes, so no class names: pass --classes")
        raise ConfigError("pass --classes with the classes the model was trained on "
                          "(the platform fills class_names from the model)")
    return tuple(data.class_names)


def class_lookup(data: SourceData, class_names: Sequence[str]) -> Callable[[str], int | None]:
    """Class name of a source box → index into ``class_names`` (None: a class the task does not use)."""
    if data.numeric_classes:  # YOLO without a names file: --classes names the label indexes
        def by_index(name: str) -> int | None:
            if int(name) >= len(class_names):
                raise ConfigError(f"YOLO labels use class index {name}, but --classes names only "
                                  f"{len(class_names)} classes: {', '.join(class_names)}")
            return int(name)
        return by_index
    indexes = {name.lower(): index for index, name in enumerate(class_names)}
    return lambda name: indexes.get(name.lower())


# --- models ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A training's /out/models folder, read through its result.yaml."""

    folder: str
    best_stage: str
    stages: Mapping[str, Mapping[str, Any]]

    def file(self, stage: str, name: str) -> str:
        """Where a listed file is: the stage folder first, then the models folder (protocol.md section 3)."""
        for path in (os.path.join(self.folder, stage, name), os.path.join(self.folder, name)):
            if os.path.isfile(path):
                return path
        raise ModelError(f"{self.folder}/result.yaml lists {name!r} in stage {stage!r}, but the file is missing")


def read_model_source(folder: str, flag: str) -> ModelSource:
    folder = os.path.abspath(folder)
    path = os.path.join(folder, "result.yaml")
    try:
        with open(path, encoding="utf-8") as stream:
            result = yaml.safe_load(stream)
    except OSError:
        raise ConfigError(f"{flag} {folder}: no result.yaml there (expected a training's /out/models folder)") from None
    except yaml.YAMLError as error:
        raise ModelError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(result, Mapping):
        raise ModelError(f"{path} must hold a mapping")
    if "model" in result:  # legacy {model: [files], map: x}: the platform files it as one stage
        stages = {LEGACY_STAGE: {"stage_name": LEGACY_STAGE, "files": list(result.get("model") or [])}}
        best = LEGACY_STAGE
    else:
        stages = dict(result.get("model_stages") or {})
        best = str(result.get("best_stage_name") or "")
    if best not in stages:
        raise ModelError(f"{path}: best_stage_name {best!r} is not one of model_stages {sorted(stages)}")
    for name, stage in stages.items():
        if not str(name).isidentifier() or not isinstance(stage, Mapping) or not stage.get("files"):
            raise ModelError(f"{path}: stage {name!r} must be an identifier with a non-empty 'files' list")
    return ModelSource(folder, best, stages)


def model_files(model: ModelSource, all_stages: bool) -> list[tuple[str, str, str]]:
    """``(stage, file name, source path)`` of the stages to copy: the best one, or all; checked up front so a
    missing file fails before the work folder is touched."""
    chosen = list(model.stages) if all_stages else [model.best_stage]
    return [(stage, os.path.basename(str(name)), model.file(stage, str(name)))
            for stage in chosen for name in model.stages[stage]["files"]]


def install_model(model: ModelSource, files: Sequence[tuple[str, str, str]], work: WorkTree) -> list[str]:
    """Copy ``files`` to in/models/<stage>/ and write ymir-info.yaml; returns the paths for config.yaml."""
    paths = []
    for stage, name, source in files:
        container = f"/in/models/{stage}/{name}"
        os.makedirs(os.path.dirname(work.local(container)), exist_ok=True)
        shutil.copyfile(source, work.local(container))
        paths.append(work.shown(container))
    stages = list(dict.fromkeys(stage for stage, _, _ in files))
    info = {"best_stage_name": model.best_stage,
            "model_stages": {stage: dict(model.stages[stage]) for stage in stages}}
    atomic_write_text(work.local("/in/models/ymir-info.yaml"), yaml.safe_dump(info, sort_keys=False))
    return paths


# --- config.yaml and env.yaml ----------------------------------------------------------------------------------

def template_config(registry: Any, kinds: Sequence[TaskKind], plugin: str | None) -> dict[str, Any]:
    """The installed executors' template of each task (mining + inference: merged, mining's value first)."""
    names = sorted(executor.spec.name for executor in registry.executors())
    if plugin and plugin not in names:
        raise ConfigError(f"--plugin {plugin!r}: no such executor; installed: {', '.join(names) or 'none'}")
    merged: dict[str, Any] = {}
    for kind in kinds:
        template = imgman.template_defaults(registry, kind, object_type=DETECTION)
        if not template:
            log.warning("no installed executor handles %s: config.yaml holds only the platform's keys", kind)
        for key, value in template.items():
            merged.setdefault(key, value)
    return merged


def web_ui_value(value: Any) -> Any:
    """A template value as the web UI sends it back: numbers stay numbers, everything else a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):  # the reader parses YAML flow text back into a list/mapping
        return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return str(value)


def build_config(template: Mapping[str, Any], kinds: Sequence[TaskKind], task_id: str,
                 class_names: Sequence[str], options: SandboxOptions) -> dict[str, Any]:
    """Template + overrides + the keys the platform writes (protocol.md section 2); no model paths yet."""
    training = TaskKind.TRAINING in kinds
    hyper = {**template, **options.overrides}
    if options.plugin:
        hyper["plugin"] = options.plugin
    if training:
        if options.annotation_format:
            hyper["export_format"] = ANNOTATION_FORMATS[options.annotation_format]
        elif not hyper.get("export_format"):
            hyper["export_format"] = ANNOTATION_FORMATS["det-ark"]
    else:
        hyper.pop("export_format", None)  # the platform writes it for training only
    hyper.setdefault("shm_size", imgman.DEFAULT_SHM_SIZE)
    config: dict[str, Any] = {"task_id": task_id, "class_names": list(class_names), "gpu_id": "",
                              "gpu_count": 0, "object_type": DETECTION}
    if not training:
        config["run_mining"] = TaskKind.MINING in kinds
        config["run_infer"] = TaskKind.INFER in kinds
    for key, value in hyper.items():
        if key in PLATFORM_TYPED_KEYS and key not in options.overrides:
            continue  # the platform's value wins over a template default (gpu_count 1 in a CUDA image)
        if options.web_ui_strings and key not in PLATFORM_TYPED_KEYS:
            value = web_ui_value(value)
            if value == "":
                continue  # the web UI drops keys whose value is ''
        config[key] = value
    return config


def annotation_format_of(config: Mapping[str, Any]) -> str:
    export = ExportFormat.parse(config.get("export_format"))
    if export.annotation not in ANNOTATION_FORMATS:
        raise ConfigError(f"export_format {export.raw!r}: the sandbox writes det-ark (ark:raw) or det-voc "
                          f"(voc:raw) annotations; choose one with --annotation-format")
    return export.annotation


def env_yaml(work: WorkTree, task_id: str, kinds: Sequence[TaskKind]) -> dict[str, Any]:
    """env.yaml in protocol.md's shape, naming this tree's paths; unused index paths are ''."""
    return env_document(task_id, kinds, protocol_version=PROTOCOL_VERSION, manifest_file=MANIFEST_FILE,
                        path=work.shown)


# --- the whole build -------------------------------------------------------------------------------------------

def task_kinds(tasks: Sequence[str]) -> tuple[TaskKind, ...]:
    """Requested tasks in run order; training runs alone, mining and inference may be combined."""
    try:
        wanted = {TaskKind(str(task)) for task in tasks}
    except ValueError:
        raise ConfigError(f"--task {list(tasks)}: each must be training, mining or infer") from None
    if not wanted:
        wanted = {TaskKind.TRAINING}
    if TaskKind.TRAINING in wanted and len(wanted) > 1:
        raise ConfigError("--task training runs alone; only mining and infer may be combined")
    return tuple(kind for kind in TaskKind if kind in wanted)


def check_options(options: SandboxOptions, kinds: Sequence[TaskKind]) -> None:
    """Refuse bad combinations before anything is read or written."""
    if options.format not in SOURCE_FORMATS:
        raise ConfigError(f"unknown --format {options.format!r}: one of {', '.join(SOURCE_FORMATS)}")
    if options.annotation_format not in (None, *ANNOTATION_FORMATS):
        raise ConfigError(f"unknown --annotation-format {options.annotation_format!r}: "
                          f"one of {', '.join(ANNOTATION_FORMATS)}")
    if not 0 <= options.val_ratio < 1:
        raise ConfigError(f"--val-ratio {options.val_ratio} must be in [0, 1)")
    computed = TASK_DATA_KEYS.intersection(options.overrides)
    if computed:
        raise ConfigError(f"--set {', '.join(sorted(computed))}: written by the sandbox; "
                          f"use --classes, --model or --pretrained")
    if TaskKind.TRAINING in kinds:
        if options.model:
            raise ConfigError("--model is for mining and infer; a training task takes --pretrained")
    else:
        if options.pretrained:
            raise ConfigError("--pretrained is for training; mining and infer take --model")
        if not options.model:
            raise ConfigError("mining and infer need --model DIR: a previous training's /out/models folder "
                              "(with result.yaml)")


def read_source(source: str, source_format: str, *, exclude: str, skips: SkipLog, training: bool,
                exif_transpose: bool = False) -> tuple[SourceTree, str, SourceData]:
    """SOURCE listed, its format named (auto-detected unless given) and read; refuses an unusable source."""
    tree = scan_source(source, exclude=exclude, skips=skips, exif_transpose=exif_transpose)
    if tree.given_file and source_format not in ("auto", "coco"):
        raise ConfigError(f"SOURCE {source} is a file: only a COCO .json may be given as a file")
    if source_format == "auto":
        source_format = detect_format(tree)
    if source_format == "images" and training:
        raise ConfigError(f"found no annotations in {source} (COCO .json, VOC .xml or YOLO .txt) and a training "
                          f"task needs them; pass --format to name the format")
    data = READERS[source_format](tree)
    if not data.images:
        raise DatasetError(f"no images found in {source} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return tree, source_format, data


def write_index_files(assets: Sequence[Asset], work: WorkTree, annotation_format: str,
                      opts: SandboxOptions) -> tuple[list[Asset], list[Asset]]:
    """train-index.tsv and val-index.tsv: ``<image>\t<annotation>`` per line; returns (train, val)."""
    train, val = split(assets, opts.val_ratio, opts.seed)
    for name, part in (("/in/train-index.tsv", train), ("/in/val-index.tsv", val)):
        _write_lines(work.local(name), (f"{work.shown(asset.path)}\t"
                                        f"{work.shown(asset.annotation_path(annotation_format))}" for asset in part))
    return train, val


def build_sandbox(source: str, out: str, *, registry: Any = None, **options: Any) -> SandboxSummary:
    """Build ``<out>/in`` (and an empty ``<out>/out``) from SOURCE; see :class:`SandboxOptions` for options."""
    opts = SandboxOptions(**options)
    kinds = task_kinds(opts.tasks)
    check_options(opts, kinds)
    training = TaskKind.TRAINING in kinds
    work = WorkTree(os.path.abspath(out), opts.container_paths)
    source = os.path.abspath(source)
    model_dir = opts.model or opts.pretrained
    _check_work_dir(work, [source, os.path.abspath(model_dir) if model_dir else ""], opts.force)
    if registry is None:
        from .plugins import build_plugin_manager

        registry = build_plugin_manager()

    # read and check everything before the work folder is touched
    skips = SkipLog(log) if training else _CountOnly()  # labels do not matter to mining and inference
    tree, source_format, data = read_source(source, opts.format, exclude=work.root, skips=skips, training=training,
                                            exif_transpose=opts.exif_transpose)
    class_names = resolve_class_names(data, opts, training)
    model = read_model_source(model_dir, "--model" if opts.model else "--pretrained") if model_dir else None
    files = model_files(model, opts.all_stages) if model else []
    task_id = "t-sandbox-" + hashlib.sha1(f"{source}|{'+'.join(kinds)}".encode()).hexdigest()[:12]
    config = build_config(template_config(registry, kinds, opts.plugin), kinds, task_id, class_names, opts)
    annotation_format = annotation_format_of(config) if training else None
    notices = Notices()
    transpose = exif_plan(data.images, tree.sizes, transpose=opts.exif_transpose, training=training, notices=notices)
    with tempfile.TemporaryDirectory(prefix="ymir-sandbox-") as scratch:  # EXIF-transposed images, until copied
        assets, duplicates = collect_assets(data.images, tree.sizes, transpose=transpose, scratch=scratch,
                                            skips=skips)
        unreadable = [asset.source for asset in assets if asset.size is None]
        for path in unreadable[:10]:
            log.warning("PIL cannot open %s: copied anyway, as the platform would", path)
        if training:
            assign_boxes(assets, class_lookup(data, class_names), skips)

        _prepare_work_dir(work)
        write_assets(assets, work, annotation_format, class_names)
    train, val = write_index_files(assets, work, annotation_format, opts) if annotation_format else ([], [])
    if not training:
        _write_lines(work.local("/in/candidate-index.tsv"),
                     (work.shown(asset.path) for asset in sorted(assets, key=lambda asset: asset.sha1)))
    model_paths = install_model(model, files, work) if model else []
    if model_paths:
        config["pretrained_model_params" if training else "model_params_path"] = model_paths
    atomic_write_text(work.local("/in/config.yaml"), yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    env_file = work.local("/in/env.yaml")
    atomic_write_text(env_file, yaml.safe_dump(env_yaml(work, str(config.get("task_id", task_id)), kinds),
                                               sort_keys=False))

    per_class = collections.Counter(box[0] for asset in assets for box in asset.boxes)
    return SandboxSummary(
        work_dir=work.root, env_file=env_file, tasks=tuple(str(kind) for kind in kinds),
        source_format=source_format, annotation_format=annotation_format, class_names=class_names,
        images=len(assets), train=len(train), val=len(val), candidates=0 if training else len(assets),
        duplicates=duplicates, unreadable_images=len(unreadable),
        boxes_per_class={name: per_class.get(index, 0) for index, name in enumerate(class_names)},
        skipped=dict(skips.counts) if training else {}, model_files=tuple(model_paths),
        container_paths=opts.container_paths, repaired=dict(skips.repairs), warned=dict(notices.counts))


# --- command line ----------------------------------------------------------------------------------------------

def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a YAML-parsed value (``epochs=3`` → 3, ``use_flip=true`` → True, ``x=`` → '')."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({' '.join(str(error).split())})") from None
    return key.strip(), parsed


def _task_list(text: str) -> list[str]:
    """``--task mining,infer``: one value, so SOURCE after the flag is never taken for a task."""
    tasks = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [task for task in tasks if task not in {str(kind) for kind in TaskKind}]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(f"{text!r}: tasks are training, mining and infer")
    return tasks


def _log_to_stderr() -> None:
    if not any(getattr(handler, "_sandbox", False) for handler in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        handler._sandbox = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.propagate = False


def _cmd_sandbox(args: argparse.Namespace) -> int:
    _log_to_stderr()
    summary = build_sandbox(
        args.source, args.out, registry=args.registry, tasks=args.task or ["training"], format=args.format,
        classes=[name for name in args.classes.split(",")] if args.classes is not None else None,
        ignore_other_classes=args.ignore_other_classes, val_ratio=args.val_ratio, seed=args.seed,
        annotation_format=args.annotation_format, model=args.model, pretrained=args.pretrained,
        all_stages=args.all_stages, web_ui_strings=args.web_ui_strings,
        overrides=dict(parse_override(text) for text in args.set or []), container_paths=args.container_paths,
        plugin=args.plugin, force=args.force, exif_transpose=args.exif_transpose)
    print(summary.render())
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``ymir-runner sandbox`` to the command line."""
    parser = commands.add_parser(
        "sandbox", help="build a YMIR work tree (in/, out/) from your own images, as the platform exports it",
        description="Build WORK/in exactly as the YMIR platform exports a dataset, so that "
                    "`ymir-runner run --env WORK/in/env.yaml` runs on it locally.")
    parser.add_argument("source", metavar="SOURCE",
                        help="a folder of images with VOC .xml, YOLO .txt or a COCO .json; or a COCO .json file")
    parser.add_argument("--out", required=True, metavar="WORK", help="the work folder to create (WORK/in, WORK/out)")
    parser.add_argument("--format", default="auto", choices=SOURCE_FORMATS,
                        help="annotation format of SOURCE (default: auto-detect; 'images': no annotations)")
    parser.add_argument("--classes", default=None, metavar="A,B,C",
                        help="class names in class-index order (default: from the data)")
    parser.add_argument("--ignore-other-classes", action="store_true",
                        help="drop boxes of classes not in --classes instead of refusing")
    parser.add_argument("--task", action="extend", type=_task_list, metavar="TASK[,TASK]",
                        help="training (default), mining, infer, or mining,infer (repeatable)")
    parser.add_argument("--val-ratio", type=float, default=0.2, help="share of images in val-index.tsv (0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (0)")
    parser.add_argument("--annotation-format", choices=list(ANNOTATION_FORMATS), default=None,
                        help="annotation files to write (default: the template's export_format, else det-ark)")
    parser.add_argument("--model", metavar="DIR", help="mining/infer: a previous training's /out/models folder")
    parser.add_argument("--pretrained", metavar="DIR", help="training: a previous training's /out/models folder")
    parser.add_argument("--all-stages", action="store_true", help="copy every model stage, not only the best")
    parser.add_argument("--web-ui-strings", action="store_true",
                        help="write non-numeric template values as strings and drop '' values, as the web UI does")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config.yaml value (YAML-parsed; repeatable)")
    parser.add_argument("--container-paths", action="store_true",
                        help="write /in/... and /out/... paths (for docker -v or `ymir-runner run --root WORK`)")
    parser.add_argument("--plugin", metavar="NAME", help="write `plugin: NAME` (the executor that runs the task)")
    parser.add_argument("--exif-transpose", action="store_true",
                        help="store the EXIF-rotated pixels of photos with an EXIF orientation (for boxes drawn on "
                             "the rotated image); by default assets keep their stored pixels, as the platform's")
    parser.add_argument("--force", action="store_true", help="replace a non-empty WORK/in")
    parser.set_defaults(handler=_cmd_sandbox)

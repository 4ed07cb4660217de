"""The neutral form every source reader returns, SOURCE listed once, and the train/val split a source declares.

Coordinates: a :class:`SourceBox` holds INCLUSIVE pixel corners (``x2`` is the last pixel column inside the
box, as in VOC and YMIR's own files), possibly fractional: a YOLO or COCO reader converts its format's
extent to them, and :func:`~ymir_runner.sandbox.assets.pixel_box` rounds and clips them later.

Only what lies inside SOURCE is read: its listing keeps regular files only (a FIFO, a device or a dangling link
is skipped and named: :data:`NOT_DATA`), and a reference to a file outside it (a COCO ``file_name`` of
``/etc/shadow``, a data.yaml list elsewhere) is never followed (:meth:`SourceTree.inside`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Any, Iterable, Mapping, NamedTuple

from ...errors import ConfigError
from ...protocol.dataset import SkipLog
from ...protocol.files import read_text, special_kind
from ..headers import ImageSizes

#: Source files taken as images (anything PIL may decode); the asset extension follows ASSET_EXTENSIONS.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
#: Names that put a folder or a file in a source's own split: ``train``, ``train2017``, ``val``, ``valid``, ...
SPLIT_NAMES = {"train": re.compile(r"train(ing)?\d*"), "val": re.compile(r"val(id|idation)?\d*")}
#: The skip reason of a file of SOURCE that is not read as data: a FIFO, a device, a socket, a dangling link.
NOT_DATA = "not a regular file"
#: The skip reason of a reference to a file outside SOURCE that is not followed (a split list elsewhere).
OUTSIDE = "reference outside SOURCE"
#: Skip reasons every task's summary names (mining and inference too, whose sandbox ignores the labels' problems).
FILE_REASONS = frozenset({NOT_DATA, OUTSIDE})


class SourceBox(NamedTuple):
    """A box as the source names it: class name and INCLUSIVE corners in pixels (may still be fractional)."""

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float


class SourceMask(NamedTuple):
    """An object's mask as the source holds it, not decoded: ``segmentation`` a COCO value (an RLE dict with
    string or list counts, a list of polygons, ``{}`` for a box-only object), ``bbox`` ``[x, y, w, h]`` and
    ``area`` as the source states them (None: measured on the mask), ``where`` the file and object a skip
    message names."""

    class_name: str
    segmentation: Any
    #: As the source says (checked to be 0 or 1 when the mask is used).
    iscrowd: Any = 0
    bbox: tuple[float, float, float, float] | None = None
    area: float | None = None
    where: str = ""


class SourceImage(NamedTuple):
    """One image of SOURCE: its path, its boxes (empty: none, or not annotated) and the size its annotation
    records; ``masks``: its objects' masks, in the source's order (COCO segmentations, label maps)."""

    path: str
    boxes: tuple[SourceBox, ...] = ()
    #: ``(width, height)`` as the annotation records it (VOC ``<size>``, COCO ``width``/``height``), if it does.
    size: tuple[int, int] | None = None
    masks: tuple[SourceMask, ...] = ()


@dataclasses.dataclass(frozen=True)
class SourceSplit:
    """The train/val split a dataset comes with: image path -> ``"train"`` or ``"val"`` (images in neither part
    are not listed), and where the split was found, as the summary names it."""

    subsets: Mapping[str, str]
    origin: str

    def count(self, subset: str) -> int:
        """How many images the source puts in ``subset``."""
        return sum(1 for value in self.subsets.values() if value == subset)


def source_split(train: Iterable[str], val: Iterable[str], origin: str) -> SourceSplit | None:
    """A :class:`SourceSplit` of image paths; None unless both parts hold an image. An image the source puts
    in both parts is taken as val: it is evaluated on, never trained on."""
    subsets = dict.fromkeys(train, "train")
    subsets.update(dict.fromkeys(val, "val"))
    if set(subsets.values()) != {"train", "val"}:
        return None
    return SourceSplit(subsets, origin)


def split_kind(names: Iterable[str]) -> str | None:
    """``train`` or ``val`` when exactly one of the two kinds is among ``names`` (folder names, or the words of
    a file name: ``instances_val2017`` -> ``val``); None for neither or both."""
    kinds = {kind for name in names for kind, pattern in SPLIT_NAMES.items() if pattern.fullmatch(name.lower())}
    return kinds.pop() if len(kinds) == 1 else None


@dataclasses.dataclass
class SourceData:
    """What a reader found: images in a stable order, and the class names in the source's own order."""

    images: list[SourceImage]
    class_names: list[str]
    #: YOLO labels without a names file: class names are the label indexes ("0", "1", ...).
    numeric_classes: bool = False
    #: The train/val split the source declares (None: it declares none).
    split: SourceSplit | None = None


@dataclasses.dataclass
class SourceTree:
    """The files of SOURCE, listed once (sorted absolute paths, hidden files and the work folder left out)."""

    root: str
    files: list[str]
    sizes: ImageSizes
    skips: SkipLog
    #: SOURCE itself when it is a file (a COCO json).
    given_file: str | None = None

    @property
    def images(self) -> list[str]:
        """The files with an image extension (:data:`IMAGE_EXTENSIONS`, any case)."""
        return [path for path in self.files if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS]

    def with_suffix(self, suffix: str) -> list[str]:
        """The files whose name ends with ``suffix`` (lower case), in any case."""
        return [path for path in self.files if path.lower().endswith(suffix)]

    def by_basename(self) -> dict[str, list[str]]:
        """Image file name -> the images of that name."""
        found: dict[str, list[str]] = collections.defaultdict(list)
        for path in self.images:
            found[os.path.basename(path)].append(path)
        return found

    def inside(self, path: str) -> bool:
        """Whether ``path``, as written (``..`` resolved, links not followed), lies below SOURCE's root: the only
        files the sandbox reads or copies."""
        return os.path.normpath(os.path.abspath(path)).startswith(os.path.join(self.root, ""))

    def relative(self, path: str) -> str:
        """``path`` relative to the root, with ``/`` separators (how the summary names it)."""
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def read_list(self, path: str) -> list[str] | None:
        """The non-empty lines of a list file (a split's image list), stripped; None (skipped and counted as
        ``unreadable split list``) when it cannot be read."""
        try:
            text = read_text(path)
        except OSError as error:
            self.skips.skip("unreadable split list", path, error.strerror or str(error))
            return None
        return [line.strip() for line in text.splitlines() if line.strip()]


def scan_source(source: str, *, exclude: str, skips: SkipLog, exif_transpose: bool = False) -> SourceTree:
    """List SOURCE (a folder, or a COCO json whose folder is listed) without descending into ``exclude``.

    Only regular files (and links to them) are listed: anything else is skipped as :data:`NOT_DATA`, named with
    its kind (``a FIFO``, ``a character device``, ``a dangling link``). Raises
    :class:`~ymir_runner.errors.ConfigError` when SOURCE does not exist.
    """
    source = os.path.abspath(source)
    if not os.path.exists(source):
        raise ConfigError(f"SOURCE {source} does not exist")
    given = source if os.path.isfile(source) else None
    root = os.path.dirname(source) if given else source
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(name for name in dirs if not name.startswith(".")
                         and os.path.abspath(os.path.join(folder, name)) != exclude)
        for name in sorted(names):
            path = os.path.join(folder, name)
            problem = "" if name.startswith(".") else _not_data(path)
            if problem:
                skips.skip(NOT_DATA, path, f"{problem}: not read")
            elif not name.startswith("."):
                files.append(path)
    return SourceTree(root, files, ImageSizes(exif_transpose), skips, given)


def _not_data(path: str) -> str:
    """What a listed name is when it is not read as data ('' for a regular file or a link to one)."""
    kind = special_kind(path)
    if not kind and not os.path.exists(path):
        return "a dangling link" if os.path.islink(path) else "gone"
    return kind

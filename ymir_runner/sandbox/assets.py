"""Assets and their annotation files: one stored image per content, named by its sha1 as the platform names it.

Boxes end as ``(class index, xmin, ymin, xmax, ymax)``: INCLUSIVE integer corners clipped to the image, the
corners of YMIR's det-ark and det-voc files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import shutil
from typing import Callable, Collection, Sequence

from ..errors import DatasetError
from ..protocol.annotations import annotation_suffix, annotation_text
from ..protocol.dataset import SkipLog
from ..protocol.files import open_regular
from ..protocol.images import ImageProblem, probe_image
from ..protocol.masks import MALFORMED_MASK, MaskProblem
from ..protocol.segcoco import SEG_COCO_FILE, SegCocoImage, SegCocoObject, seg_object, write_seg_coco
from .exif import write_transposed
from .headers import ImageSizes
from .sources import SourceBox, SourceImage, SourceMask
from .worktree import WorkTree

log = logging.getLogger("ymir_runner.sandbox")

#: The platform names assets ``.jpg``, ``.png``, ``.bmp`` or ``.unknown`` (protocol.md section 2).
ASSET_EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".bmp": "bmp"}


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
    #: Other files of SOURCE with the same content (stored once, as this asset).
    copies: list[str] = dataclasses.field(default_factory=list)
    #: '' or why the stored image is damaged (``truncated image``, ``corrupt image data``): it is stored as it is,
    #: as the platform imports it, and a run reads it as far as its data goes.
    damage: str = ""
    #: The source's masks (a segmentation task), in its order; :func:`assign_masks` checks them into ``masks``.
    source_masks: tuple[SourceMask, ...] = ()
    #: The objects written into coco-annotations.json, as the platform exports them (segmentation.md section 2).
    masks: list[SegCocoObject] = dataclasses.field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        """Every file of SOURCE stored as this asset: ``source`` first."""
        return [self.source, *self.copies]

    @property
    def extension(self) -> str:
        """``jpg``, ``png``, ``bmp`` or ``unknown``, from the source's file name."""
        return ASSET_EXTENSIONS.get(os.path.splitext(self.source)[1].lower(), "unknown")

    @property
    def path(self) -> str:
        """The container path, /in/assets/<last 2 hex>/<sha1>.<ext>."""
        return f"/in/assets/{self.sha1[-2:]}/{self.sha1}.{self.extension}"

    def annotation_path(self, annotation_format: str) -> str:
        """The container path of its annotation file, /in/annotations/<sha1>.<txt|xml>; seg-coco: the one
        /in/annotations/coco-annotations.json every image shares."""
        if annotation_format == "seg-coco":
            return SEG_COCO_FILE
        return f"/in/annotations/{self.sha1}{annotation_suffix(annotation_format)}"


def file_sha1(path: str) -> str:
    """The sha1 of a file's bytes, in hex; raises OSError when it cannot be read or is not a regular file."""
    digest = hashlib.sha1()
    with open_regular(path, limit=None) as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def collect_assets(images: Sequence[SourceImage], sizes: ImageSizes, *, transpose: Collection[str] = (),
                   scratch: str = "", skips: SkipLog | None = None) -> tuple[list[Asset], int]:
    """One asset per distinct content (the platform stores an image once); returns (assets, duplicates).

    Images in ``transpose`` are stored with their EXIF orientation applied (copies written under ``scratch``),
    so their content, sha1 and size are those of the turned pixels. Raises
    :class:`~ymir_runner.errors.DatasetError` for an image that cannot be read.
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
            first.copies.append(image.path)
            continue
        assets[digest] = Asset(digest, image.path, image.boxes, rotated or (header.stored if header else None),
                               content=content, source_masks=image.masks)
        if rotated and header and skips is not None:
            skips.repair("EXIF orientation applied to pixels", image.path,
                         f"orientation {header.orientation}, stored as {rotated[0]}x{rotated[1]}")
    return list(assets.values()), duplicates


def find_damage(assets: Sequence[Asset]) -> list[Asset]:
    """Set each asset's ``damage`` as ``ymir-runner run`` will find it from the stored file (its header and last
    bytes, by :func:`~ymir_runner.protocol.images.probe_image`); returns the damaged assets. Images PIL cannot
    open are left alone (they are counted apart)."""
    damaged = []
    for asset in assets:
        if asset.size is None:
            continue
        try:
            asset.damage = probe_image(asset.content or asset.source).damage
        except ImageProblem:
            continue
        if asset.damage:
            damaged.append(asset)
    return damaged


def _pixel(value: float) -> int:
    """Round half up (Python's round() sends 0.5 and 2.5 to the even neighbour, shifting boxes unevenly)."""
    return math.floor(value + 0.5)


def pixel_box(box: SourceBox, size: tuple[int, int] | None, skips: SkipLog,
              where: str) -> tuple[int, int, int, int] | None:
    """Inclusive integer corners clipped to the image.

    None, skipped and counted, for a corner that is not a finite number (``malformed box``), an inverted box
    (``degenerate box``) or one with no pixel inside the image (``box outside image``); a box that sticks out is
    clipped and counted as a repair (``box clipped to image``).
    """
    if not all(math.isfinite(value) for value in box[1:]):  # the readers refuse them; no NaN ever reaches int()
        skips.skip("malformed box", where, f"{tuple(box[1:])} is not finite numbers")
        return None
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
    """Fill each asset's ``boxes`` from its source boxes: class names through ``class_index`` (None: skipped as
    ``class not in --classes``), corners through :func:`pixel_box`."""
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


#: The skip reason of a mask on an image PIL cannot open (its stored size, which the mask must fit, is unknown).
UNKNOWN_SIZE = "mask of an unreadable image"


def assign_masks(assets: Sequence[Asset], class_index: Callable[[str], int | None], skips: SkipLog) -> None:
    """Fill each asset's ``masks`` from its source masks as the platform exports them
    (:func:`~ymir_runner.protocol.segcoco.seg_object`: list counts made a string, several polygons one merged RLE,
    a polygon's coordinates ints; the source's bbox and area kept, else the mask's). Skipped and counted, named
    with file and annotation: a class the task does not use (``class not in --classes``), and every mask the
    readers of ``ymir-runner run`` would skip: ``object without mask`` (``{}``), ``mask size differs from image``,
    ``bad polygon``, ``malformed mask`` (an ``iscrowd`` other than 0 or 1 too; :mod:`ymir_runner.protocol.masks`);
    a mask of an image PIL cannot open
    (:data:`UNKNOWN_SIZE`)."""
    for asset in assets:
        for mask in asset.source_masks:
            index = class_index(mask.class_name)
            if index is None:
                skips.skip("class not in --classes", mask.where, repr(mask.class_name))
                continue
            if asset.size is None:
                skips.skip(UNKNOWN_SIZE, mask.where, f"{asset.source}: its stored size is unknown")
                continue
            width, height = asset.size
            if mask.iscrowd not in (0, 1) or isinstance(mask.iscrowd, str):
                skips.skip(MALFORMED_MASK, mask.where, f"iscrowd {mask.iscrowd!r} is not 0 or 1")
                continue
            try:
                asset.masks.append(seg_object(index, mask.segmentation, height, width, iscrowd=int(mask.iscrowd),
                                              bbox=mask.bbox, area=mask.area))
            except MaskProblem as problem:
                skips.skip(problem.reason, mask.where, str(problem))


def write_seg_annotations(assets: Sequence[Asset], work: WorkTree, class_names: Sequence[str]) -> None:
    """``/in/annotations/coco-annotations.json``: every asset (by sha1, as the index files list them) with its
    masks, as the platform exports ``seg-coco:raw``."""
    images = [SegCocoImage(os.path.basename(asset.path), *(asset.size or (0, 0)), asset.masks)
              for asset in sorted(assets, key=lambda asset: asset.sha1)]
    write_seg_coco(work.local(SEG_COCO_FILE), images, class_names)


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
        if annotation_format is None or annotation_format == "seg-coco":  # seg-coco: one file, written apart
            continue
        text = annotation_text(annotation_format, asset.boxes, filename=asset.path, size=asset.size,
                               class_names=class_names)
        with open(work.local(asset.annotation_path(annotation_format)), "w", encoding="utf-8") as stream:
            stream.write(text)
